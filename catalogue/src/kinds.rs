//! Every layer kind: its grammar entry ([`ENTRIES`]) and its checked value ([`LayerKind`]) with
//! the rules the macro, the planner and the runtime read, and how ONNX and PyTorch write it
//! ([`LayerKind::onnx`], [`LayerKind::torch_layout`]). A new kind is a variant, an entry,
//! and an arm in each `match` below; the compiler lists the arms a new variant is missing.

use crate::args::{ArgProblem, ArgRef, ArgType, Args, Param};
use crate::padding::Padding;
use crate::shape::Shape;

/// Batch normalisation's default epsilon, added to the variance (Keras's `1e-3`).
pub const BATCHNORM_EPSILON: f32 = 1e-3;

/// A checked layer: what it computes, with its arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerKind {
    /// 2-D convolution; its `weight` is `[kernel, kernel, in_channels, filters]`.
    Conv {
        /// Output channels.
        filters: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Step between windows.
        stride: usize,
        /// How the input is padded.
        padding: Padding,
    },
    /// Depthwise convolution, one filter per channel; `weight` is `[kernel, kernel, channels]`.
    DepthwiseConv {
        /// Kernel height and width.
        kernel: usize,
        /// Step between windows.
        stride: usize,
        /// How the input is padded.
        padding: Padding,
    },
    /// Max or average pooling over `size`x`size` windows. Padding takes no part in a window:
    /// the maximum or mean is of the input values the window covers (Keras's `same`, ONNX's
    /// `count_include_pad = 0`).
    Pool {
        /// Maximum, else mean.
        max: bool,
        /// Window height and width.
        size: usize,
        /// Step between windows.
        stride: usize,
        /// How the input is padded.
        padding: Padding,
    },
    /// Maximum or mean of each channel over all pixels, to a flat vector.
    GlobalPool {
        /// Maximum, else mean.
        max: bool,
    },
    /// `x · weight + bias`, `weight` being `[in, out]`.
    Dense {
        /// Outputs.
        units: usize,
    },
    /// Every pixel repeated in a `factor`x`factor` block (nearest-neighbour upsampling).
    Upsample {
        /// How many times larger the image gets in each direction.
        factor: usize,
    },
    /// An image to a vector of its values in HWC order.
    Flatten,
    /// `max(x, 0)`.
    Relu,
    /// `x` if positive, else `alpha · x`.
    LeakyRelu {
        /// Slope for negative inputs, at least 0.
        alpha: f32,
    },
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x · Φ(x)`, `Φ` the standard normal distribution function (GELU, exact form).
    Gelu,
    /// `x · σ(x)` (Swish with β = 1, SiLU).
    Swish,
    /// Softmax over the vector.
    Softmax,
    /// Dropout of a fraction `rate` of the values in training; the identity at inference.
    Dropout {
        /// The fraction dropped, in [0, 1).
        rate: f32,
    },
    /// `weight · (x − running_mean) / sqrt(running_var + epsilon) + bias` per channel.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// A layer type of the user's (`layer(T)`): nothing more is known of it.
    Custom,
    /// The sum of a residual block's input (or its projection) and its layers' output.
    Add,
}

/// What a layer kind needs of its input shape and did not get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeProblem {
    /// It needs an image; `what` names the operation (`a convolution`).
    NeedsImage(&'static str),
    /// It needs a flat vector.
    NeedsFlat,
    /// Its `size`x`size` window (`what`: `kernel`, `pooling window`) is larger than the image.
    WindowTooLarge {
        /// The window's height and width.
        size: usize,
        /// What the window is.
        what: &'static str,
    },
    /// Its output would hold more values than `usize` counts.
    TooLarge,
}

impl ShapeProblem {
    /// The message of a layer written `spec` that receives `received` from `source` (`the
    /// output of `conv(32, 3)``, `the network's input`).
    pub fn message(&self, spec: &str, received: Shape, source: &str) -> String {
        match *self {
            ShapeProblem::NeedsImage(what) => format!(
                "`{spec}` needs an image (height x width x channels), but receives {received} \
                 ({source}): {what} cannot follow `flatten` or a dense layer"
            ),
            ShapeProblem::NeedsFlat => format!(
                "`{spec}` needs a flat input, but receives {received} ({source}): add `flatten` \
                 before it"
            ),
            ShapeProblem::WindowTooLarge { size, what } => format!(
                "`{spec}` needs an input of at least {size}x{size}, but receives {received} \
                 ({source}): the {what} is larger than its input"
            ),
            ShapeProblem::TooLarge => format!(
                "`{spec}` is too large: from {received} ({source}) its output would hold more \
                 values than a usize can count"
            ),
        }
    }
}

