//! Meaning and shapes: turns the parsed layer list into layers with checked arguments and the
//! shape every layer receives and produces, or an error on the layer (or argument) at fault that
//! says what shape reached it and why that cannot work.

use std::fmt;

use constnet_catalogue::names::{self, Numbering};
use constnet_catalogue::{
    ArgProblem, ArgRef, ArgType, ArgValue, Entry, LayerKind, MAX_VALUES, Padding, Pads, Shape,
    ShapeProblem,
};
use quote::ToTokens;
use syn::{Attribute, Ident, Lit, Visibility};

use crate::ast::{Arg, LayerDef, NetworkDef, RESIDUAL, Value};

/// Refuses a layer (or the input) whose output sample, or whose parameter count, holds more
/// than [`MAX_VALUES`] values, with an error spanned on it.
fn check_size(def: &LayerDef, output: Shape, params: Option<usize>) -> syn::Result<()> {
    let too_many = |what: String| {
        error(
            def.tokens(),
            format!(
                "`{}` is too large: {what}, and constnet's tensors hold at most {MAX_VALUES} \
                 values (2^32 - 1)",
                def.spec()
            ),
        )
    };
    match output.checked_len() {
        Some(len) if len <= MAX_VALUES => {}
        Some(len) => return Err(too_many(format!("its output {output} holds {len} values"))),
        None => {
            return Err(too_many(format!(
                "its output {output} holds more values than a usize can count"
            )));
        }
    }
    match params {
        Some(count) if count > MAX_VALUES => Err(too_many(format!("it has {count} parameters"))),
        _ => Ok(()),
    }
}

/// A checked layer with its shapes.
pub struct Layer {
    /// What it computes, as the catalogue describes it.
    pub kind: LayerKind,
    /// The type of a layer of the user's (`layer(T)`, kind [`LayerKind::Custom`]).
    pub custom: Option<Box<syn::Type>>,
    /// Field name in the generated struct: `conv1`, `relu2`, `res1_conv1`, ...
    pub field: Ident,
    /// The name of the layer and the prefix of its parameters' names: `conv1`, `res1.conv1`.
    pub name: String,
    /// The layer as written: `conv(32, 3)`.
    pub spec: String,
    pub input: Shape,
    pub output: Shape,
}

/// One item of a layer list: a layer, or a residual block.
pub enum Step {
    /// An index into [`Network::layers`].
    Layer(usize),
    Residual(Block),
}

impl Step {
    /// The shape the item produces.
    pub fn output(&self, layers: &[Layer]) -> Shape {
        match self {
            Step::Layer(index) => layers[*index].output,
            Step::Residual(block) => block.output,
        }
    }
}

/// A checked `residual(...)` block: `x + f(x)`, or `project(x) + f(x)` with a shortcut.
pub struct Block {
    /// `res1`, or `res1.res1` for a block in a block: the prefix of its layers' names.
    pub name: String,
    /// The workspace field of the addition: `res1`, `res1_res1`.
    pub field: Ident,
    /// `f`, the layers inside.
    pub body: Vec<Step>,
    /// The projection of `x` (an index into [`Network::layers`], named `res1.shortcut`).
    pub shortcut: Option<usize>,
    pub input: Shape,
    pub output: Shape,
}

/// A checked network.
pub struct Network {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub input: Shape,
    pub output: Shape,
    /// Every layer, blocks' layers and shortcuts included, in the order they run (a block's
    /// shortcut after its layers).
    pub layers: Vec<Layer>,
    /// The layer list as written, blocks nested.
    pub steps: Vec<Step>,
}

impl Network {
    /// The network's head: a final softmax (the only place it may be), or a final sigmoid
    /// after at least one other item. Training stops before it, at the logits, and the loss
    /// fuses it (softmax with cross-entropy, sigmoid with binary cross-entropy).
    pub fn head(&self) -> Option<&Layer> {
        let Some(Step::Layer(last)) = self.steps.last() else {
            return None;
        };
        let last = &self.layers[*last];
        match last.kind {
            LayerKind::Softmax => Some(last),
            LayerKind::Sigmoid if self.steps.len() > 1 => Some(last),
            _ => None,
        }
    }
}

