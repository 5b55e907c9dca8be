//! The compiled form of a checked network: the ops that run after fusion, the values they read
//! and write, and where each value lives. `expand` only writes a plan out.
//!
//! A plan is a graph: every op names the value it reads and the value it writes, and a value
//! is the network input, an op's output, or a view of another value (flatten: the same storage
//! seen as a flat vector). Two plans are made from one network:
//! - training, up to the logits: each op keeps its output and the gradient of it, the state its
//!   backward reads;
//! - inference, dropout gone: op outputs alternate between two buffers ([`Slot::A`] and
//!   [`Slot::B`]), the last op writing the network's output.
//!
//! In training, dropout scales its input in place when the op before it allows (see
//! [`OpKind::DropoutInPlace`]); at inference it is gone.
//!
//! Fusion: a convolution or dense layer directly followed by relu, leaky_relu, sigmoid or tanh
//! becomes one op with the activation in its GEMM epilogue; its backward takes the activation's
//! derivative from the output, which the fused op keeps instead of the pre-activation. At
//! inference, a convolution also takes in the batch normalisation after it (folded into its
//! weights) and the pooling after its activation (each image's convolution output stays in
//! per-thread scratch, pooled while it is in cache).

use proc_macro2::Ident;
use quote::format_ident;

use crate::valid::{Kind, Layer, Network, Shape};

/// An index into [`Graph::values`].
pub type ValueId = usize;

/// Where a value's storage comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The network's input, owned by the caller.
    Input,
    /// The output of the op at this index.
    Op(usize),
    /// The same storage as this value: a flatten's view, or what an in-place dropout wrote.
    View(ValueId),
}

/// A tensor one sample of which has `shape`.
pub struct Value {
    pub shape: Shape,
    pub source: Source,
}

/// What an op computes.
pub enum OpKind<'n> {
    /// One layer, run as itself.
    Layer(&'n Layer),
    /// A convolution or dense layer with the activation after it in its GEMM epilogue.
    LinearActivation {
        linear: &'n Layer,
        activation: &'n Layer,
    },
    /// Flatten as a view: no work, no storage.
    View(&'n Layer),
    /// In training, dropout scaling its input's storage in place (and the gradient of it in
    /// backward), when the op that wrote that storage does not read it in its own backward, or
    /// reads only its sign (which dropout's positive scale keeps; where it zeroes a value, the
    /// gradient there is zero too).
    DropoutInPlace(&'n Layer),
    /// At inference, a convolution with the batch normalisation after it folded into its
    /// weights, the activation after that in its epilogue, and the pooling after that with each
    /// image's convolution output pooled from scratch (at least one of batch normalisation and
    /// pooling present; each optional).
    Conv {
        conv: &'n Layer,
        batchnorm: Option<&'n Layer>,
        activation: Option<&'n Layer>,
        pool: Option<&'n Layer>,
    },
}

/// One op of a graph.
pub struct Op<'n> {
    pub kind: OpKind<'n>,
    pub input: ValueId,
    pub output: ValueId,
    /// The workspace field of its state: the layer's name, or `conv1_relu1` for a fused op.
    pub field: Ident,
    /// How messages name it: the layer's name, or `conv1+relu1`.
    pub name: String,
}

impl<'n> OpKind<'n> {
    /// The layers the op computes, first to last.
    fn layers(&self) -> Vec<&'n Layer> {
        match *self {
            OpKind::Layer(layer) | OpKind::View(layer) | OpKind::DropoutInPlace(layer) => {
                vec![layer]
            }
            OpKind::LinearActivation { linear, activation } => vec![linear, activation],
            OpKind::Conv {
                conv,
                batchnorm,
                activation,
                pool,
            } => [Some(conv), batchnorm, activation, pool]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}

impl Op<'_> {
    /// The layer whose type gives the op's state (output, cache, output gradient).
    pub fn state_layer(&self) -> &Layer {
        match &self.kind {
            OpKind::Layer(layer) | OpKind::View(layer) | OpKind::DropoutInPlace(layer) => layer,
            OpKind::LinearActivation { linear, .. } => linear,
            OpKind::Conv { conv, .. } => conv,
        }
    }
}

/// The inference buffer a value lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
    /// The network's output, kept in the workspace for the caller.
    Output,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            _ => Slot::A,
        }
    }
}

/// Ops in the order they run and the values between them.
pub struct Graph<'n> {
    pub values: Vec<Value>,
    pub ops: Vec<Op<'n>>,
}

impl<'n> Graph<'n> {
    /// The value the last op writes.
    pub fn result(&self) -> ValueId {
        self.values.len() - 1
    }

    /// The value whose storage `value` is (itself unless it is a view).
    pub fn root(&self, value: ValueId) -> ValueId {
        match self.values[value].source {
            Source::View(of) => self.root(of),
            _ => value,
        }
    }