/// Whether a layer's backward pass reads its output, which decides whether a later op may
/// overwrite that output in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputUse {
    /// It does not read it.
    Unread,
    /// It reads only its sign, which a positive scale keeps.
    SignOnly,
    /// It reads its values.
    Read,
}

/// The runtime type that implements a kind, `::constnet::layers::{name}<generics...>`, and how
/// a network builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeLayer {
    /// The type's name in `constnet::layers`.
    pub name: &'static str,
    /// Its generic arguments, in order.
    pub generics: Vec<Generic>,
    /// Its constructor.
    pub constructor: Constructor,
}

/// A generic argument of a runtime layer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generic {
    /// The shape type of its input (`Hwc<28, 28, 1>`, `Flat<784>`).
    Input,
    /// The shape type of its output.
    Output,
    /// A `usize` constant.
    Size(usize),
    /// A padding marker type (`Valid`, `Same`, `Pads<top, bottom, left, right>`).
    Padding(Padding),
}

/// How a network builds a runtime layer, `rng` being its seeded generator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Constructor {
    /// `T::new()`.
    Plain,
    /// `T::new(&mut rng)`: weights drawn from the generator.
    Seeded,
    /// `T::{method}(value)`.
    WithValue {
        /// The constructor's name.
        method: &'static str,
        /// Its argument.
        value: f32,
    },
    /// `T::new(value, seed)`, the seed drawn from the generator.
    WithValueAndSeed(f32),
}

impl Constructor {
    /// Whether building draws from the network's generator.
    pub fn uses_rng(self) -> bool {
        matches!(self, Constructor::Seeded | Constructor::WithValueAndSeed(_))
    }
}

/// A layer kind as the grammar writes it.
pub struct Entry {
    /// Its name in a layer list: `conv`.
    pub name: &'static str,
    /// Its signature, for messages: `conv(filters, kernel) with optional stride = s, ...`.
    pub usage: &'static str,
    /// An example of its use, for messages: `conv(32, 3)`.
    pub example: &'static str,
    /// Its positional arguments, all required.
    pub positional: &'static [Param],
    /// Its named options, each optional.
    pub options: &'static [Param],
    /// The kind its decoded arguments describe, or the argument it refuses.
    pub build: fn(&Args) -> Result<LayerKind, ArgProblem>,
}

impl Entry {
    /// The entry named `name` in the grammar.
    pub fn named(name: &str) -> Option<&'static Entry> {
        ENTRIES.iter().find(|entry| entry.name == name)
    }
}

const fn positional(name: &'static str, ty: ArgType) -> Param {
    Param { name, ty }
}

const STRIDE: Param = Param {
    name: "stride",
    ty: ArgType::PositiveInt,
};

const PADDING: Param = Param {
    name: "padding",
    ty: ArgType::Padding,
};

/// The padding option (index 1, after the stride) as written, `valid` by default or where
/// every pad is 0; explicit pads must leave a value of the input in every window: at most `window − 1` zeros on a side
/// of a convolution, at most half the window on a side of a pooling (PyTorch's rule).
fn padding(args: &Args, window: usize, pooling: bool) -> Result<Padding, ArgProblem> {
    let padding = args.option_padding(1).unwrap_or(Padding::Valid);
    let (limit, rule) = if pooling {
        (window / 2, "half the pooling window")
    } else {
        (window - 1, "the kernel size less one")
    };
    match padding {
        Padding::Explicit(pads) if pads.largest() > limit => Err(ArgProblem {
            arg: ArgRef::Option(1),
            message: format!(
                "a pad of {} is more than {rule} ({limit}), so some windows would hold no input \
                 value",
                pads.largest()
            ),
        }),
        Padding::Explicit(pads) if pads.is_zero() => Ok(Padding::Valid),
        _ => Ok(padding),
    }
}

/// An entry without arguments.
const fn bare(name: &'static str, kind: fn(&Args) -> Result<LayerKind, ArgProblem>) -> Entry {
    Entry {
        name,
        usage: name,
        example: name,
        positional: &[],
        options: &[],
        build: kind,
    }
}