/// The items of the grammar besides the catalogue's layer kinds, with their signatures.
const STRUCTURE: &[(&str, &str)] = &[
    ("input", "input(h, w, c) or input(n)"),
    (
        "residual",
        "residual(layers...) with optional shortcut = project",
    ),
    ("layer", "layer(Type) or layer(Type -> (h, w, c))"),
];

/// Every item the grammar knows, with its signature, for messages and did-you-mean.
fn grammar() -> impl Iterator<Item = (&'static str, &'static str)> {
    let kinds = constnet_catalogue::ENTRIES
        .iter()
        .map(|e| (e.name, e.usage));
    STRUCTURE[..1]
        .iter()
        .copied()
        .chain(kinds)
        .chain(STRUCTURE[1..].iter().copied())
}

fn error(tokens: impl ToTokens, message: impl fmt::Display) -> syn::Error {
    syn::Error::new_spanned(tokens, message)
}

/// Every error found in one layer list, reported together, each spanned on its own layer.
#[derive(Default)]
struct Errors {
    first: Option<syn::Error>,
    count: usize,
}

impl Errors {
    fn push(&mut self, error: syn::Error) {
        self.count += 1;
        match &mut self.first {
            Some(first) => first.combine(error),
            None => self.first = Some(error),
        }
    }

    /// The value of `result`, or `None` with its error kept.
    fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `value` if nothing went wrong, else every error.
    fn finish<T>(self, value: impl FnOnce() -> T) -> syn::Result<T> {
        match self.first {
            Some(errors) => Err(errors),
            None => Ok(value()),
        }
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|&(similarity, _)| similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// A layer's arguments, split into positional and named, checked against its signature.
struct Args<'a> {
    layer: &'a LayerDef,
    spec: String,
    positional: Vec<&'a Arg>,
}

impl<'a> Args<'a> {
    /// Checks that the layer has exactly the positional arguments `names` and only the named
    /// options `options` (each at most once).
    fn new(
        layer: &'a LayerDef,
        names: &[&str],
        options: &[&str],
        example: &str,
    ) -> syn::Result<Self> {
        let spec = layer.spec();
        let kind = layer.kind.to_string();
        let positional: Vec<&Arg> = layer.args.iter().filter(|a| a.name.is_none()).collect();
        if names.is_empty() && layer.paren.is_some() && options.is_empty() {
            return Err(error(
                layer.tokens(),
                format!("`{kind}` takes no arguments: write `{kind}`"),
            ));
        }
        if positional.len() < names.len() {
            let missing = names[positional.len()..].join(" and ");
            return Err(error(
                layer.tokens(),
                format!("`{spec}` is missing its {missing}: write e.g. `{example}`"),
            ));
        }
        if let Some(extra) = positional.get(names.len()) {
            let takes = match names.len() {
                0 => "no positional arguments".to_string(),
                1 => format!("one argument ({})", names[0]),
                n => format!("{n} arguments ({})", names.join(", ")),
            };
            return Err(error(
                &extra.tokens,
                format!("`{kind}` takes {takes}, e.g. `{example}`"),
            ));
        }
        let mut seen: Vec<String> = Vec::new();
        for arg in layer.args.iter().filter(|a| a.name.is_some()) {
            let name = arg.name.as_ref().expect("named").to_string();
            if !options.contains(&name.as_str()) {
                let hint = match did_you_mean(&name, options.iter().copied()) {
                    Some(option) => format!("; did you mean `{option}`?"),
                    None if options.is_empty() => String::new(),
                    None => format!("; its options are {}", list(options)),
                };
                return Err(error(
                    &arg.tokens,
                    format!("`{kind}` has no option `{name}`{hint}"),
                ));
            }
            if seen.contains(&name) {
                return Err(error(
                    &arg.tokens,
                    format!("`{name}` is given twice in `{spec}`"),
                ));
            }
            seen.push(name);
        }
        Ok(Self {
            layer,
            spec,
            positional,
        })
    }