    /// The graph of `layers`, fed the network input of shape `input`, fusing and viewing
    /// where the rules in the module documentation allow (for `inference`, batch normalisation
    /// and pooling into the convolution before them too).
    fn build(input: Shape, layers: &[&'n Layer], inference: bool) -> Self {
        let mut graph = Graph {
            values: vec![Value {
                shape: input,
                source: Source::Input,
            }],
            ops: Vec::new(),
        };
        let mut rest = layers;
        while !rest.is_empty() {
            let (kind, consumed) = match rest {
                [dropout, _, ..]
                    if matches!(dropout.kind, Kind::Dropout { .. })
                        && graph.may_overwrite(graph.result()) =>
                {
                    (OpKind::DropoutInPlace(dropout), 1)
                }
                _ => next_op(rest, inference),
            };
            graph.push(kind);
            rest = &rest[consumed..];
        }
        graph
    }

    /// Whether an op may overwrite `value`'s storage after the op that wrote it: that op's
    /// backward pass does not read its output, or reads only its sign. The caller's input is
    /// never overwritten.
    fn may_overwrite(&self, value: ValueId) -> bool {
        let Source::Op(writer) = self.values[self.root(value)].source else {
            return false;
        };
        let sign_only = |layer: &Layer| matches!(layer.kind, Kind::Relu | Kind::LeakyRelu { .. });
        match &self.ops[writer].kind {
            OpKind::Layer(layer) => {
                sign_only(layer)
                    || matches!(
                        layer.kind,
                        Kind::Conv { .. }
                            | Kind::DepthwiseConv { .. }
                            | Kind::Dense { .. }
                            | Kind::Pool { .. }
                            | Kind::GlobalPool { .. }
                            | Kind::BatchNorm
                            | Kind::Dropout { .. }
                    )
            }
            OpKind::LinearActivation { activation, .. } => sign_only(activation),
            OpKind::View(_) | OpKind::DropoutInPlace(_) | OpKind::Conv { .. } => false,
        }
    }

    fn push(&mut self, kind: OpKind<'n>) {
        let input = self.values.len() - 1;
        let index = self.ops.len();
        let layers = kind.layers();
        let fields: Vec<String> = layers.iter().map(|l| l.field.to_string()).collect();
        let field = format_ident!("{}", fields.join("_"));
        let name = fields.join("+");
        let output = layers.last().expect("an op computes a layer").output;
        let source = match kind {
            OpKind::View(_) | OpKind::DropoutInPlace(_) => Source::View(input),
            _ => Source::Op(index),
        };
        self.values.push(Value {
            shape: output,
            source,
        });
        self.ops.push(Op {
            kind,
            input,
            output: input + 1,
            field,
            name,
        });
    }

    /// The inference slot of every value (`None` for the caller's input): each op writes the
    /// buffer its input is not in, the last op the network's output.
    pub fn slots(&self) -> Vec<Option<Slot>> {
        let mut slots = vec![None; self.values.len()];
        for op in &self.ops {
            slots[op.output] = match self.values[op.output].source {
                Source::View(of) => slots[of],
                _ if op.output == self.result() => Some(Slot::Output),
                _ => Some(slots[self.root(op.input)].map_or(Slot::A, Slot::other)),
            };
        }
        slots
    }
}

/// The op that starts at `layers[0]`, and how many layers it takes; `inference` fuses batch
/// normalisation and pooling into the convolution before them.
fn next_op<'n>(layers: &[&'n Layer], inference: bool) -> (OpKind<'n>, usize) {
    let first = layers[0];
    if inference && matches!(first.kind, Kind::Conv { .. }) {
        let mut taken = 1;
        let mut take = |fits: fn(&Layer) -> bool| {
            let layer = layers.get(taken).copied().filter(|layer| fits(layer));
            taken += usize::from(layer.is_some());
            layer
        };
        let batchnorm = take(|layer| matches!(layer.kind, Kind::BatchNorm));
        let activation = take(fuses_into_epilogue);
        let pool = take(|layer| matches!(layer.kind, Kind::Pool { .. }));
        if batchnorm.is_some() || pool.is_some() {
            let kind = OpKind::Conv {
                conv: first,
                batchnorm,
                activation,
                pool,
            };
            return (kind, taken);
        }
    }
    match layers.get(1) {
        Some(next) if is_linear(first) && fuses_into_epilogue(next) => (
            OpKind::LinearActivation {
                linear: first,
                activation: next,
            },
            2,
        ),
        // The network's result lives in the workspace, so it is never a view.
        Some(_) if matches!(first.kind, Kind::Flatten) => (OpKind::View(first), 1),
        _ => (OpKind::Layer(first), 1),
    }
}

/// Whether `layer` runs its GEMM with an epilogue.
fn is_linear(layer: &Layer) -> bool {
    matches!(layer.kind, Kind::Conv { .. } | Kind::Dense { .. })
}

/// Whether `layer` is an activation the epilogue applies exactly, with a derivative the
/// activated output determines (leaky ReLU's slope is at least 0, checked by `valid`).
fn fuses_into_epilogue(layer: &Layer) -> bool {
    matches!(
        layer.kind,
        Kind::Relu | Kind::LeakyRelu { .. } | Kind::Sigmoid | Kind::Tanh
    )
}

/// Both graphs of a network.
pub struct Plan<'n> {
    /// Every layer trained up to the logits: all but a final softmax.
    pub train: Graph<'n>,
    /// A final softmax, run after the training graph (the loss fuses it with cross-entropy).
    pub softmax: Option<&'n Layer>,
    /// Every layer but dropout, final softmax included.
    pub infer: Graph<'n>,
}

impl<'n> Plan<'n> {
    pub fn new(net: &'n Network) -> Self {
        let softmax = net
            .ends_with_softmax()
            .then(|| net.layers.last().expect("validated: not empty"));
        let body = &net.layers[..net.layers.len() - usize::from(softmax.is_some())];
        let train: Vec<&Layer> = body.iter().collect();
        let infer: Vec<&Layer> = net
            .layers
            .iter()
            .filter(|layer| !matches!(layer.kind, Kind::Dropout { .. }))
            .collect();
        Plan {
            train: Graph::build(net.input, &train, false),
            softmax,
            infer: Graph::build(net.input, &infer, true),
        }
    }
}