/// Every layer kind the grammar knows (besides `input`, `residual` and `layer`, which are part
/// of the grammar's structure).
pub static ENTRIES: &[Entry] = &[
    Entry {
        name: "conv",
        usage: "conv(filters, kernel) with optional stride = s, padding = same | valid | p | (top, bottom, left, right)",
        example: "conv(32, 3)",
        positional: &[
            positional("number of filters", ArgType::PositiveInt),
            positional("kernel size", ArgType::PositiveInt),
        ],
        options: &[STRIDE, PADDING],
        build: |args| {
            Ok(LayerKind::Conv {
                filters: args.int(0),
                kernel: args.int(1),
                stride: args.option_int(0, 1),
                padding: padding(args, args.int(1), false)?,
            })
        },
    },
    Entry {
        name: "dwconv",
        usage: "dwconv(kernel) with optional stride = s, padding = same | valid | p | (top, bottom, left, right)",
        example: "dwconv(3)",
        positional: &[positional("kernel size", ArgType::PositiveInt)],
        options: &[STRIDE, PADDING],
        build: |args| {
            Ok(LayerKind::DepthwiseConv {
                kernel: args.int(0),
                stride: args.option_int(0, 1),
                padding: padding(args, args.int(0), false)?,
            })
        },
    },
    Entry {
        name: "maxpool",
        usage: "maxpool(size) with optional stride = s, padding = same | valid | p | (top, bottom, left, right)",
        example: "maxpool(2)",
        positional: &[positional("pool size", ArgType::PositiveInt)],
        options: &[STRIDE, PADDING],
        build: |args| pool(true, args),
    },
    Entry {
        name: "avgpool",
        usage: "avgpool(size) with optional stride = s, padding = same | valid | p | (top, bottom, left, right)",
        example: "avgpool(2)",
        positional: &[positional("pool size", ArgType::PositiveInt)],
        options: &[STRIDE, PADDING],
        build: |args| pool(false, args),
    },
    Entry {
        name: "dense",
        usage: "dense(units)",
        example: "dense(128)",
        positional: &[positional("number of units", ArgType::PositiveInt)],
        options: &[],
        build: |args| Ok(LayerKind::Dense { units: args.int(0) }),
    },
    Entry {
        name: "upsample",
        usage: "upsample(factor)",
        example: "upsample(2)",
        positional: &[positional("scale factor", ArgType::PositiveInt)],
        options: &[],
        build: |args| {
            Ok(LayerKind::Upsample {
                factor: args.int(0),
            })
        },
    },
    bare("flatten", |_| Ok(LayerKind::Flatten)),
    bare("globalavgpool", |_| {
        Ok(LayerKind::GlobalPool { max: false })
    }),
    bare("globalmaxpool", |_| Ok(LayerKind::GlobalPool { max: true })),
    bare("relu", |_| Ok(LayerKind::Relu)),
    Entry {
        name: "leaky_relu",
        usage: "leaky_relu(alpha)",
        example: "leaky_relu(0.1)",
        positional: &[positional("slope alpha", ArgType::Number)],
        options: &[],
        build: |args| {
            let slope = args.number(0);
            if slope < 0.0 {
                return Err(ArgProblem {
                    arg: ArgRef::Positional(0),
                    message: format!(
                        "the slope for negative inputs must be at least 0 (as in Keras), not \
                         {slope}"
                    ),
                });
            }
            Ok(LayerKind::LeakyRelu {
                alpha: slope as f32,
            })
        },
    },
    bare("sigmoid", |_| Ok(LayerKind::Sigmoid)),
    bare("tanh", |_| Ok(LayerKind::Tanh)),
    bare("gelu", |_| Ok(LayerKind::Gelu)),
    bare("swish", |_| Ok(LayerKind::Swish)),
    bare("softmax", |_| Ok(LayerKind::Softmax)),
    Entry {
        name: "dropout",
        usage: "dropout(rate)",
        example: "dropout(0.25)",
        positional: &[positional("rate", ArgType::Number)],
        options: &[],
        build: |args| {
            let rate = args.number(0);
            if !(0.0..1.0).contains(&rate) || rate as f32 >= 1.0 {
                return Err(ArgProblem {
                    arg: ArgRef::Positional(0),
                    message: format!(
                        "the dropout rate is the fraction of values dropped, so it must be in \
                         [0, 1), not {rate}"
                    ),
                });
            }
            Ok(LayerKind::Dropout { rate: rate as f32 })
        },
    },
    Entry {
        name: "batchnorm",
        usage: "batchnorm with optional epsilon = e",
        example: "batchnorm",
        positional: &[],
        options: &[Param {
            name: "epsilon",
            ty: ArgType::Number,
        }],
        build: |args| {
            let epsilon = args.option_number(0).unwrap_or(BATCHNORM_EPSILON as f64);
            if !(epsilon > 0.0 && (epsilon as f32) > 0.0 && epsilon.is_finite()) {
                return Err(ArgProblem {
                    arg: ArgRef::Option(0),
                    message: format!(
                        "epsilon is added to the variance before its square root, so it must \
                         be positive, not {epsilon}"
                    ),
                });
            }
            Ok(LayerKind::BatchNorm {
                epsilon: epsilon as f32,
            })
        },
    },
];