    /// The named option `name`, if given.
    fn option(&self, name: &str) -> Option<&'a Arg> {
        self.layer
            .args
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n == name))
    }

    /// A whole number of at least 1.
    fn positive_int(&self, arg: &Arg, what: &str) -> syn::Result<usize> {
        let text = arg.text();
        let not = |why: &str| {
            error(
                &arg.tokens,
                format!("`{}`: {what} must be {why}, not `{text}`", self.spec),
            )
        };
        match &arg.value {
            Value::Number {
                negative: false,
                literal: Lit::Int(int),
            } => {
                let value: usize = int
                    .base10_parse()
                    .map_err(|_| not("a whole number that fits in usize"))?;
                if value == 0 {
                    Err(error(
                        &arg.tokens,
                        format!("`{}`: {what} must be at least 1", self.spec),
                    ))
                } else {
                    Ok(value)
                }
            }
            Value::Number { negative: true, .. } => Err(not("a positive whole number")),
            Value::Number {
                literal: Lit::Float(_),
                ..
            } => Err(not("a whole number")),
            _ => Err(not("a positive whole number")),
        }
    }

    /// A number (integer or float literal), possibly negative.
    fn number(&self, arg: &Arg, what: &str) -> syn::Result<f64> {
        match &arg.value {
            Value::Number { negative, literal } => {
                let value: f64 = match literal {
                    Lit::Int(int) => int.base10_parse()?,
                    Lit::Float(float) => float.base10_parse()?,
                    _ => {
                        return Err(error(
                            &arg.tokens,
                            format!("`{}`: {what} must be a number", self.spec),
                        ));
                    }
                };
                Ok(if *negative { -value } else { value })
            }
            Value::Word(word) => Err(error(
                word,
                format!("`{}`: {what} must be a number, not `{word}`", self.spec),
            )),
            Value::Tuple(_) => Err(error(
                &arg.tokens,
                format!(
                    "`{}`: {what} must be a number, not `{}`",
                    self.spec,
                    arg.value_text()
                ),
            )),
        }
    }

    /// A padding: `same`, `valid`, `p` or `(top, bottom, left, right)`, each pad a whole number.
    fn padding(&self, arg: &Arg) -> syn::Result<Padding> {
        let refused = || {
            error(
                &arg.tokens,
                format!(
                    "`{}`: the padding is `same`, `valid`, a whole number of rows and columns on \
                     every side, or `(top, bottom, left, right)`, not `{}`",
                    self.spec,
                    arg.value_text()
                ),
            )
        };
        let pad = |value: &Value| match value {
            Value::Number {
                negative: false,
                literal: Lit::Int(int),
            } => int.base10_parse::<usize>().map_err(|_| refused()),
            _ => Err(refused()),
        };
        match &arg.value {
            Value::Word(word) if word == "same" => Ok(Padding::Same),
            Value::Word(word) if word == "valid" => Ok(Padding::Valid),
            Value::Tuple(values) => match values.as_slice() {
                [top, bottom, left, right] => Ok(Padding::Explicit(Pads {
                    top: pad(top)?,
                    bottom: pad(bottom)?,
                    left: pad(left)?,
                    right: pad(right)?,
                })),
                _ => Err(refused()),
            },
            value => Ok(Padding::uniform(pad(value)?)),
        }
    }

    /// One of `words`, for the argument `name`.
    fn word(&self, arg: &Arg, name: &str, words: &[&'static str]) -> syn::Result<&'static str> {
        let written = arg.value_text();
        match words.iter().find(|word| **word == written) {
            Some(word) => Ok(word),
            None => {
                let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                Err(error(
                    &arg.tokens,
                    format!(
                        "`{}`: {name} is {}, not `{written}`",
                        self.spec,
                        words.join(" or ")
                    ),
                ))
            }
        }
    }

    /// `arg` decoded as the catalogue's type for the argument `name`.
    fn decode(&self, arg: &Arg, name: &str, ty: ArgType) -> syn::Result<ArgValue> {
        let what = format!("the {name}");
        Ok(match ty {
            ArgType::PositiveInt => ArgValue::Int(self.positive_int(arg, &what)?),
            ArgType::Number => ArgValue::Number(self.number(arg, &what)?),
            ArgType::Word(words) => ArgValue::Word(self.word(arg, name, words)?),
            ArgType::Padding => ArgValue::Padding(self.padding(arg)?),
        })
    }

    /// The layer's arguments decoded as `entry` declares them.
    fn decoded(&self, entry: &Entry) -> syn::Result<constnet_catalogue::Args> {
        let positional = entry.positional.iter().zip(&self.positional);
        let options = entry.options.iter().map(|param| {
            self.option(param.name)
                .map(|arg| self.decode(arg, param.name, param.ty))
                .transpose()
        });
        Ok(constnet_catalogue::Args {
            positional: positional
                .map(|(param, arg)| self.decode(arg, param.name, param.ty))
                .collect::<syn::Result<_>>()?,
            options: options.collect::<syn::Result<_>>()?,
        })
    }

    /// The written argument `problem` is about, with its message.
    fn refused(&self, entry: &Entry, problem: ArgProblem) -> syn::Error {
        let arg = match problem.arg {
            ArgRef::Positional(index) => self.positional[index],
            ArgRef::Option(index) => self.option(entry.options[index].name).expect("written"),
        };
        error(&arg.tokens, format!("`{}`: {}", self.spec, problem.message))
    }
}

/// `a`, `b` and `c`.
fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// Where a layer's input comes from, for messages: "the output of `maxpool(2)`", given the
/// item before it as written.
fn source(previous: Option<&str>) -> String {
    match previous {
        Some(spec) => format!("the output of `{spec}`"),
        None => "the network's input".into(),
    }
}

/// Checks the whole network.
pub fn validate(def: NetworkDef) -> syn::Result<Network> {
    let NetworkDef {
        attrs,
        vis,
        name,
        layers: defs,
        brackets,
    } = def;
    let Some((first, rest)) = defs.split_first() else {
        return Err(error(
            brackets,
            "the network has no layers: write its input shape, e.g. `input(28, 28, 1)`, then at \
             least one layer",
        ));
    };
    if first.kind != "input" {
        return Err(error(
            first.tokens(),
            format!(
                "a network starts with its input shape, `input(h, w, c)` or `input(n)`, but this \
                 one starts with `{}`",
                first.spec()
            ),
        ));
    }
    let mut errors = Errors::default();
    let input = errors.keep(input_shape(first).and_then(|input| {
        check_size(first, input, None)?;
        Ok(input)
    }));
    if rest.is_empty() {
        errors.push(error(
            first.tokens(),
            format!(
                "the network has only an input: add at least one layer after `{}`",
                first.spec()
            ),
        ));
        return errors.finish(|| unreachable!("an error was kept"));
    }
    let mut layers = Vec::new();
    let (steps, output) = Scope::top().check_list(rest, input, None, &mut layers, &mut errors);
    if let [Step::Layer(only)] = steps[..]
        && matches!(layers[only].kind, LayerKind::Softmax)
    {
        errors.push(error(
            rest[0].tokens(),
            "`softmax` turns logits into probabilities: it needs a layer before it that makes the \
             logits, e.g. `dense(10) softmax`",
        ));
    }
    errors.finish(|| Network {
        attrs,
        vis,
        name,
        input: input.expect("only an error leaves a shape unknown"),
        output: output.expect("only an error leaves a shape unknown"),
        layers,
        steps,
    })
}

/// Where a layer list sits: the network itself, or the inside of a residual block, whose
/// layers' names it prefixes (`res1.conv1`, field `res1_conv1`).
struct Scope {
    /// The names of the list's items: `conv2`, or `res1.conv2` in a block.
    names: Numbering,
    /// The block as written, inside one.
    block: Option<String>,
}

impl Scope {
    fn top() -> Self {
        Scope {
            names: Numbering::top(),
            block: None,
        }
    }

    /// Checks `defs` fed `input` (the output of the item written `previous`, or the network's
    /// input), appending their layers to `layers` and keeping every error in `errors`; returns
    /// the list's items and the shape it produces. After an error the shape is unknown (`None`):
    /// later layers still have their arguments checked, and shapes again from the first layer
    /// whose output does not depend on its input (`dense(n)`, `layer(T -> (...))`).
    fn check_list(
        &mut self,
        defs: &[LayerDef],
        input: Option<Shape>,
        mut previous: Option<String>,
        layers: &mut Vec<Layer>,
        errors: &mut Errors,
    ) -> (Vec<Step>, Option<Shape>) {
        let mut steps = Vec::new();
        let mut received = input;
        for (index, def) in defs.iter().enumerate() {
            let checked = if def.kind == RESIDUAL {
                let block = self.check_block(def, received, previous.take(), layers, errors);
                block.map(Step::Residual).ok_or(None)
            } else {
                errors.keep(self.check_softmax_place(def, defs.get(index + 1)));
                let layer = self.check_layer(def, received, previous.as_deref(), errors);
                layer.map(|layer| {
                    layers.push(layer);
                    Step::Layer(layers.len() - 1)
                })
            };
            received = match checked {
                Ok(step) => {
                    let output = step.output(layers);
                    steps.push(step);
                    Some(output)
                }
                Err(resumed) => resumed,
            };
            previous = Some(def.spec());
        }
        (steps, received)
    }

    /// Checks one layer fed `received` (unknown after an error), keeping its errors in `errors`.
    /// Without a layer, returns the shape it produces whatever its input, if it has one.
    fn check_layer(
        &mut self,
        def: &LayerDef,
        received: Option<Shape>,
        previous: Option<&str>,
        errors: &mut Errors,
    ) -> Result<Layer, Option<Shape>> {
        let meaning = errors.keep(meaning(def)).ok_or(None)?;
        let Some(received) = received else {
            return Err(meaning.output_whatever_input());
        };
        let output = meaning.output(def, received, previous).and_then(|output| {
            let params = meaning.kind.param_count(received).unwrap_or(usize::MAX);
            check_size(def, output, Some(params))?;
            Ok(output)
        });
        let output = errors
            .keep(output)
            .ok_or_else(|| meaning.output_whatever_input())?;
        let name = self.names.next(&def.kind.to_string());
        Ok(Layer {
            kind: meaning.kind,
            custom: meaning.custom,
            field: field_ident(&name, def.kind.span()),
            name,
            spec: def.spec(),
            input: received,
            output,
        })
    }

    /// Softmax may only end the network: training fuses it with the cross-entropy loss.
    fn check_softmax_place(&self, def: &LayerDef, next: Option<&LayerDef>) -> syn::Result<()> {
        if def.kind != "softmax" {
            return Ok(());
        }
        let message = match (&self.block, next) {
            (Some(block), _) => format!(
                "`softmax` must be the network's last layer (training fuses it with the \
                 cross-entropy loss), not inside `{block}`"
            ),
            (None, Some(next)) => format!(
                "`softmax` must be the last layer (training fuses it with the cross-entropy \
                 loss), but it is followed by `{}`",
                next.spec()
            ),
            (None, None) => return Ok(()),
        };
        Err(error(def.tokens(), message))
    }

    /// Checks a `residual(...)` block fed `received` (the output of `previous`; unknown after
    /// an error): its layers, in a scope of their own, and its shortcut, which a block must
    /// have exactly when its layers change the shape. Keeps its errors in `errors`.
    fn check_block(
        &mut self,
        def: &LayerDef,
        received: Option<Shape>,
        previous: Option<String>,
        layers: &mut Vec<Layer>,
        errors: &mut Errors,
    ) -> Option<Block> {
        let example = "residual(conv(32, 3, padding = same) relu)";
        let spec = def.spec();
        let Some(body_defs) = def.body.as_ref().filter(|body| !body.is_empty()) else {
            errors.push(error(
                def.tokens(),
                format!(
                    "`{spec}` has no layers: a residual block adds its input to what its layers \
                     make of it, e.g. `{example}`"
                ),
            ));
            return None;
        };
        let errors_before = errors.count;
        let project = errors.keep(shortcut_option(def, example));
        let name = self.names.next(names::BLOCK);
        let mut inner = Scope {
            names: Numbering::inside(&name),
            block: Some(spec.clone()),
        };
        let (body, output) = inner.check_list(body_defs, received, previous, layers, errors);
        let (Some(project), Some(input), Some(output)) = (project, received, output) else {
            return None;
        };
        if errors.count > errors_before {
            return None;
        }
        let shortcut = match (project, output == input) {
            (Some(arg), true) => Err(error(
                &arg.tokens,
                format!(
                    "`{spec}` needs no shortcut: its layers keep its input's shape ({input}), so \
                     the input is added as it is; remove `shortcut = project`"
                ),
            )),
            (None, false) => Err(shape_changed(&spec, def, input, output)),
            (Some(_), false) => self
                .shortcut_layer(def, &name, input, output, layers)
                .map(Some),
            (None, true) => Ok(None),
        };
        Some(Block {
            field: field_ident(&name, def.kind.span()),
            name,
            body,
            shortcut: errors.keep(shortcut)?,
            input,
            output,
        })
    }

    /// The projection of a block `name` from `input` onto `output`, appended to `layers`.
    fn shortcut_layer(
        &self,
        def: &LayerDef,
        block: &str,
        input: Shape,
        output: Shape,
        layers: &mut Vec<Layer>,
    ) -> syn::Result<usize> {
        let Some(kind) = projection(input, output) else {
            return Err(error(
                def.tokens(),
                format!(
                    "`{}`: no 1x1 convolution or dense layer projects its input ({input}) onto \
                     its layers' output ({output}); keep the shape inside the block",
                    def.spec()
                ),
            ));
        };
        let params = kind.param_count(input).unwrap_or(usize::MAX);
        check_size(def, output, Some(params))?;
        let name = names::shortcut(block);
        layers.push(Layer {
            spec: kind_spec(&kind),
            kind,
            custom: None,
            field: field_ident(&name, def.kind.span()),
            name,
            input,
            output,
        });
        Ok(layers.len() - 1)
    }
}

/// The layer that projects `input` onto `output` for a residual shortcut: a 1x1 convolution
/// whose stride maps the input's rows and columns onto the output's, or a dense layer between
/// vectors.
fn projection(input: Shape, output: Shape) -> Option<LayerKind> {
    match (input, output) {
        (Shape::Image(h, w, _), Shape::Image(out_h, out_w, filters)) => (1..=h.max(w))
            .find(|stride| (h - 1) / stride + 1 == out_h && (w - 1) / stride + 1 == out_w)
            .map(|stride| LayerKind::Conv {
                filters,
                kernel: 1,
                stride,
                padding: Padding::Valid,
            }),
        (Shape::Flat(_), Shape::Flat(units)) => Some(LayerKind::Dense { units }),
        _ => None,
    }
}

/// How the grammar writes a projection: `conv(64, 1, stride = 2)`, `dense(32)`.
fn kind_spec(kind: &LayerKind) -> String {
    match kind {
        LayerKind::Conv {
            filters, stride, ..
        } if *stride > 1 => format!("conv({filters}, 1, stride = {stride})"),
        LayerKind::Conv { filters, .. } => format!("conv({filters}, 1)"),
        LayerKind::Dense { units } => format!("dense({units})"),
        _ => unreachable!("projections are 1x1 convolutions or dense layers"),
    }
}

/// A block's `shortcut = project` option: `Some` with the argument if given.
fn shortcut_option<'a>(def: &'a LayerDef, example: &str) -> syn::Result<Option<&'a Arg>> {
    let args = Args::new(def, &[], &["shortcut"], example)?;
    match args.option("shortcut") {
        None => Ok(None),
        Some(arg) if matches!(&arg.value, Value::Word(word) if word == "project") => Ok(Some(arg)),
        Some(arg) => Err(error(
            &arg.tokens,
            format!(
                "`{}`: the shortcut is `project` (a 1x1 convolution, or a dense layer for \
                 vectors), not `{}`",
                def.spec(),
                arg.value_text()
            ),
        )),
    }
}

