//! The syntax of `network!`, parsed but not yet checked.
//!
//! ```text
//! network := attribute* visibility NAME '<' (layer ','?)* '>'
//! layer    := IDENT ( '(' (argument (',' argument)*)? ')' )?
//!           | 'layer' '(' TYPE ( '->' '(' argument (',' argument)* ')' )? ')'
//!           | 'residual' '(' (layer ','?)* (IDENT '=' value ','?)* ')'
//! argument := value | IDENT '=' value
//! value    := '-'? LITERAL | IDENT | '(' value (',' value)* ')'
//! ```
//! Meaning (which layers exist, how many arguments they take, what their shapes become) is
//! `valid.rs`'s business; this module only keeps each piece with the tokens it came from, so
//! errors can point at them.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, Lit, Token, Visibility, parenthesized, token};

/// A whole `network!` invocation.
pub struct NetworkDef {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub layers: Vec<LayerDef>,
    /// The `<` ... `>` brackets, for errors about the list as a whole.
    pub brackets: TokenStream,
}

/// One layer as written: `conv(32, 3, stride = 2)`, or a type of the user's:
/// `layer(my_crate::Swish<Hwc<12, 12, 64>>)`, with `-> (24, 24, 64)` after the type when its
/// output shape differs from its input's (then `args` are those dimensions).
pub struct LayerDef {
    pub kind: Ident,
    pub args: Vec<Arg>,
    /// The parentheses, if the layer has them (`relu` has none).
    pub paren: Option<token::Paren>,
    /// The type of a `layer(...)` item.
    pub custom: Option<syn::Type>,
    /// The layers inside a `residual(...)` block (its options, `shortcut = project`, are in
    /// `args`).
    pub body: Option<Vec<LayerDef>>,
}

/// The grammar item that inserts a layer type of the user's.
pub const CUSTOM_LAYER: &str = "layer";

/// The grammar item that adds its input to what its layers make of it.
pub const RESIDUAL: &str = "residual";

/// One argument of a layer: positional (`32`) or named (`stride = 2`).
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Value,
    pub tokens: TokenStream,
}

/// An argument's value.
pub enum Value {
    /// A literal, possibly negated: `3`, `0.25`, `-5`.
    Number { negative: bool, literal: Lit },
    /// A bare word: `same`.
    Word(Ident),
    /// Values in parentheses: `(1, 0, 1, 0)`.
    Tuple(Vec<Value>),
}

impl LayerDef {
    /// The layer as a user reads it: `conv(32, 3, stride = 2)`.
    pub fn spec(&self) -> String {
        if self.paren.is_none() {
            return self.kind.to_string();
        }
        let args: Vec<String> = self.args.iter().map(Arg::text).collect();
        if let Some(body) = &self.body {
            let items: Vec<String> = body.iter().map(LayerDef::spec).collect();
            let items = [items.join(" ")].into_iter().chain(args);
            return format!("{}({})", self.kind, items.collect::<Vec<_>>().join(", "));
        }
        match &self.custom {
            Some(ty) if args.is_empty() => format!("{}({})", self.kind, type_text(ty)),
            Some(ty) => format!("{}({} -> ({}))", self.kind, type_text(ty), args.join(", ")),
            None => format!("{}({})", self.kind, args.join(", ")),
        }
    }

    /// The tokens of the whole layer, so an error spans name and arguments.
    pub fn tokens(&self) -> TokenStream {
        let mut tokens = self.kind.to_token_stream();
        if let Some(paren) = &self.paren {
            paren.surround(&mut tokens, |inner| {
                self.custom.to_tokens(inner);
                for layer in self.body.iter().flatten() {
                    inner.extend(layer.tokens());
                }
                for arg in &self.args {
                    inner.extend(arg.tokens.clone());
                }
            });
        }
        tokens
    }
}

impl Arg {
    /// The argument as written, with normalised spacing: `stride = 2`, `-5`.
    pub fn text(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} = {}", self.value_text()),
            None => self.value_text(),
        }
    }

    /// The value alone, as written: `2` in `stride = 2`.
    pub fn value_text(&self) -> String {
        self.value.text()
    }
}

impl Value {
    /// The value as written, with normalised spacing: `-5`, `same`, `(1, 0, 1, 0)`.
    pub fn text(&self) -> String {
        match self {
            Value::Number { negative, literal } => {
                let sign = if *negative { "-" } else { "" };
                format!("{sign}{}", literal.to_token_stream())
            }
            Value::Word(word) => word.to_string(),
            Value::Tuple(values) => {
                let values: Vec<String> = values.iter().map(Value::text).collect();
                format!("({})", values.join(", "))
            }
        }
    }