/// A pooling's kind from its size, optional stride (the size by default) and padding.
fn pool(max: bool, args: &Args) -> Result<LayerKind, ArgProblem> {
    let size = args.int(0);
    Ok(LayerKind::Pool {
        max,
        size,
        stride: args.option_int(0, size),
        padding: padding(args, size, true)?,
    })
}

/// `(h, w, c)` of an image input, or the problem of a flat one.
fn image(input: Shape, what: &'static str) -> Result<(usize, usize, usize), ShapeProblem> {
    match input {
        Shape::Image(h, w, c) => Ok((h, w, c)),
        Shape::Flat(_) => Err(ShapeProblem::NeedsImage(what)),
    }
}

/// Rows and columns of `size`x`size` windows sliding `stride` apart over the padded image,
/// refusing a window larger than the padded input.
fn window_output(
    input: (usize, usize),
    size: usize,
    stride: usize,
    padding: Padding,
    what: &'static str,
) -> Result<(usize, usize), ShapeProblem> {
    match padding.output(input, size, stride) {
        Some(output) => Ok(output),
        None if padding.padded(input, size, stride).is_none() => Err(ShapeProblem::TooLarge),
        None => Err(ShapeProblem::WindowTooLarge { size, what }),
    }
}

impl LayerKind {
    /// The shape it produces from `input`, or what it needs of `input` and did not get. A
    /// custom layer's output is the user's to say, so it keeps its input's shape here; an
    /// addition keeps its inputs'.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, ShapeProblem> {
        Ok(match *self {
            LayerKind::Conv {
                filters,
                kernel,
                stride,
                padding,
            } => {
                let (h, w, _) = image(input, "a convolution")?;
                let (h, w) = window_output((h, w), kernel, stride, padding, "kernel")?;
                Shape::Image(h, w, filters)
            }
            LayerKind::DepthwiseConv {
                kernel,
                stride,
                padding,
            } => {
                let (h, w, c) = image(input, "a depthwise convolution")?;
                let (h, w) = window_output((h, w), kernel, stride, padding, "kernel")?;
                Shape::Image(h, w, c)
            }
            LayerKind::Pool {
                size,
                stride,
                padding,
                ..
            } => {
                let (h, w, c) = image(input, "pooling")?;
                let window = "pooling window";
                let (h, w) = window_output((h, w), size, stride, padding, window)?;
                Shape::Image(h, w, c)
            }
            LayerKind::GlobalPool { .. } => Shape::Flat(image(input, "global pooling")?.2),
            LayerKind::Upsample { factor } => {
                let (h, w, c) = image(input, "upsampling")?;
                let grown = |len: usize| len.checked_mul(factor).ok_or(ShapeProblem::TooLarge);
                Shape::Image(grown(h)?, grown(w)?, c)
            }
            LayerKind::Dense { units } => match input {
                Shape::Flat(_) => Shape::Flat(units),
                Shape::Image(..) => return Err(ShapeProblem::NeedsFlat),
            },
            LayerKind::Flatten => Shape::Flat(input.len()),
            LayerKind::Relu
            | LayerKind::LeakyRelu { .. }
            | LayerKind::Sigmoid
            | LayerKind::Tanh
            | LayerKind::Gelu
            | LayerKind::Swish
            | LayerKind::Softmax
            | LayerKind::Dropout { .. }
            | LayerKind::BatchNorm { .. }
            | LayerKind::Custom
            | LayerKind::Add => input,
        })
    }

    /// Its trainable parameters when fed `input` (`None` if the count overflows `usize`).
    pub fn param_count(&self, input: Shape) -> Option<usize> {
        let channels = match input {
            Shape::Image(_, _, c) => c,
            Shape::Flat(n) => n,
        };
        match *self {
            LayerKind::Conv {
                filters, kernel, ..
            } => kernel
                .checked_mul(kernel)?
                .checked_mul(channels)?
                .checked_mul(filters)?
                .checked_add(filters),
            LayerKind::DepthwiseConv { kernel, .. } => kernel
                .checked_mul(kernel)?
                .checked_mul(channels)?
                .checked_add(channels),
            LayerKind::Dense { units } => input.len().checked_mul(units)?.checked_add(units),
            LayerKind::BatchNorm { .. } => channels.checked_mul(2),
            _ => Some(0),
        }
    }

    /// Whether it has trainable parameters (a user's layer may).
    pub fn has_params(&self) -> bool {
        matches!(
            self,
            LayerKind::Conv { .. }
                | LayerKind::DepthwiseConv { .. }
                | LayerKind::Dense { .. }
                | LayerKind::BatchNorm { .. }
                | LayerKind::Custom
        )
    }

    /// Whether it saves state that is not trained (batch normalisation's running statistics; a
    /// user's layer may).
    pub fn has_buffers(&self) -> bool {
        matches!(self, LayerKind::BatchNorm { .. } | LayerKind::Custom)
    }

    /// Whether it is linear in its input and applies an activation in its epilogue (the GEMM of
    /// a convolution or dense layer, the register sums of a depthwise convolution).
    pub fn is_linear(&self) -> bool {
        matches!(
            self,
            LayerKind::Conv { .. } | LayerKind::DepthwiseConv { .. } | LayerKind::Dense { .. }
        )
    }

    /// Whether batch normalisation after it folds into its weights at inference (a scale and a
    /// bias per output channel).
    pub fn folds_batchnorm(&self) -> bool {
        matches!(
            self,
            LayerKind::Conv { .. } | LayerKind::DepthwiseConv { .. }
        )
    }

    /// Whether it is an activation a GEMM epilogue applies exactly, with a derivative its
    /// output determines (leaky ReLU's slope is at least 0).
    pub fn fuses_into_epilogue(&self) -> bool {
        matches!(
            self,
            LayerKind::Relu | LayerKind::LeakyRelu { .. } | LayerKind::Sigmoid | LayerKind::Tanh
        )
    }

    /// Whether its backward pass reads its output.
    pub fn output_in_backward(&self) -> OutputUse {
        match self {
            LayerKind::Relu | LayerKind::LeakyRelu { .. } => OutputUse::SignOnly,
            LayerKind::Conv { .. }
            | LayerKind::DepthwiseConv { .. }
            | LayerKind::Dense { .. }
            | LayerKind::Pool { .. }
            | LayerKind::GlobalPool { .. }
            | LayerKind::Upsample { .. }
            | LayerKind::BatchNorm { .. }
            | LayerKind::Dropout { .. }
            | LayerKind::Gelu
            | LayerKind::Swish => OutputUse::Unread,
            LayerKind::Flatten
            | LayerKind::Sigmoid
            | LayerKind::Tanh
            | LayerKind::Softmax
            | LayerKind::Custom
            | LayerKind::Add => OutputUse::Read,
        }
    }

    /// The runtime type implementing it between `input` and `output`, and its constructor;
    /// `None` for a user's layer (its own type) and an addition (part of a block's state).
    pub fn runtime(&self, input: Shape, output: Shape) -> Option<RuntimeLayer> {
        use Constructor::{Plain, Seeded, WithValue, WithValueAndSeed};
        use Generic::{Input, Output, Size};
        let layer = |name, generics: Vec<Generic>, constructor| {
            Some(RuntimeLayer {
                name,
                generics,
                constructor,
            })
        };
        let channels = output.len();
        match *self {
            LayerKind::Conv {
                kernel,
                stride,
                padding,
                ..
            } => {
                let generics = vec![Input, Output, Size(kernel), Size(stride)];
                let generics = [generics, vec![Generic::Padding(padding)]].concat();
                layer("Conv2d", generics, Seeded)
            }
            LayerKind::DepthwiseConv {
                kernel,
                stride,
                padding,
            } => {
                let generics = vec![Input, Output, Size(kernel), Size(stride)];
                let generics = [generics, vec![Generic::Padding(padding)]].concat();
                layer("DepthwiseConv2d", generics, Seeded)
            }
            LayerKind::Pool {
                max,
                size,
                stride,
                padding,
            } => {
                let name = if max { "MaxPool2d" } else { "AvgPool2d" };
                let generics = vec![Input, Output, Size(size), Size(stride)];
                let generics = [generics, vec![Generic::Padding(padding)]].concat();
                layer(name, generics, Plain)
            }
            LayerKind::GlobalPool { max } => {
                let name = if max {
                    "GlobalMaxPool2d"
                } else {
                    "GlobalAvgPool2d"
                };
                layer(name, vec![Input, Size(channels)], Plain)
            }
            LayerKind::Dense { units } => {
                layer("Dense", vec![Size(input.len()), Size(units)], Seeded)
            }
            LayerKind::Upsample { factor } => {
                layer("Upsample2d", vec![Input, Output, Size(factor)], Plain)
            }
            LayerKind::Flatten => layer("Flatten", vec![Input, Size(output.len())], Plain),
            LayerKind::Relu => layer("Relu", vec![Input], Plain),
            LayerKind::LeakyRelu { alpha } => {
                let leaky = WithValue {
                    method: "leaky",
                    value: alpha,
                };
                layer("LeakyRelu", vec![Input], leaky)
            }
            LayerKind::Sigmoid => layer("Sigmoid", vec![Input], Plain),
            LayerKind::Tanh => layer("Tanh", vec![Input], Plain),
            LayerKind::Gelu => layer("Gelu", vec![Input], Plain),
            LayerKind::Swish => layer("Swish", vec![Input], Plain),
            LayerKind::Softmax => layer("Softmax", vec![Input], Plain),
            LayerKind::Dropout { rate } => layer("Dropout", vec![Input], WithValueAndSeed(rate)),
            LayerKind::BatchNorm { epsilon } if epsilon == BATCHNORM_EPSILON => {
                layer("BatchNorm", vec![Input], Plain)
            }
            LayerKind::BatchNorm { epsilon } => {
                let epsilon = WithValue {
                    method: "with_epsilon",
                    value: epsilon,
                };
                layer("BatchNorm", vec![Input], epsilon)
            }
            LayerKind::Custom | LayerKind::Add => None,
        }
    }
}