/// The error of a block without a shortcut whose layers turn `input` into `output`.
fn shape_changed(spec: &str, def: &LayerDef, input: Shape, output: Shape) -> syn::Error {
    let hint = match projection(input, output) {
        Some(kind) => format!(
            "add `shortcut = project` to learn the projection (`{}`)",
            kind_spec(&kind)
        ),
        None => "no 1x1 convolution or dense layer projects one onto the other, so keep the \
                 shape inside the block"
            .to_string(),
    };
    error(
        def.tokens(),
        format!(
            "`{spec}` changes the shape: its layers turn {input} into {output}, so its input \
             cannot be added to their output; {hint}"
        ),
    )
}

/// The struct field of the item named `name`: `res1_conv1` for `res1.conv1`.
fn field_ident(name: &str, span: proc_macro2::Span) -> Ident {
    Ident::new(&name.replace('.', "_"), span)
}

fn input_shape(def: &LayerDef) -> syn::Result<Shape> {
    let problem = "the input is `input(height, width, channels)` for images or `input(size)` for \
                   flat vectors";
    dims_shape(def, ["input(784)", "input(28, 28, 1)"], problem)
}

/// The output shape written after a custom layer's type, `-> (24, 24, 64)`; without one, the
/// layer keeps its input's shape.
fn custom_output(def: &LayerDef) -> syn::Result<Option<Shape>> {
    if def.args.is_empty() {
        return Ok(None);
    }
    let problem = "the output shape after `->` is `(height, width, channels)` or `(size)`";
    let examples = ["layer(T -> (10))", "layer(T -> (24, 24, 64))"];
    dims_shape(def, examples, problem).map(Some)
}

