//! The compiled form of a checked network: the ops that run after fusion, the values they read
//! and write, and where each value lives. `expand` only writes a plan out.
//!
//! A plan is a graph: every op names the values it reads and the value it writes, and a value
//! is the network input, an op's output, or a view of another value (flatten: the same storage
//! seen as a flat vector). A residual block is its layers' ops, its shortcut's op if it has
//! one, and an [`OpKind::Add`] reading both the block's input (or its projection) and its
//! layers' output. Two plans are made from one network, each built unfused
//! ([`build`]) and then rewritten by named passes ([`passes`]):
//! - training, up to the logits (all but a final softmax or sigmoid, which the loss fuses):
//!   each op keeps its output and the gradient of it, the state its backward reads;
//! - inference, dropout gone: each op's output takes the lowest-numbered buffer not holding a
//!   value some later op still reads ([`InferenceSlot::Buffer`]; two for a chain, one more per
//!   level of nested blocks), the last op writing the network's output ([`slots`]).

use proc_macro2::Ident;
use quote::format_ident;

mod build;
pub mod passes;
mod slots;

use constnet_catalogue::{LayerKind, Shape};

use crate::valid::{Block, Layer, Network};
use build::Builder;
pub use slots::Slots;

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
#[derive(Clone, Copy)]
pub enum OpKind<'n> {
    /// One layer, run as itself.
    Layer(&'n Layer),
    /// A convolution or dense layer with the activation after it in its GEMM epilogue. In
    /// training, `pooled` says the max pooling after it runs this op
    /// ([`OpKind::PoolThroughActivation`]): its output is never stored, and its backward starts
    /// from the gradient of the pre-activation.
    LinearActivation {
        linear: &'n Layer,
        activation: &'n Layer,
        pooled: bool,
    },
    /// In training, max pooling of a convolution's activated output ([`OpKind::LinearActivation`]
    /// with `pooled`, the op before it) that runs that op too: forward pools each image's
    /// convolution output from per-thread scratch, recording each window's maximum; backward
    /// takes the activation's derivative at each maximum (its own output), sparing the
    /// activation a pass over every value. Only when nothing else reads the activated output, so
    /// no other gradient joins it there.
    PoolThroughActivation {
        pool: &'n Layer,
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
    /// epilogue (a scale and a bias per filter), the activation after that in its epilogue, and the pooling after that with each
    /// image's convolution output pooled from scratch (at least one of batch normalisation,
    /// pooling and a residual addition present; each optional). As the last op of a residual
    /// block, it also adds the block's input (or its projection) in its epilogue, before the
    /// activation, which is then the one after the block (and there is no pooling).
    Conv {
        conv: &'n Layer,
        batchnorm: Option<&'n Layer>,
        activation: Option<&'n Layer>,
        pool: Option<&'n Layer>,
        residual: Option<Residual<'n>>,
    },
    /// A residual block's projection of its input, whose input gradient goes to the block's
    /// state (`grad_skip`), to be added to the gradient its layers give the input.
    Shortcut { layer: &'n Layer, block: &'n Block },
    /// The end of a residual block: its layers' output (the op's input) plus `skip` (the
    /// block's input, or its projection). In backward, the gradient of the block's input gets
    /// the skip path's share once the op at `first_body_op` has written its own.
    Add {
        block: &'n Block,
        skip: ValueId,
        first_body_op: usize,
    },
}

/// The addition a residual block's last convolution makes in its epilogue.
#[derive(Clone, Copy)]
pub struct Residual<'n> {
    pub block: &'n Block,
    /// The block's input, or its projection.
    pub skip: ValueId,
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
    /// Its run: passes fuse only ops of one run ([`build`]).
    pub run: usize,
}

