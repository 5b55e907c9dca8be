//! The compiled form of a checked network: the ops that run after fusion, the values they read
//! and write, and where each value lives. `expand` only writes a plan out.
//!
//! A plan is a graph: every op names the values it reads and the value it writes, and a value
//! is the network input, an op's output, or a view of another value (flatten: the same storage
//! seen as a flat vector). A residual block is its layers' ops, its shortcut's op if it has
//! one, and an [`OpKind::Add`] reading both the block's input (or its projection) and its
//! layers' output. Two plans are made from one network:
//! - training, up to the logits (all but a final softmax or sigmoid, which the loss fuses):
//!   each op keeps its output and the gradient of it, the state its
//!   backward reads;
//! - inference, dropout gone: each op's output takes the lowest-numbered buffer not holding a
//!   value some later op still reads ([`InferenceSlot::Buffer`]; two for a chain, one more per level of
//!   nested blocks), the last op writing the network's output.
//!
//! In training, dropout scales its input in place when the op before it allows (see
//! [`OpKind::DropoutInPlace`]); at inference it is gone.
//!
//! Fusion: a convolution or dense layer directly followed by relu, leaky_relu, sigmoid or tanh
//! becomes one op with the activation in its GEMM epilogue; its backward takes the activation's
//! derivative from the output, which the fused op keeps instead of the pre-activation. At
//! inference, a convolution also takes in the batch normalisation after it (folded into its
//! epilogue) and the pooling after its activation (each image's convolution output stays in
//! per-thread scratch, pooled while it is in cache). In training, max pooling right after a
//! fused convolution runs it the same way, and takes the activation's derivative in its
//! backward, from its own output: each window's maximum ([`OpKind::PoolThroughActivation`]).

use proc_macro2::Ident;
use quote::format_ident;

use constnet_catalogue::{InferenceSlot, LayerKind, OutputUse, Shape};

use crate::valid::{Block, Layer, Network, Step};

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

/// The inference storage of every value of a graph.
pub struct Slots {
    /// Each value's slot (`None` for the caller's input).
    pub of: Vec<Option<InferenceSlot>>,
    /// How many buffers the slots use.
    pub buffers: usize,
    /// The buffers to give back after each op: those of the values it was the last to read.
    pub released: Vec<Vec<(usize, ValueId)>>,
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

    /// Whether an op may overwrite `value`'s storage after the op that wrote it: that op's
    /// backward pass does not read its output, or reads only its sign. The caller's input is
    /// never overwritten.
    fn may_overwrite(&self, value: ValueId, pinned: &[ValueId]) -> bool {
        if pinned
            .iter()
            .any(|&kept| self.root(kept) == self.root(value))
        {
            return false;
        }
        let Source::Op(writer) = self.values[self.root(value)].source else {
            return false;
        };
        let sign_only = |layer: &Layer| layer.kind.output_in_backward() == OutputUse::SignOnly;
        match &self.ops[writer].kind {
            OpKind::Layer(layer) => layer.kind.output_in_backward() != OutputUse::Read,
            OpKind::LinearActivation { activation, .. }
            | OpKind::PoolThroughActivation { activation, .. } => sign_only(activation),
            OpKind::Shortcut { .. } | OpKind::Add { .. } => true,
            OpKind::View(_) | OpKind::DropoutInPlace(_) | OpKind::Conv { .. } => false,
        }
    }