/// A shape from a layer's arguments: one size, or height, width and channels.
fn dims_shape(def: &LayerDef, [flat, image]: [&str; 2], problem: &str) -> syn::Result<Shape> {
    let dims = def.args.len();
    let args = match dims {
        1 => Args::new(def, &["size"], &[], flat)?,
        3 => Args::new(def, &["height", "width", "channels"], &[], image)?,
        _ => return Err(error(def.tokens(), format!("`{}`: {problem}", def.spec()))),
    };
    let sizes = args
        .positional
        .iter()
        .zip(["the height", "the width", "the number of channels"])
        .map(|(arg, what)| args.positive_int(arg, if dims == 1 { "the size" } else { what }))
        .collect::<syn::Result<Vec<usize>>>()?;
    Ok(match sizes[..] {
        [n] => Shape::Flat(n),
        [h, w, c] => Shape::Image(h, w, c),
        _ => unreachable!("one or three dimensions were checked above"),
    })
}

/// What a layer's arguments say it is, before its input shape is known.
struct Meaning {
    kind: LayerKind,
    /// The user's type of `layer(T)` (kind [`LayerKind::Custom`]).
    custom: Option<Box<syn::Type>>,
    /// The output shape written after a user's type, `-> (h, w, c)`.
    declared: Option<Shape>,
}