impl<'n> OpKind<'n> {
    /// The layers the op computes, first to last.
    fn layers(&self) -> Vec<&'n Layer> {
        match *self {
            OpKind::Layer(layer)
            | OpKind::View(layer)
            | OpKind::DropoutInPlace(layer)
            | OpKind::Shortcut { layer, .. }
            | OpKind::PoolThroughActivation { pool: layer, .. } => vec![layer],
            OpKind::Add { .. } => Vec::new(),
            OpKind::LinearActivation {
                linear, activation, ..
            } => vec![linear, activation],
            OpKind::Conv {
                conv,
                batchnorm,
                activation,
                pool,
                ..
            } => [Some(conv), batchnorm, activation, pool]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}

impl<'n> OpKind<'n> {
    /// The op with the values and ops it names renumbered: value `v` becomes `values[v]`, op
    /// `o` becomes `ops[o]`.
    fn renumbered(self, values: &[ValueId], ops: &[usize]) -> Self {
        match self {
            OpKind::Add {
                block,
                skip,
                first_body_op,
            } => OpKind::Add {
                block,
                skip: values[skip],
                first_body_op: ops[first_body_op],
            },
            OpKind::Conv {
                conv,
                batchnorm,
                activation,
                pool,
                residual: Some(Residual { block, skip }),
            } => OpKind::Conv {
                conv,
                batchnorm,
                activation,
                pool,
                residual: Some(Residual {
                    block,
                    skip: values[skip],
                }),
            },
            kind => kind,
        }
    }
}

impl Op<'_> {
    /// The layer whose type gives the op's state (output, cache, output gradient); `None` for
    /// a residual addition, whose state is a `ResidualState`.
    pub fn state_layer(&self) -> Option<&Layer> {
        match &self.kind {
            OpKind::Layer(layer)
            | OpKind::View(layer)
            | OpKind::DropoutInPlace(layer)
            | OpKind::Shortcut { layer, .. }
            | OpKind::PoolThroughActivation { pool: layer, .. } => Some(layer),
            OpKind::LinearActivation { linear, .. } => Some(linear),
            OpKind::Conv { conv, .. } => Some(conv),
            OpKind::Add { .. } => None,
        }
    }

    /// The values the op reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        match self.kind {
            OpKind::Add { skip, .. }
            | OpKind::Conv {
                residual: Some(Residual { skip, .. }),
                ..
            } => vec![self.input, skip],
            _ => vec![self.input],
        }
    }
}

/// Ops in the order they run and the values between them.
pub struct Graph<'n> {
    pub values: Vec<Value>,
    pub ops: Vec<Op<'n>>,
}

impl<'n> Graph<'n> {
    /// The op whose state is `layer`'s: the one that computes it, first of its layers.
    pub fn op_computing(&self, layer: &Layer) -> Option<&Op<'n>> {
        self.ops
            .iter()
            .find(|op| op.state_layer().is_some_and(|own| std::ptr::eq(own, layer)))
    }

    /// The value the last op writes.
    pub fn result(&self) -> ValueId {
        self.values.len() - 1
    }

    /// How the plan table names where `value` comes from: the op that writes it (through
    /// views), or `input`.
    pub fn op_name(&self, value: ValueId) -> &str {
        match self.values[value].source {
            Source::Input => "input",
            Source::Op(op) => &self.ops[op].name,
            Source::View(of) => self.op_name(of),
        }
    }

    /// The value whose storage `value` is (itself unless it is a view).
    pub fn root(&self, value: ValueId) -> ValueId {
        match self.values[value].source {
            Source::View(of) => self.root(of),
            _ => value,
        }
    }

    /// Appends an op of run `run` reading `input`; returns the value it writes.
    fn push(&mut self, kind: OpKind<'n>, input: ValueId, run: usize) -> ValueId {
        let index = self.ops.len();
        let (field, name, output) = match kind {
            OpKind::Add { block, .. } => (block.field.clone(), block.name.clone(), block.output),
            _ => {
                let layers = kind.layers();
                let fields: Vec<String> = layers.iter().map(|l| l.field.to_string()).collect();
                let mut names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
                if let OpKind::Conv {
                    residual: Some(residual),
                    batchnorm,
                    ..
                } = &kind
                {
                    // Where the addition happens: after the convolution and its batchnorm.
                    names.insert(1 + usize::from(batchnorm.is_some()), &residual.block.name);
                }
                let last = layers.last().expect("an op computes a layer");
                (
                    format_ident!("{}", fields.join("_")),
                    names.join("+"),
                    last.output,
                )
            }
        };
        let source = match kind {
            OpKind::View(_) | OpKind::DropoutInPlace(_) => Source::View(input),
            _ => Source::Op(index),
        };
        self.values.push(Value {
            shape: output,
            source,
        });
        let output = self.values.len() - 1;
        self.ops.push(Op {
            kind,
            input,
            output,
            field,
            name,
            run,
        });
        output
    }
}