/// The ONNX form of a layer kind (opset 17, values in NCHW between operators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxOp {
    /// One operator of this type; its attributes come from the layer's arguments.
    Node(&'static str),
    /// These operators, in order, each reading the one before (and the layer's input).
    Nodes(&'static [&'static str]),
    /// No operator: the value passes through (dropout at inference).
    Identity,
    /// No ONNX form: a layer type of the user's.
    Unsupported,
}

/// How PyTorch stores a tensor of a layer kind, against constnet's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchLayout {
    /// The same dimensions, in the same order (biases, batch normalisation's vectors).
    Same,
    /// A convolution kernel: PyTorch `[out, in, kh, kw]`, constnet `[kh, kw, in, out]`.
    Conv,
    /// A depthwise kernel: PyTorch `[c, 1, kh, kw]`, constnet `[kh, kw, c]`.
    Depthwise,
    /// A linear weight: PyTorch `[out, in]`, constnet `[in, out]`.
    Linear,
}

impl LayerKind {
    /// The ONNX operators the exporter writes for this kind.
    pub fn onnx(&self) -> OnnxOp {
        match self {
            LayerKind::Conv { .. } | LayerKind::DepthwiseConv { .. } => OnnxOp::Node("Conv"),
            LayerKind::Pool { max: true, .. } => OnnxOp::Node("MaxPool"),
            LayerKind::Pool { max: false, .. } => OnnxOp::Node("AveragePool"),
            LayerKind::GlobalPool { max: true } => OnnxOp::Nodes(&["GlobalMaxPool", "Flatten"]),
            LayerKind::GlobalPool { max: false } => {
                OnnxOp::Nodes(&["GlobalAveragePool", "Flatten"])
            }
            LayerKind::Dense { .. } => OnnxOp::Node("Gemm"),
            LayerKind::Upsample { .. } => OnnxOp::Node("Resize"),
            LayerKind::Flatten => OnnxOp::Node("Flatten"),
            LayerKind::Relu => OnnxOp::Node("Relu"),
            LayerKind::LeakyRelu { .. } => OnnxOp::Node("LeakyRelu"),
            LayerKind::Sigmoid => OnnxOp::Node("Sigmoid"),
            LayerKind::Tanh => OnnxOp::Node("Tanh"),
            // x · ((1 + erf(x · (1/√2))) · 0.5): opset 17 has no Gelu.
            LayerKind::Gelu => OnnxOp::Nodes(&["Mul", "Erf", "Add", "Mul", "Mul"]),
            LayerKind::Swish => OnnxOp::Nodes(&["Sigmoid", "Mul"]),
            LayerKind::Softmax => OnnxOp::Node("Softmax"),
            LayerKind::Dropout { .. } => OnnxOp::Identity,
            LayerKind::BatchNorm { .. } => OnnxOp::Node("BatchNormalization"),
            LayerKind::Add => OnnxOp::Node("Add"),
            LayerKind::Custom => OnnxOp::Unsupported,
        }
    }