impl Meaning {
    /// The shape the layer produces from `received` (the output of `previous`), or the error
    /// saying why it cannot take it.
    fn output(
        &self,
        def: &LayerDef,
        received: Shape,
        previous: Option<&str>,
    ) -> syn::Result<Shape> {
        if self.custom.is_some() {
            return Ok(self.declared.unwrap_or(received));
        }
        self.kind
            .output_shape(received)
            .map_err(|problem| shape_error(def, problem, received, previous))
    }

    /// The shape the layer produces whatever its input, if its arguments fix it.
    fn output_whatever_input(&self) -> Option<Shape> {
        match self.kind {
            LayerKind::Dense { units } => Some(Shape::Flat(units)),
            _ => self.declared,
        }
    }
}

/// Checks one layer's arguments against its catalogue entry (or a `layer(T)`'s form).
fn meaning(def: &LayerDef) -> syn::Result<Meaning> {
    let kind = def.kind.to_string();
    let entry = match kind.as_str() {
        "layer" => return custom_layer(def),
        "input" => {
            return Err(error(
                def.tokens(),
                format!(
                    "`{}`: a network has one input, its first layer; remove this one",
                    def.spec()
                ),
            ));
        }
        name => Entry::named(name).ok_or_else(|| unknown_layer(def, name))?,
    };
    let names: Vec<&str> = entry.positional.iter().map(|param| param.name).collect();
    let options: Vec<&str> = entry.options.iter().map(|param| param.name).collect();
    let args = Args::new(def, &names, &options, entry.example)?;
    let kind = (entry.build)(&args.decoded(entry)?).map_err(|p| args.refused(entry, p))?;
    Ok(Meaning {
        kind,
        custom: None,
        declared: None,
    })
}