    /// Appends an op reading `input`; returns the value it writes.
    fn push(&mut self, kind: OpKind<'n>, input: ValueId) -> ValueId {
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
        });
        output
    }

    /// Removes the last op if it is a convolution with nothing after it in its epilogue (batch
    /// normalisation folded in or not), so a residual addition can take its place there;
    /// returns the convolution, its batch normalisation and the value it read.
    fn pop_plain_conv(&mut self) -> Option<(&'n Layer, Option<&'n Layer>, ValueId)> {
        let last = self.ops.last()?;
        let found = match last.kind {
            OpKind::Layer(conv) if matches!(conv.kind, LayerKind::Conv { .. }) => (conv, None),
            OpKind::Conv {
                conv,
                batchnorm,
                activation: None,
                pool: None,
                residual: None,
            } => (conv, batchnorm),
            _ => return None,
        };
        let input = last.input;
        self.ops.pop();
        self.values.pop();
        Some((found.0, found.1, input))
    }

    /// Where inference keeps each value: every op's output takes the lowest buffer free of
    /// values a later op reads (a view shares its value's), the last op's goes to the output.
    pub fn slots(&self) -> Slots {
        let mut last_read = vec![0; self.values.len()];
        for (index, op) in self.ops.iter().enumerate() {
            for input in op.inputs() {
                last_read[self.root(input)] = index;
            }
        }
        let mut of: Vec<Option<InferenceSlot>> = vec![None; self.values.len()];
        let mut busy: Vec<bool> = Vec::new();
        let mut released = Vec::new();
        for (index, op) in self.ops.iter().enumerate() {
            of[op.output] = match self.values[op.output].source {
                Source::View(viewed) => of[viewed],
                _ if op.output == self.result() => Some(InferenceSlot::Output),
                _ => {
                    let free = busy.iter().position(|b| !b).unwrap_or(busy.len());
                    if free == busy.len() {
                        busy.push(false);
                    }
                    busy[free] = true;
                    Some(InferenceSlot::Buffer(free))
                }
            };
            let mut given = Vec::new();
            for input in op.inputs() {
                let root = self.root(input);
                if let (Some(InferenceSlot::Buffer(buffer)), true) =
                    (of[root], last_read[root] == index)
                    && busy[buffer]
                {
                    busy[buffer] = false;
                    given.push((buffer, root));
                }
            }
            released.push(given);
        }
        Slots {
            of,
            buffers: busy.len(),
            released,
        }
    }
}

/// Builds a graph from a network's items, keeping the layers a pass runs.
struct Builder<'n, 'k> {
    graph: Graph<'n>,
    layers: &'n [Layer],
    /// Whether a layer takes part in the pass.
    keep: &'k dyn Fn(&Layer) -> bool,
    inference: bool,
    /// The value the next op reads.
    current: ValueId,
    /// The inputs of the residual blocks being built, which their additions still read.
    pinned: Vec<ValueId>,
}