/// Both graphs of a network.
pub struct Plan<'n> {
    /// Every layer trained up to the logits: all but the head.
    pub train: Graph<'n>,
    /// A final softmax or sigmoid, run after the training graph (the loss fuses it).
    pub head: Option<&'n Layer>,
    /// Every layer but dropout, the head included.
    pub infer: Graph<'n>,
}

impl<'n> Plan<'n> {
    /// The training and inference graphs of `net`, each built unfused and rewritten by its
    /// passes.
    pub fn new(net: &'n Network) -> Self {
        let head = net.head();
        let train_keeps = |layer: &Layer| !head.is_some_and(|head| std::ptr::eq(layer, head));
        let infer_keeps = |layer: &Layer| !matches!(layer.kind, LayerKind::Dropout { .. });
        let graph = |keep: &dyn Fn(&Layer) -> bool| {
            Builder::graph(net.input, &net.layers, &net.steps, keep)
        };
        Plan {
            train: passes::run(graph(&train_keeps), &passes::TRAINING),
            head,
            infer: passes::run(graph(&infer_keeps), &passes::INFERENCE),
        }
    }

    /// The workspace's state fields, each once: one per training op that has any (a view has
    /// none), the head's, and that of any layer inference runs on its own that training fuses
    /// or views.
    pub fn states(&self) -> Vec<(&Ident, StateOf<'_>)> {
        let mut states: Vec<(&Ident, StateOf)> = Vec::new();
        let mut add = |field, of| {
            if !states.iter().any(|(f, _)| *f == field) {
                states.push((field, of));
            }
        };
        for op in &self.train.ops {
            match (&op.kind, op.state_layer()) {
                (OpKind::View(_), _) => {}
                (_, Some(layer)) => add(&op.field, StateOf::Layer(layer)),
                (OpKind::Add { block, .. }, None) => add(&op.field, StateOf::Residual(block)),
                (_, None) => unreachable!("only an addition has no layer's state"),
            }
        }
        if let Some(head) = self.head {
            add(&head.field, StateOf::Layer(head));
        }
        for op in &self.infer.ops {
            if let OpKind::Layer(layer) | OpKind::Shortcut { layer, .. } = op.kind {
                add(&op.field, StateOf::Layer(layer));
            }
        }
        states
    }

    /// The inference ops that fold batch normalisation into a convolution: each keeps the
    /// folded scale and bias in a workspace field named as the op.
    pub fn folding_ops(&self) -> Vec<&Op<'n>> {
        let folds = |op: &&Op| {
            matches!(
                op.kind,
                OpKind::Conv {
                    batchnorm: Some(_),
                    ..
                }
            )
        };
        self.infer.ops.iter().filter(folds).collect()
    }

    /// The training states that own their output, with the op's name, and the head's: what
    /// training keeps per sample and what `visit_activations` reports.
    pub fn trained_states(&self) -> Vec<(&Ident, &str)> {
        self.owning_ops()
            .map(|op| (&op.field, op.name.as_str()))
            .chain(self.head.map(|head| (&head.field, head.name.as_str())))
            .collect()
    }

    /// Values training keeps per sample: each owning op's output and its gradient (only the
    /// gradient of a convolution its pooling runs, whose output is never stored), and the
    /// head's.
    pub fn training_values(&self) -> usize {
        let op_values = self.owning_ops().map(|op| {
            let buffers = match op.kind {
                OpKind::LinearActivation { pooled: true, .. } => 1,
                _ => 2,
            };
            buffers * self.train.values[op.output].shape.len()
        });
        let head_values = self.head.map(|head| 2 * head.output.len());
        op_values.chain(head_values).sum()
    }

    /// The training ops that write storage of their own (not a view, not in place).
    fn owning_ops(&self) -> impl Iterator<Item = &Op<'n>> {
        let train = &self.train;
        let owns = |op: &&Op| matches!(train.values[op.output].source, Source::Op(_));
        train.ops.iter().filter(owns)
    }
}