/// A `layer(T)` item: the user's type, with the output shape written after it.
fn custom_layer(def: &LayerDef) -> syn::Result<Meaning> {
    let Some(ty) = &def.custom else {
        return Err(error(
            def.tokens(),
            "`layer` inserts a layer type of yours: `layer(my_crate::Swish<Hwc<12, 12, 64>>)`, \
             with `-> (h, w, c)` after the type if its output shape differs",
        ));
    };
    Ok(Meaning {
        kind: LayerKind::Custom,
        custom: Some(Box::new(ty.clone())),
        declared: custom_output(def)?,
    })
}

/// The error of a layer the grammar does not know, with the likeliest one meant.
fn unknown_layer(def: &LayerDef, unknown: &str) -> syn::Error {
    let hint = match did_you_mean(unknown, grammar().map(|(name, _)| name)) {
        Some(name) => match grammar().find(|(n, _)| *n == name).expect("known").1 {
            signature if signature == name => format!("did you mean `{name}`?"),
            signature => format!("did you mean `{name}` ({signature})?"),
        },
        None => format!(
            "the layers are {}",
            list(&grammar().map(|(name, _)| name).collect::<Vec<_>>())
        ),
    };
    error(&def.kind, format!("unknown layer `{unknown}`: {hint}"))
}