    /// Parses one value, appending its tokens to `tokens`.
    fn parse(input: ParseStream, tokens: &mut TokenStream) -> syn::Result<Self> {
        if input.peek(syn::Ident) {
            let word: Ident = input.parse()?;
            word.to_tokens(tokens);
            return Ok(Value::Word(word));
        }
        if input.peek(token::Paren) {
            let content;
            let paren = parenthesized!(content in input);
            let mut values = Vec::new();
            let mut inner = TokenStream::new();
            while !content.is_empty() {
                values.push(Value::parse(&content, &mut inner)?);
                if !content.is_empty() {
                    content.parse::<Token![,]>()?.to_tokens(&mut inner);
                }
            }
            paren.surround(tokens, |t| t.extend(inner));
            return Ok(Value::Tuple(values));
        }
        let negative = input.peek(Token![-]);
        if negative {
            input.parse::<Token![-]>()?.to_tokens(tokens);
        }
        let literal: Lit = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a number, a word such as `same`, or values in parentheses",
            )
        })?;
        literal.to_tokens(tokens);
        Ok(Value::Number { negative, literal })
    }
}

impl Parse for NetworkDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let name: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the network's name, e.g. `pub MnistCnn<...>`",
            )
        })?;
        let open: Token![<] = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `<` and the layer list, e.g. `MnistCnn<input(28, 28, 1) dense(10)>`",
            )
        })?;
        let mut layers = Vec::new();
        while !input.peek(Token![>]) {
            if input.is_empty() {
                return Err(syn::Error::new(
                    Span::call_site(),
                    "the layer list is not closed: expected `>` after the last layer",
                ));
            }
            if input.peek(Token![,]) {
                input.parse::<Token![,]>()?;
                continue;
            }
            layers.push(input.parse()?);
        }
        let close: Token![>] = input.parse()?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the layer list's closing `>`"));
        }
        let mut brackets = open.to_token_stream();
        close.to_tokens(&mut brackets);
        Ok(Self {
            attrs,
            vis,
            name,
            layers,
            brackets,
        })
    }
}

impl Parse for LayerDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let kind: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a layer, e.g. `conv(32, 3)`, `relu` or `dense(10)`",
            )
        })?;
        if !input.peek(token::Paren) {
            return Ok(Self {
                kind,
                args: Vec::new(),
                paren: None,
                custom: None,
                body: None,
            });
        }
        let content;
        let paren = parenthesized!(content in input);
        if kind == CUSTOM_LAYER {
            return parse_custom(kind, paren, &content);
        }
        if kind == RESIDUAL {
            return parse_residual(kind, paren, &content);
        }
        let mut args = Vec::new();
        while !content.is_empty() {
            args.push(content.parse()?);
            if !content.is_empty() {
                content.parse::<Token![,]>()?;
            }
        }
        Ok(Self {
            kind,
            args,
            paren: Some(paren),
            custom: None,
            body: None,
        })
    }
}

/// The inside of `residual(...)`: layers, then options such as `shortcut = project`.
fn parse_residual(kind: Ident, paren: token::Paren, content: ParseStream) -> syn::Result<LayerDef> {
    let mut body = Vec::new();
    let mut args = Vec::new();
    while !content.is_empty() {
        if content.peek(Token![,]) {
            content.parse::<Token![,]>()?;
        } else if content.peek(syn::Ident) && content.peek2(Token![=]) {
            args.push(content.parse()?);
        } else if args.is_empty() {
            body.push(content.parse()?);
        } else {
            return Err(content.error(
                "a residual block's layers come before its options: `residual(dense(64) relu, \
                 shortcut = project)`",
            ));
        }
    }
    Ok(LayerDef {
        kind,
        args,
        paren: Some(paren),
        custom: None,
        body: Some(body),
    })
}

/// The inside of `layer(TYPE)` or `layer(TYPE -> (dims))`.
fn parse_custom(kind: Ident, paren: token::Paren, content: ParseStream) -> syn::Result<LayerDef> {
    let ty: syn::Type = content.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a layer type, e.g. `layer(my_crate::Swish<Hwc<12, 12, 64>>)`",
        )
    })?;
    let mut args = Vec::new();
    if content.peek(Token![->]) {
        content.parse::<Token![->]>()?;
        let dims;
        parenthesized!(dims in content);
        while !dims.is_empty() {
            args.push(dims.parse()?);
            if !dims.is_empty() {
                dims.parse::<Token![,]>()?;
            }
        }
    }
    if !content.is_empty() {
        return Err(content.error(
            "expected `)`, or `-> (h, w, c)` when the layer's output shape differs from its input's",
        ));
    }
    Ok(LayerDef {
        kind,
        args,
        paren: Some(paren),
        custom: Some(ty),
        body: None,
    })
}

/// A type as a user would write it: `my::Swish<Hwc<12, 12, 64>>`.
fn type_text(ty: &syn::Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" < ", "<")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut tokens = TokenStream::new();
        let name = if input.peek(syn::Ident) && input.peek2(Token![=]) {
            let name: Ident = input.parse()?;
            let eq: Token![=] = input.parse()?;
            name.to_tokens(&mut tokens);
            eq.to_tokens(&mut tokens);
            Some(name)
        } else {
            None
        };
        let value = Value::parse(input, &mut tokens)?;
        if !input.is_empty() && !input.peek(Token![,]) {
            let unexpected: TokenTree = input.parse()?;
            return Err(syn::Error::new_spanned(
                unexpected,
                "expected `,` between a layer's arguments",
            ));
        }
        Ok(Self {
            name,
            value,
            tokens,
        })
    }
}