impl<'n, 'k> Builder<'n, 'k> {
    /// The graph of `steps` fed the network input of shape `input`.
    fn graph(
        input: Shape,
        layers: &'n [Layer],
        steps: &'n [Step],
        keep: &'k dyn Fn(&Layer) -> bool,
        inference: bool,
    ) -> Graph<'n> {
        let mut builder = Builder {
            graph: Graph {
                values: vec![Value {
                    shape: input,
                    source: Source::Input,
                }],
                ops: Vec::new(),
            },
            layers,
            keep,
            inference,
            current: 0,
            pinned: Vec::new(),
        };
        builder.steps(steps);
        builder.graph
    }

    /// The ops of a list of items: each run of layers between blocks fused as the module
    /// documentation says (never across a block's edge), and each block.
    fn steps(&mut self, steps: &'n [Step]) {
        let mut run: Vec<&'n Layer> = Vec::new();
        let mut rest = steps.iter();
        while let Some(step) = rest.next() {
            match step {
                Step::Layer(index) => {
                    let layer = &self.layers[*index];
                    if (self.keep)(layer) {
                        run.push(layer);
                    }
                }
                Step::Residual(block) => {
                    self.chain(&std::mem::take(&mut run));
                    let after = match rest.as_slice().first() {
                        Some(Step::Layer(index)) => Some(&self.layers[*index]),
                        _ => None,
                    };
                    if self.block(block, after) {
                        rest.next();
                    }
                }
            }
        }
        self.chain(&run);
    }

    /// The ops of consecutive layers, fused where the rules allow.
    fn chain(&mut self, layers: &[&'n Layer]) {
        let mut rest = layers;
        while !rest.is_empty() {
            let (kind, consumed) = match rest {
                [dropout, _, ..]
                    if matches!(dropout.kind, LayerKind::Dropout { .. })
                        && self.graph.may_overwrite(self.current, &self.pinned) =>
                {
                    (OpKind::DropoutInPlace(dropout), 1)
                }
                _ => next_op(rest, self.inference),
            };
            let kind = self.through_activation(kind);
            self.current = self.graph.push(kind, self.current);
            rest = &rest[consumed..];
        }
    }

    /// In training, `kind` as the op after the last one: max pooling directly after a fused
    /// convolution and activation, of a value no residual block reads, runs that op and takes
    /// the activation's derivative in its backward ([`OpKind::PoolThroughActivation`]), and the
    /// fused op is told so.
    fn through_activation(&mut self, kind: OpKind<'n>) -> OpKind<'n> {
        let OpKind::Layer(pool) = kind else {
            return kind;
        };
        let pinned = self
            .pinned
            .iter()
            .any(|&kept| self.graph.root(kept) == self.current);
        let last = self
            .graph
            .ops
            .last_mut()
            .filter(|op| op.output == self.current);
        match (last, &pool.kind) {
            (Some(op), LayerKind::Pool { max: true, .. }) if !self.inference && !pinned => {
                let OpKind::LinearActivation {
                    activation, pooled, ..
                } = &mut op.kind
                else {
                    return kind;
                };
                *pooled = true;
                OpKind::PoolThroughActivation { pool, activation }
            }
            _ => kind,
        }
    }

    /// A residual block's ops: its layers', its shortcut's, and the addition. At inference,
    /// when the block's layers end with a convolution (batch normalisation folded in, no
    /// activation), the addition joins that convolution's epilogue, with the activation `after`
    /// the block if it fuses there too; returns whether it took `after`.
    fn block(&mut self, block: &'n Block, after: Option<&'n Layer>) -> bool {
        let input = self.current;
        let first_body_op = self.graph.ops.len();
        self.pinned.push(input);
        self.steps(&block.body);
        self.pinned.pop();
        let body = self.current;
        let last_conv = if self.inference && self.graph.ops.len() > first_body_op {
            self.graph.pop_plain_conv()
        } else {
            None
        };
        let skip = match block.shortcut {
            Some(index) => {
                let layer = &self.layers[index];
                self.graph.push(OpKind::Shortcut { layer, block }, input)
            }
            None => input,
        };
        if let Some((conv, batchnorm, conv_input)) = last_conv {
            let activation = after.filter(|layer| (self.keep)(layer) && fuses_into_epilogue(layer));
            let kind = OpKind::Conv {
                conv,
                batchnorm,
                activation,
                pool: None,
                residual: Some(Residual { block, skip }),
            };
            self.current = self.graph.push(kind, conv_input);
            return activation.is_some();
        }
        let add = OpKind::Add {
            block,
            skip,
            first_body_op,
        };
        self.current = self.graph.push(add, body);
        false
    }
}

/// The op that starts at `layers[0]`, and how many layers it takes; `inference` fuses batch
/// normalisation and pooling into the convolution before them.
fn next_op<'n>(layers: &[&'n Layer], inference: bool) -> (OpKind<'n>, usize) {
    let first = layers[0];
    if inference && matches!(first.kind, LayerKind::Conv { .. }) {
        let mut taken = 1;
        let mut take = |fits: fn(&Layer) -> bool| {
            let layer = layers.get(taken).copied().filter(|layer| fits(layer));
            taken += usize::from(layer.is_some());
            layer
        };
        let batchnorm = take(|layer| matches!(layer.kind, LayerKind::BatchNorm { .. }));
        let activation = take(fuses_into_epilogue);
        let pool = take(|layer| matches!(layer.kind, LayerKind::Pool { .. }));
        if batchnorm.is_some() || pool.is_some() {
            let kind = OpKind::Conv {
                conv: first,
                batchnorm,
                activation,
                pool,
                residual: None,
            };
            return (kind, taken);
        }
    }
    match layers.get(1) {
        Some(next) if first.kind.is_linear() && fuses_into_epilogue(next) => (
            OpKind::LinearActivation {
                linear: first,
                activation: next,
                pooled: false,
            },
            2,
        ),
        // The network's result lives in the workspace, so it is never a view.
        Some(_) if matches!(first.kind, LayerKind::Flatten) => (OpKind::View(first), 1),
        _ => (OpKind::Layer(first), 1),
    }
}

/// Whether `layer` is an activation a GEMM epilogue applies (see the catalogue).
fn fuses_into_epilogue(layer: &Layer) -> bool {
    layer.kind.fuses_into_epilogue()
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
    pub fn new(net: &'n Network) -> Self {
        let head = net.head();
        let train_keeps = |layer: &Layer| !head.is_some_and(|head| std::ptr::eq(layer, head));
        let infer_keeps = |layer: &Layer| !matches!(layer.kind, LayerKind::Dropout { .. });
        let (layers, steps) = (&net.layers[..], &net.steps[..]);
        Plan {
            train: Builder::graph(net.input, layers, steps, &train_keeps, false),
            head,
            infer: Builder::graph(net.input, layers, steps, &infer_keeps, true),
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
    fn network(layers: proc_macro2::TokenStream) -> Network {
        let def = syn::parse2(quote::quote!(Net<#layers>)).expect("it parses");
        crate::valid::validate(def).expect("it is valid")
    }

    fn names(ops: &[Op]) -> Vec<String> {
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