/// The error of a layer whose input shape does not suit it, saying what reached it from where.
fn shape_error(
    def: &LayerDef,
    problem: ShapeProblem,
    received: Shape,
    previous: Option<&str>,
) -> syn::Error {
    let message = problem.message(&def.spec(), received, &source(previous));
    error(def.tokens(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of every error `validate` reports for `layers`, in order.
    fn errors(layers: proc_macro2::TokenStream) -> Vec<String> {
        let def: NetworkDef = syn::parse2(quote::quote!(Net<#layers>)).expect("it parses");
        match validate(def) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_valid_list_has_no_error() {
        assert!(errors(quote::quote!(input(8, 8, 1) conv(4, 3) flatten dense(2))).is_empty());
    }

    /// An error inside a block is reported, the block's own checks wait for known shapes, and
    /// the list goes on: the dense layer after it fixes the shape again.
    #[test]
    fn errors_inside_and_after_a_block_are_all_reported() {
        let found = errors(quote::quote!(
            input(8, 8, 4) residual(conv(4, 3, padding = same) dense(3) relu) dense(0)
            residual(conv(8, 3, padding = same), shortcut = sideways) dense(5) conv(2, 1)
        ));
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with("`dense(3)` needs a flat input"),
            "{}",
            found[0]
        );
        assert!(found[1].contains("dense(0)"), "{}", found[1]);
        assert!(
            found[2].contains("the shortcut is `project`"),
            "{}",
            found[2]
        );
        assert!(
            found[3].contains("but receives a flat vector of 5"),
            "{}",
            found[3]
        );
    }

    /// Unknown shapes stop shape checks but not argument checks, and a layer whose output is
    /// written (`layer(T -> (...))`) starts them again.
    #[test]
    fn a_written_output_shape_resumes_shape_checks() {
        let found = errors(quote::quote!(
            input(10) conv(4, 3) maxpool(0) layer(Mine -> (6, 6, 2)) conv(3, 7) sofmax
        ));
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with("`conv(4, 3)` needs an image"),
            "{}",
            found[0]
        );
        assert!(found[1].contains("maxpool(0)"), "{}", found[1]);
        assert!(
            found[2].contains("at least 7x7, but receives 6x6x2"),
            "{}",
            found[2]
        );
        assert!(found[3].contains("unknown layer `sofmax`"), "{}", found[3]);
    }
}
