//! Meaning and shapes: turns the parsed layer list into layers with checked arguments and the
//! shape every layer receives and produces, or an error on the layer (or argument) at fault that
//! says what shape reached it and why that cannot work.

use std::fmt;

use quote::ToTokens;
use syn::{Attribute, Ident, Lit, Visibility};

use crate::ast::{Arg, LayerDef, NetworkDef, RESIDUAL, Value};

/// A sample shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A vector of features.
    Flat(usize),
    /// Rows, columns, channels.
    Image(usize, usize, usize),
}

/// The most values one sample of a layer's output, or one parameter tensor, may hold: 2^32 − 1
/// (16 GiB of `f32`). Sizes are checked against it before anything multiplies them, so no
/// arithmetic in the macro, or in the constants it generates, can overflow.
const MAX_VALUES: usize = u32::MAX as usize;

impl Shape {
    /// The values in one sample; only called on shapes [`check_size`] accepted.
    pub fn len(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Image(h, w, c) => h * w * c,
        }
    }

    /// The values in one sample, if they fit in `usize`.
    fn checked_len(self) -> Option<usize> {
        match self {
            Shape::Flat(n) => Some(n),
            Shape::Image(h, w, c) => h.checked_mul(w)?.checked_mul(c),
        }
    }
}

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

/// The parameter count of a checked layer fed `input` (`None` if it overflows `usize`).
fn param_count(kind: &Kind, input: Shape) -> Option<usize> {
    match (kind, input) {
        (
            Kind::Conv {
                filters, kernel, ..
            },
            Shape::Image(_, _, channels),
        ) => kernel
            .checked_mul(*kernel)?
            .checked_mul(channels)?
            .checked_mul(*filters)?
            .checked_add(*filters),
        (Kind::DepthwiseConv { kernel, .. }, Shape::Image(_, _, channels)) => kernel
            .checked_mul(*kernel)?
            .checked_mul(channels)?
            .checked_add(channels),
        (Kind::Dense { units }, input) => input.len().checked_mul(*units)?.checked_add(*units),
        _ => Some(0),
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Flat(n) => write!(f, "a flat vector of {n}"),
            Shape::Image(h, w, c) => write!(f, "{h}x{w}x{c}"),
        }
    }
}

/// What a layer does, with its checked arguments.
#[derive(Clone)]
pub enum Kind {
    Conv {
        filters: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    },
    DepthwiseConv {
        kernel: usize,
        stride: usize,
        same: bool,
    },
    Pool {
        max: bool,
        size: usize,
        stride: usize,
    },
    Dense {
        units: usize,
    },
    Flatten,
    GlobalPool {
        max: bool,
    },
    Relu,
    LeakyRelu {
        alpha: Lit,
    },
    Sigmoid,
    Tanh,
    Softmax,
    Dropout {
        rate: Lit,
    },
    BatchNorm,
    /// A layer type of the user's, with the output shape the network expects of it.
    Custom {
        ty: Box<syn::Type>,
        output: Shape,
    },
}

impl Kind {
    /// Whether the layer has trainable parameters (and so a gradient field).
    pub fn has_params(&self) -> bool {
        matches!(
            self,
            Kind::Conv { .. }
                | Kind::DepthwiseConv { .. }
                | Kind::Dense { .. }
                | Kind::BatchNorm
                | Kind::Custom { .. }
        )
    }
}

/// A checked layer with its shapes.
pub struct Layer {
    pub kind: Kind,
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
            Kind::Softmax => Some(last),
            Kind::Sigmoid if self.steps.len() > 1 => Some(last),
            _ => None,
        }
    }
}

/// Every layer the grammar knows, with its signature, for messages and did-you-mean.
const LAYERS: &[(&str, &str)] = &[
    ("input", "input(h, w, c) or input(n)"),
    (
        "conv",
        "conv(filters, kernel) with optional stride = s, padding = same | valid",
    ),
    (
        "dwconv",
        "dwconv(kernel) with optional stride = s, padding = same | valid",
    ),
    ("maxpool", "maxpool(size) with optional stride = s"),
    ("avgpool", "avgpool(size) with optional stride = s"),
    ("dense", "dense(units)"),
    ("flatten", "flatten"),
    ("globalavgpool", "globalavgpool"),
    ("globalmaxpool", "globalmaxpool"),
    ("relu", "relu"),
    ("leaky_relu", "leaky_relu(alpha)"),
    ("sigmoid", "sigmoid"),
    ("tanh", "tanh"),
    ("softmax", "softmax"),
    ("dropout", "dropout(rate)"),
    ("batchnorm", "batchnorm"),
    (
        "residual",
        "residual(layers...) with optional shortcut = project",
    ),
    ("layer", "layer(Type) or layer(Type -> (h, w, c))"),
];