    /// How PyTorch's module for this kind (`nn.Conv2d`, `nn.Linear`, `nn.BatchNorm2d`, ...)
    /// lays out its tensor `tensor` (`weight`, `bias`, `running_mean`, ...) of `rank`
    /// dimensions. A user's layer has no PyTorch module of its own: its tensors are taken by
    /// rank, four dimensions a convolution kernel, three a depthwise kernel, two a linear
    /// weight.
    pub fn torch_layout(&self, tensor: &str, rank: usize) -> TorchLayout {
        match (self, tensor, rank) {
            (LayerKind::Conv { .. }, "weight", _) | (LayerKind::Custom, _, 4) => TorchLayout::Conv,
            (LayerKind::DepthwiseConv { .. }, "weight", _) | (LayerKind::Custom, _, 3) => {
                TorchLayout::Depthwise
            }
            (LayerKind::Dense { .. }, "weight", _) | (LayerKind::Custom, _, 2) => {
                TorchLayout::Linear
            }
            _ => TorchLayout::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(name: &str, args: Args) -> Result<LayerKind, ArgProblem> {
        (Entry::named(name).expect("a known kind").build)(&args)
    }

    #[test]
    fn every_entry_has_a_distinct_name_and_an_example_of_its_own() {
        for (index, entry) in ENTRIES.iter().enumerate() {
            assert!(entry.example.starts_with(entry.name), "{}", entry.name);
            assert!(entry.usage.starts_with(entry.name), "{}", entry.name);
            assert!(ENTRIES[..index].iter().all(|e| e.name != entry.name));
        }
    }

    #[test]
    fn convolutions_pad_and_stride_as_keras() {
        let conv = |stride, padding| LayerKind::Conv {
            filters: 8,
            kernel: 3,
            stride,
            padding,
        };
        let input = Shape::Image(28, 28, 1);
        let shape = |kind: LayerKind| kind.output_shape(input);
        assert_eq!(shape(conv(1, Padding::Valid)), Ok(Shape::Image(26, 26, 8)));
        assert_eq!(shape(conv(2, Padding::Valid)), Ok(Shape::Image(13, 13, 8)));
        assert_eq!(shape(conv(2, Padding::Same)), Ok(Shape::Image(14, 14, 8)));
        let tiny = Shape::Image(2, 5, 1);
        assert_eq!(
            conv(1, Padding::Valid).output_shape(tiny),
            Err(ShapeProblem::WindowTooLarge {
                size: 3,
                what: "kernel"
            })
        );
        assert_eq!(
            conv(1, Padding::Same).output_shape(tiny),
            Ok(Shape::Image(2, 5, 8))
        );
        assert_eq!(
            conv(1, Padding::Valid).output_shape(Shape::Flat(9)),
            Err(ShapeProblem::NeedsImage("a convolution"))
        );
    }

    #[test]
    fn upsampling_grows_images_and_refuses_vectors_and_overflow() {
        let up = LayerKind::Upsample { factor: 3 };
        assert_eq!(
            up.output_shape(Shape::Image(4, 5, 2)),
            Ok(Shape::Image(12, 15, 2))
        );
        assert_eq!(
            up.output_shape(Shape::Flat(8)),
            Err(ShapeProblem::NeedsImage("upsampling"))
        );
        let huge = LayerKind::Upsample { factor: usize::MAX };
        assert_eq!(
            huge.output_shape(Shape::Image(2, 1, 1)),
            Err(ShapeProblem::TooLarge)
        );
        assert_eq!(up.param_count(Shape::Image(4, 5, 2)), Some(0));
        let message = ShapeProblem::TooLarge.message("upsample(9)", Shape::Image(2, 1, 1), "x");
        assert!(message.starts_with("`upsample(9)` is too large: from 2x1x1 (x)"));
    }

    #[test]
    fn entries_build_their_kinds_and_refuse_what_types_cannot_say() {
        let number = |value| Args {
            positional: vec![crate::ArgValue::Number(value)],
            options: vec![],
        };
        assert_eq!(
            build("dropout", number(0.25)),
            Ok(LayerKind::Dropout { rate: 0.25 })
        );
        assert_eq!(
            build("dropout", number(1.0)).unwrap_err().arg,
            ArgRef::Positional(0)
        );
        assert!(build("leaky_relu", number(-0.1)).is_err());
        let pool = |padding| Args {
            positional: vec![crate::ArgValue::Int(3)],
            options: vec![None, padding],
        };
        assert_eq!(
            build("maxpool", pool(None)),
            Ok(LayerKind::Pool {
                max: true,
                size: 3,
                stride: 3,
                padding: Padding::Valid,
            })
        );
        let padded = |p| Some(crate::ArgValue::Padding(Padding::uniform(p)));
        assert!(build("maxpool", pool(padded(1))).is_ok());
        let refused = build("avgpool", pool(padded(2))).unwrap_err();
        assert_eq!(refused.arg, ArgRef::Option(1));
        assert!(
            refused
                .message
                .contains("more than half the pooling window (1)")
        );
        let conv = |p| Args {
            positional: vec![crate::ArgValue::Int(8), crate::ArgValue::Int(3)],
            options: vec![None, padded(p)],
        };
        assert!(build("conv", conv(2)).is_ok());
        assert!(build("conv", conv(3)).is_err());
    }

    #[test]
    fn explicit_padding_sets_the_output_as_pytorch_does() {
        let conv = LayerKind::Conv {
            filters: 64,
            kernel: 7,
            stride: 2,
            padding: Padding::uniform(3),
        };
        let stem = conv.output_shape(Shape::Image(224, 224, 3));
        assert_eq!(stem, Ok(Shape::Image(112, 112, 64)));
        let pool = LayerKind::Pool {
            max: true,
            size: 3,
            stride: 2,
            padding: Padding::uniform(1),
        };
        assert_eq!(
            pool.output_shape(Shape::Image(112, 112, 64)),
            Ok(Shape::Image(56, 56, 64))
        );
        let runtime = pool.runtime(Shape::Image(112, 112, 64), Shape::Image(56, 56, 64));
        let generics = runtime.expect("a type").generics;
        assert_eq!(generics[4], Generic::Padding(Padding::uniform(1)));
    }

    #[test]
    fn parameter_counts_and_runtime_types() {
        let input = Shape::Image(5, 5, 4);
        let conv = LayerKind::Conv {
            filters: 8,
            kernel: 3,
            stride: 1,
            padding: Padding::Same,
        };
        assert_eq!(conv.param_count(input), Some(3 * 3 * 4 * 8 + 8));
        let dense = LayerKind::Dense { units: 10 };
        assert_eq!(dense.param_count(Shape::Flat(100)), Some(1010));
        let runtime = conv.runtime(input, Shape::Image(5, 5, 8)).expect("a type");
        assert_eq!(runtime.name, "Conv2d");
        assert_eq!(runtime.generics[4], Generic::Padding(Padding::Same));
        assert!(runtime.constructor.uses_rng());
        assert_eq!(LayerKind::Custom.runtime(input, input), None);
    }

    #[test]
    fn kernels_and_weights_change_layout_and_nothing_else_does() {
        let conv = LayerKind::Conv {
            filters: 4,
            kernel: 3,
            stride: 1,
            padding: Padding::Same,
        };
        assert_eq!(conv.torch_layout("weight", 4), TorchLayout::Conv);
        assert_eq!(conv.torch_layout("bias", 1), TorchLayout::Same);
        let dense = LayerKind::Dense { units: 3 };
        assert_eq!(dense.torch_layout("weight", 2), TorchLayout::Linear);
        let batchnorm = LayerKind::BatchNorm { epsilon: 1e-3 };
        assert_eq!(batchnorm.torch_layout("running_var", 1), TorchLayout::Same);
        assert_eq!(
            LayerKind::Custom.torch_layout("kernel", 2),
            TorchLayout::Linear
        );
        assert_eq!(
            LayerKind::Custom.torch_layout("scale", 1),
            TorchLayout::Same
        );
        assert_eq!(conv.onnx(), OnnxOp::Node("Conv"));
        assert_eq!(LayerKind::Dropout { rate: 0.5 }.onnx(), OnnxOp::Identity);
        assert_eq!(LayerKind::Custom.onnx(), OnnxOp::Unsupported);
    }
}