/// What a workspace state field keeps the state of.
#[derive(Clone, Copy)]
pub enum StateOf<'n> {
    /// A layer's op (a `LayerState` of its type).
    Layer(&'n Layer),
    /// A residual block's addition (a `ResidualState`).
    Residual(&'n Block),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked network of a layer list.
    pub(super) fn network(layers: proc_macro2::TokenStream) -> Network {
        let def = syn::parse2(quote::quote!(Net<#layers>)).expect("it parses");
        crate::valid::validate(def).expect("it is valid")
    }

    /// The names of `ops`, in order.
    pub(super) fn names(ops: &[Op]) -> Vec<String> {
        ops.iter().map(|op| op.name.clone()).collect()
    }

    /// Training fuses the activation into the convolution and runs the max pooling through it,
    /// stops before the softmax, and scales in place where dropout may; inference folds the
    /// pooling into the convolution and drops dropout. The states, kept values and activations
    /// follow from the ops.
    #[test]
    fn a_small_cnn_fuses_and_keeps_what_backward_reads() {
        let net = network(quote::quote!(
            input(8, 8, 1) conv(4, 3) relu maxpool(2) dropout(0.5) flatten dense(3) softmax
        ));
        let plan = Plan::new(&net);
        assert_eq!(
            names(&plan.train.ops),
            ["conv1+relu1", "maxpool1", "dropout1", "flatten1", "dense1"]
        );
        assert!(matches!(plan.train.ops[2].kind, OpKind::DropoutInPlace(_)));
        assert_eq!(
            names(&plan.infer.ops),
            ["conv1+relu1+maxpool1", "flatten1", "dense1", "softmax1"]
        );
        let states: Vec<String> = plan.states().iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(
            states,
            ["conv1_relu1", "maxpool1", "dropout1", "dense1", "softmax1"]
        );
        // The pooled convolution keeps only its gradient (6x6x4); the pooling its output and
        // gradient (3x3x4 each); the dense layer and the head theirs (3 each).
        assert_eq!(
            plan.training_values(),
            6 * 6 * 4 + 2 * 3 * 3 * 4 + 2 * 3 + 2 * 3
        );
        let trained: Vec<&str> = plan.trained_states().iter().map(|(_, n)| *n).collect();
        assert_eq!(trained, ["conv1+relu1", "maxpool1", "dense1", "softmax1"]);
        assert!(plan.folding_ops().is_empty());
    }

    /// At inference a batch normalisation folds into the convolution before it, whose op then
    /// keeps the folded scale and bias.
    #[test]
    fn batch_normalisation_folds_into_the_convolution_at_inference() {
        let net = network(quote::quote!(input(6, 6, 2) conv(4, 3) batchnorm relu flatten dense(2)));
        let plan = Plan::new(&net);
        let folding = plan.folding_ops();
        assert_eq!(
            names(&plan.infer.ops),
            ["conv1+batchnorm1+relu1", "flatten1", "dense1"]
        );
        assert_eq!(folding.len(), 1);
        assert_eq!(folding[0].name, "conv1+batchnorm1+relu1");
    }
}