fn error(tokens: impl ToTokens, message: impl fmt::Display) -> syn::Error {
    syn::Error::new_spanned(tokens, message)
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

    /// A number (integer or float literal), possibly negative, as written.
    fn number(&self, arg: &Arg, what: &str) -> syn::Result<(f64, Lit)> {
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
                let value = if *negative { -value } else { value };
                let float = syn::LitFloat::new(&format!("{value:?}f32"), literal.span());
                Ok((value, Lit::Float(float)))
            }
            Value::Word(word) => Err(error(
                word,
                format!("`{}`: {what} must be a number, not `{word}`", self.spec),
            )),
        }
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
    let input = input_shape(first)?;
    check_size(first, input, None)?;
    if rest.is_empty() {
        return Err(error(
            first.tokens(),
            format!(
                "the network has only an input: add at least one layer after `{}`",
                first.spec()
            ),
        ));
    }
    let mut layers = Vec::new();
    let (steps, output) = Scope::top().check_list(rest, input, None, &mut layers)?;
    if let [Step::Layer(only)] = steps[..]
        && matches!(layers[only].kind, Kind::Softmax)
    {
        return Err(error(
            rest[0].tokens(),
            "`softmax` turns logits into probabilities: it needs a layer before it that makes the \
             logits, e.g. `dense(10) softmax`",
        ));
    }
    Ok(Network {
        attrs,
        vis,
        name,
        input,
        output,
        layers,
        steps,
    })
}

/// Where a layer list sits: the network itself, or the inside of a residual block, whose
/// layers' names it prefixes (`res1.conv1`, field `res1_conv1`).
struct Scope {
    /// `res1.` inside the first block, empty at the top.
    name_prefix: String,
    /// The block as written, inside one.
    block: Option<String>,
    /// How many items of each kind the list has had so far, to number the next.
    counts: Vec<(String, usize)>,
}

impl Scope {
    fn top() -> Self {
        Scope {
            name_prefix: String::new(),
            block: None,
            counts: Vec::new(),
        }
    }

    /// The next name for an item of `kind` in this list: `conv2`, or `res1.conv2` in a block.
    fn next_name(&mut self, kind: &str) -> String {
        let count = match self.counts.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.push((kind.to_string(), 1));
                1
            }
        };
        format!("{}{kind}{count}", self.name_prefix)
    }

    /// Checks `defs` fed `input` (the output of the item written `previous`, or the network's
    /// input), appending their layers to `layers`; returns the list's items and the shape it
    /// produces.
    fn check_list(
        &mut self,
        defs: &[LayerDef],
        input: Shape,
        mut previous: Option<String>,
        layers: &mut Vec<Layer>,
    ) -> syn::Result<(Vec<Step>, Shape)> {
        let mut steps = Vec::new();
        let mut received = input;
        for (index, def) in defs.iter().enumerate() {
            let step = if def.kind == RESIDUAL {
                let block = self.check_block(def, received, previous.take(), layers)?;
                Step::Residual(block)
            } else {
                self.check_softmax_place(def, defs.get(index + 1))?;
                let kind = interpret(def, received, previous.as_deref())?;
                let output = output_shape(&kind, received);
                let params = param_count(&kind, received).unwrap_or(usize::MAX);
                check_size(def, output, Some(params))?;
                let name = self.next_name(&def.kind.to_string());
                layers.push(Layer {
                    kind,
                    field: field_ident(&name, def.kind.span()),
                    name,
                    spec: def.spec(),
                    input: received,
                    output,
                });
                Step::Layer(layers.len() - 1)
            };
            received = step.output(layers);
            previous = Some(def.spec());
            steps.push(step);
        }
        Ok((steps, received))
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

    /// Checks a `residual(...)` block fed `received` (the output of `previous`): its layers, in a scope of their own, and
    /// its shortcut, which a block must have exactly when its layers change the shape.
    fn check_block(
        &mut self,
        def: &LayerDef,
        received: Shape,
        previous: Option<String>,
        layers: &mut Vec<Layer>,
    ) -> syn::Result<Block> {
        let example = "residual(conv(32, 3, padding = same) relu)";
        let spec = def.spec();
        let body_defs = match &def.body {
            Some(body) if !body.is_empty() => body,
            _ => {
                return Err(error(
                    def.tokens(),
                    format!(
                        "`{spec}` has no layers: a residual block adds its input to what its \
                         layers make of it, e.g. `{example}`"
                    ),
                ));
            }
        };
        let args = Args::new(def, &[], &["shortcut"], example)?;
        let project = match args.option("shortcut") {
            None => None,
            Some(arg) if matches!(&arg.value, Value::Word(word) if word == "project") => Some(arg),
            Some(arg) => {
                return Err(error(
                    &arg.tokens,
                    format!(
                        "`{spec}`: the shortcut is `project` (a 1x1 convolution, or a dense \
                         layer for vectors), not `{}`",
                        arg.value_text()
                    ),
                ));
            }
        };
        let name = self.next_name("res");
        let mut inner = Scope {
            name_prefix: format!("{name}."),
            block: Some(spec.clone()),
            counts: Vec::new(),
        };
        let (body, output) = inner.check_list(body_defs, received, previous, layers)?;
        let shortcut = match project {
            Some(arg) if output == received => {
                return Err(error(
                    &arg.tokens,
                    format!(
                        "`{spec}` needs no shortcut: its layers keep its input's shape \
                         ({received}), so the input is added as it is; remove `shortcut = project`"
                    ),
                ));
            }
            None if output != received => {
                let hint = match projection(received, output) {
                    Some(kind) => format!(
                        "add `shortcut = project` to learn the projection (`{}`)",
                        kind_spec(&kind)
                    ),
                    None => "no 1x1 convolution or dense layer projects one onto the other, so \
                             keep the shape inside the block"
                        .to_string(),
                };
                return Err(error(
                    def.tokens(),
                    format!(
                        "`{spec}` changes the shape: its layers turn {received} into {output}, \
                         so its input cannot be added to their output; {hint}"
                    ),
                ));
            }
            Some(_) => Some(self.shortcut_layer(def, &name, received, output, layers)?),
            None => None,
        };
        Ok(Block {
            field: field_ident(&name, def.kind.span()),
            name,
            body,
            shortcut,
            input: received,
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
        let params = param_count(&kind, input).unwrap_or(usize::MAX);
        check_size(def, output, Some(params))?;
        let name = format!("{block}.shortcut");
        layers.push(Layer {
            spec: kind_spec(&kind),
            kind,
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
fn projection(input: Shape, output: Shape) -> Option<Kind> {
    match (input, output) {
        (Shape::Image(h, w, _), Shape::Image(out_h, out_w, filters)) => (1..=h.max(w))
            .find(|stride| (h - 1) / stride + 1 == out_h && (w - 1) / stride + 1 == out_w)
            .map(|stride| Kind::Conv {
                filters,
                kernel: 1,
                stride,
                same: false,
            }),
        (Shape::Flat(_), Shape::Flat(units)) => Some(Kind::Dense { units }),
        _ => None,
    }
}

/// How the grammar writes a projection: `conv(64, 1, stride = 2)`, `dense(32)`.
fn kind_spec(kind: &Kind) -> String {
    match kind {
        Kind::Conv {
            filters, stride, ..
        } if *stride > 1 => format!("conv({filters}, 1, stride = {stride})"),
        Kind::Conv { filters, .. } => format!("conv({filters}, 1)"),
        Kind::Dense { units } => format!("dense({units})"),
        _ => unreachable!("projections are 1x1 convolutions or dense layers"),
    }
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
fn custom_output(def: &LayerDef, received: Shape) -> syn::Result<Shape> {
    if def.args.is_empty() {
        return Ok(received);
    }
    let problem = "the output shape after `->` is `(height, width, channels)` or `(size)`";
    dims_shape(
        def,
        ["layer(T -> (10))", "layer(T -> (24, 24, 64))"],
        problem,
    )
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

/// A convolution's `stride = s` (1 by default) and `padding = same | valid` (valid).
fn stride_and_padding(args: &Args, spec: &str) -> syn::Result<(usize, bool)> {
    let stride = match args.option("stride") {
        Some(arg) => args.positive_int(arg, "the stride")?,
        None => 1,
    };
    let same = match args.option("padding").map(|a| &a.value) {
        None => false,
        Some(Value::Word(word)) if word == "valid" => false,
        Some(Value::Word(word)) if word == "same" => true,
        Some(_) => {
            let arg = args.option("padding").expect("present");
            return Err(error(
                &arg.tokens,
                format!(
                    "`{spec}`: padding is `same` or `valid`, not `{}`",
                    arg.value_text()
                ),
            ));
        }
    };
    Ok((stride, same))
}

/// Checks one layer's arguments against its signature and its input shape.
fn interpret(def: &LayerDef, received: Shape, previous: Option<&str>) -> syn::Result<Kind> {
    let kind = def.kind.to_string();
    let spec = def.spec();
    let needs_image = |what: &str| -> syn::Result<(usize, usize, usize)> {
        match received {
            Shape::Image(h, w, c) => Ok((h, w, c)),
            Shape::Flat(n) => Err(error(
                def.tokens(),
                format!(
                    "`{spec}` needs an image (height x width x channels), but receives a flat \
                     vector of {n} ({}): {what} cannot follow `flatten` or a dense layer",
                    source(previous)
                ),
            )),
        }
    };
    let window_fits = |size: usize, what: &str, h: usize, w: usize| -> syn::Result<()> {
        if h < size || w < size {
            return Err(error(
                def.tokens(),
                format!(
                    "`{spec}` needs an input of at least {size}x{size}, but receives {received} \
                     ({}): the {what} is larger than its input",
                    source(previous)
                ),
            ));
        }
        Ok(())
    };
    // A convolution's window: its stride and padding, an image to slide over, and, without
    // padding, room for the kernel.
    let window = |args: &Args, kernel: usize, what: &str| -> syn::Result<(usize, bool)> {
        let (stride, same) = stride_and_padding(args, &spec)?;
        let (h, w, _) = needs_image(what)?;
        if !same {
            window_fits(kernel, "kernel", h, w)?;
        }
        Ok((stride, same))
    };
    Ok(match kind.as_str() {
        "conv" => {
            let args = Args::new(
                def,
                &["number of filters", "kernel size"],
                &["stride", "padding"],
                "conv(32, 3)",
            )?;
            let filters = args.positive_int(args.positional[0], "the number of filters")?;
            let kernel = args.positive_int(args.positional[1], "the kernel size")?;
            let (stride, same) = window(&args, kernel, "a convolution")?;
            Kind::Conv {
                filters,
                kernel,
                stride,
                same,
            }
        }
        "dwconv" => {
            let args = Args::new(def, &["kernel size"], &["stride", "padding"], "dwconv(3)")?;
            let kernel = args.positive_int(args.positional[0], "the kernel size")?;
            let (stride, same) = window(&args, kernel, "a depthwise convolution")?;
            Kind::DepthwiseConv {
                kernel,
                stride,
                same,
            }
        }
        "maxpool" | "avgpool" => {
            let example = format!("{kind}(2)");
            let args = Args::new(def, &["pool size"], &["stride"], &example)?;
            let size = args.positive_int(args.positional[0], "the pool size")?;
            let stride = match args.option("stride") {
                Some(arg) => args.positive_int(arg, "the stride")?,
                None => size,
            };
            let (h, w, _) = needs_image("pooling")?;
            window_fits(size, "pooling window", h, w)?;
            Kind::Pool {
                max: kind == "maxpool",
                size,
                stride,
            }
        }
        "layer" => {
            let Some(ty) = &def.custom else {
                return Err(error(
                    def.tokens(),
                    "`layer` inserts a layer type of yours: `layer(my_crate::Swish<Hwc<12, 12, \
                     64>>)`, with `-> (h, w, c)` after the type if its output shape differs",
                ));
            };
            Kind::Custom {
                ty: Box::new(ty.clone()),
                output: custom_output(def, received)?,
            }
        }
        "globalavgpool" | "globalmaxpool" => {
            Args::new(def, &[], &[], &kind)?;
            needs_image("global pooling")?;
            Kind::GlobalPool {
                max: kind == "globalmaxpool",
            }
        }
        "dense" => {
            let args = Args::new(def, &["number of units"], &[], "dense(128)")?;
            let units = args.positive_int(args.positional[0], "the number of units")?;
            if let Shape::Image(..) = received {
                return Err(error(
                    def.tokens(),
                    format!(
                        "`{spec}` needs a flat input, but receives {received} ({}): add `flatten` \
                         before it",
                        source(previous)
                    ),
                ));
            }
            Kind::Dense { units }
        }
        "leaky_relu" => {
            let args = Args::new(def, &["slope alpha"], &[], "leaky_relu(0.1)")?;
            let (slope, alpha) = args.number(args.positional[0], "the slope alpha")?;
            if slope < 0.0 {
                return Err(error(
                    &args.positional[0].tokens,
                    format!(
                        "`{spec}`: the slope for negative inputs must be at least 0 (as in Keras), not {slope}"
                    ),
                ));
            }
            Kind::LeakyRelu { alpha }
        }
        "dropout" => {
            let args = Args::new(def, &["rate"], &[], "dropout(0.25)")?;
            let (rate, literal) = args.number(args.positional[0], "the rate")?;
            if !(0.0..1.0).contains(&rate) {
                return Err(error(
                    &args.positional[0].tokens,
                    format!(
                        "`{spec}`: the dropout rate is the fraction of values dropped, so it must \
                         be in [0, 1), not {rate}"
                    ),
                ));
            }
            Kind::Dropout { rate: literal }
        }
        "flatten" | "relu" | "sigmoid" | "tanh" | "softmax" | "batchnorm" => {
            Args::new(def, &[], &[], &kind)?;
            match kind.as_str() {
                "flatten" => Kind::Flatten,
                "relu" => Kind::Relu,
                "sigmoid" => Kind::Sigmoid,
                "tanh" => Kind::Tanh,
                "softmax" => Kind::Softmax,
                _ => Kind::BatchNorm,
            }
        }
        "input" => {
            return Err(error(
                def.tokens(),
                format!("`{spec}`: a network has one input, its first layer; remove this one"),
            ));
        }
        unknown => {
            let names = LAYERS.iter().map(|(name, _)| *name);
            let hint = match did_you_mean(unknown, names) {
                Some(name) => {
                    let signature = LAYERS.iter().find(|(n, _)| *n == name).expect("known").1;
                    format!("did you mean `{name}` ({signature})?")
                }
                None => format!(
                    "the layers are {}",
                    list(&LAYERS.iter().map(|(name, _)| *name).collect::<Vec<_>>())
                ),
            };
            return Err(error(
                &def.kind,
                format!("unknown layer `{unknown}`: {hint}"),
            ));
        }
    })
}

/// The shape a (checked) layer produces from `input`.
fn output_shape(kind: &Kind, input: Shape) -> Shape {
    let image = |h, w, c| Shape::Image(h, w, c);
    match kind {
        Kind::Conv {
            filters,
            kernel,
            stride,
            same,
        } => match input {
            Shape::Image(h, w, _) if *same => {
                image(h.div_ceil(*stride), w.div_ceil(*stride), *filters)
            }
            Shape::Image(h, w, _) => image(
                (h - kernel) / stride + 1,
                (w - kernel) / stride + 1,
                *filters,
            ),
            Shape::Flat(_) => unreachable!("checked by interpret"),
        },
        Kind::DepthwiseConv {
            kernel,
            stride,
            same,
        } => match input {
            Shape::Image(h, w, c) if *same => image(h.div_ceil(*stride), w.div_ceil(*stride), c),
            Shape::Image(h, w, c) => image((h - kernel) / stride + 1, (w - kernel) / stride + 1, c),
            Shape::Flat(_) => unreachable!("checked by interpret"),
        },
        Kind::Pool { size, stride, .. } => match input {
            Shape::Image(h, w, c) => image((h - size) / stride + 1, (w - size) / stride + 1, c),
            Shape::Flat(_) => unreachable!("checked by interpret"),
        },
        Kind::Dense { units } => Shape::Flat(*units),
        Kind::Flatten => Shape::Flat(input.len()),
        Kind::Custom { output, .. } => *output,
        Kind::GlobalPool { .. } => match input {
            Shape::Image(_, _, c) => Shape::Flat(c),
            Shape::Flat(_) => unreachable!("checked by interpret"),
        },
        _ => input,
    }
}
