//! The rewrite passes that turn a network's unfused graph ([`super::build`]) into the ops that
//! run. Each pass is named, finds its pattern in a graph, and says which ops become which op;
//! [`run`] rebuilds the graph with those ops replaced, so each pass sees what the passes before
//! it made. A pass fuses only ops of one run (never across a block's edge) and never changes
//! what is computed or in what order sums are taken: only which op computes it and where its
//! values live.
//!
//! Training runs [`TRAINING`]; inference runs [`INFERENCE`]. Which algorithm and tile each
//! convolution runs is decided at run time, from the batch size and the pass's context, so it
//! is not a pass here.

use constnet_catalogue::{LayerKind, OutputUse, Padding};

use super::{Graph, Op, OpKind, Residual, Source, Value, ValueId};
use crate::valid::Layer;

/// One named rewrite of a graph.
pub struct Pass {
    /// How the plan table and tests name the pass.
    pub name: &'static str,
    /// The replacements the pass makes in a graph.
    find: for<'n> fn(&Graph<'n>) -> Vec<Rewrite<'n>>,
}

/// One replacement: the ops `consumed` (indices into the graph, ascending) become one op of
/// `kind` reading `input`, which runs where the op `at` (one of them) ran. An op consumed
/// before `at` is read by no op between it and `at` but those consumed.
struct Rewrite<'n> {
    at: usize,
    consumed: Vec<usize>,
    kind: OpKind<'n>,
    input: ValueId,
}

impl<'n> Rewrite<'n> {
    /// Op `index` becomes an op of `kind`, reading what it read.
    fn replace(graph: &Graph<'n>, index: usize, kind: OpKind<'n>) -> Self {
        Rewrite {
            at: index,
            consumed: vec![index],
            kind,
            input: graph.ops[index].input,
        }
    }

    /// Op `first` and the op `next` that reads its output become one op of `kind`.
    fn merge(graph: &Graph<'n>, first: usize, next: usize, kind: OpKind<'n>) -> Self {
        Rewrite {
            at: first,
            consumed: vec![first, next],
            kind,
            input: graph.ops[first].input,
        }
    }
}

/// A convolution or dense layer and the activation after it become one op, the activation
/// applied in the GEMM's epilogue to each output as it is written; after batch-norm folding,
/// the folded convolution takes the activation the same way.
pub const ACTIVATION_EPILOGUE: Pass = Pass {
    name: "activation epilogue",
    find: activation_epilogue,
};

/// At inference, a convolution and the batch normalisation after it become one op: the
/// normalisation's scale and shift per channel fold into the epilogue.
pub const BATCHNORM_FOLDING: Pass = Pass {
    name: "batch-norm folding",
    find: batchnorm_folding,
};

/// At inference, a convolution (with what its epilogue applies) and the pooling after it
/// become one op: each image's convolution output stays in per-thread scratch and is pooled
/// from there while in cache, never stored whole.
pub const POOLING_FROM_SCRATCH: Pass = Pass {
    name: "pooling from scratch",
    find: pooling_from_scratch,
};

/// At inference, a residual block whose layers end in a convolution (batch normalisation
/// folded in or not, nothing in its epilogue) adds the block's input, or its projection, in
/// that convolution's epilogue, with the activation written right after the block if it fuses.
pub const RESIDUAL_EPILOGUE: Pass = Pass {
    name: "residual epilogue",
    find: residual_epilogue,
};

/// A flatten followed by another op of its run is a view of its input: no work, no storage.
/// (The last op's output lives in the workspace, so it is never a view.)
pub const FLATTEN_VIEW: Pass = Pass {
    name: "view",
    find: flatten_view,
};

/// In training, max pooling right after a convolution with its activation in the epilogue
/// runs that op: it pools each image's convolution output from per-thread scratch, recording
/// each window's maximum, and its backward takes the activation's derivative at each maximum
/// (its own output), sparing the activation a pass over every value.
pub const POOL_THROUGH_ACTIVATION: Pass = Pass {
    name: "pool through activation",
    find: pool_through_activation,
};

/// In training, dropout followed by another op of its run scales its input's storage in place
/// (and the gradient of it in backward) when the op that wrote that storage does not read it in
/// its own backward, or reads only its sign (which dropout's positive scale keeps; where it
/// zeroes a value, the gradient there is zero too), and no later op reads it.
pub const DROPOUT_IN_PLACE: Pass = Pass {
    name: "dropout in place",
    find: dropout_in_place,
};

/// The passes of the training graph, in order.
pub const TRAINING: [Pass; 4] = [
    ACTIVATION_EPILOGUE,
    POOL_THROUGH_ACTIVATION,
    FLATTEN_VIEW,
    DROPOUT_IN_PLACE,
];

/// The passes of the inference graph, in order.
pub const INFERENCE: [Pass; 5] = [
    BATCHNORM_FOLDING,
    ACTIVATION_EPILOGUE,
    POOLING_FROM_SCRATCH,
    RESIDUAL_EPILOGUE,
    FLATTEN_VIEW,
];

/// `graph` rewritten by each of `passes` in turn.
pub fn run<'n>(graph: Graph<'n>, passes: &[Pass]) -> Graph<'n> {
    passes.iter().fold(graph, |graph, pass| {
        let rewrites = (pass.find)(&graph);
        rewrite(graph, rewrites)
    })
}

/// `old` with `rewrites` made: the graph rebuilt op by op, each rewrite's op where its `at`
/// op was, the ops it consumed gone, every other op as it was. Values are numbered anew in
/// the order ops write them.
fn rewrite<'n>(old: Graph<'n>, rewrites: Vec<Rewrite<'n>>) -> Graph<'n> {
    let mut consumed = vec![false; old.ops.len()];
    let mut at: Vec<Option<Rewrite>> = (0..old.ops.len()).map(|_| None).collect();
    for rewrite in rewrites {
        for &index in &rewrite.consumed {
            assert!(
                !consumed[index],
                "two rewrites of one pass consume op {index}"
            );
            consumed[index] = true;
        }
        let anchor = rewrite.at;
        at[anchor] = Some(rewrite);
    }
    let mut new = Graph {
        values: vec![Value {
            shape: old.values[0].shape,
            source: Source::Input,
        }],
        ops: Vec::new(),
    };
    let mut value_of = vec![0; old.values.len()];
    let mut op_of = vec![0; old.ops.len()];
    for (index, op) in old.ops.iter().enumerate() {
        let (kind, input, replaced) = match at[index].take() {
            Some(rewrite) => (rewrite.kind, rewrite.input, rewrite.consumed),
            None if consumed[index] => continue,
            None => (op.kind, op.input, vec![index]),
        };
        let kind = kind.renumbered(&value_of, &op_of);
        let output = new.push(kind, value_of[input], op.run);
        for gone in replaced {
            value_of[old.ops[gone].output] = output;
            op_of[gone] = new.ops.len() - 1;
        }
    }
    new
}

/// The op after op `index`, if it reads op `index`'s output and belongs to its run.
fn follower(graph: &Graph, index: usize) -> Option<usize> {
    let (op, next) = (&graph.ops[index], graph.ops.get(index + 1)?);
    (next.input == op.output && next.run == op.run).then_some(index + 1)
}

/// The layer op `index` runs on its own, if it is one.
fn single_layer<'n>(graph: &Graph<'n>, index: usize) -> Option<&'n Layer> {
    match graph.ops[index].kind {
        OpKind::Layer(layer) => Some(layer),
        _ => None,
    }
}

/// The activation run on its own by the op after op `index`, if that op reads op `index`'s
/// output in its run and a GEMM epilogue applies it.
fn fusing_activation<'n>(graph: &Graph<'n>, index: usize) -> Option<(usize, &'n Layer)> {
    let next = follower(graph, index)?;
    let layer = single_layer(graph, next).filter(|layer| layer.kind.fuses_into_epilogue())?;
    Some((next, layer))
}

/// Whether `layer` is a convolution (not depthwise).
fn is_conv(layer: &Layer) -> bool {
    matches!(layer.kind, LayerKind::Conv { .. })
}

/// Each op of `graph` that `find_at` rewrites, first to last, skipping the ops a rewrite
/// before consumed.
fn each_op<'n>(
    graph: &Graph<'n>,
    mut find_at: impl FnMut(usize) -> Option<Rewrite<'n>>,
) -> Vec<Rewrite<'n>> {
    let mut rewrites: Vec<Rewrite> = Vec::new();
    for index in 0..graph.ops.len() {
        if rewrites.iter().any(|r| r.consumed.contains(&index)) {
            continue;
        }
        rewrites.extend(find_at(index));
    }
    rewrites
}

fn activation_epilogue<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    each_op(graph, |index| {
        let (next, activation) = fusing_activation(graph, index)?;
        let kind = match graph.ops[index].kind {
            OpKind::Layer(linear) if linear.kind.is_linear() => OpKind::LinearActivation {
                linear,
                activation,
                pooled: false,
            },
            OpKind::Conv {
                conv,
                batchnorm: batchnorm @ Some(_),
                activation: None,
                pool: None,
                residual: None,
            } => OpKind::Conv {
                conv,
                batchnorm,
                activation: Some(activation),
                pool: None,
                residual: None,
            },
            _ => return None,
        };
        Some(Rewrite::merge(graph, index, next, kind))
    })
}

fn batchnorm_folding<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    each_op(graph, |index| {
        let conv = single_layer(graph, index).filter(|layer| layer.kind.folds_batchnorm())?;
        let next = follower(graph, index)?;
        let batchnorm = single_layer(graph, next)
            .filter(|layer| matches!(layer.kind, LayerKind::BatchNorm { .. }))?;
        let kind = OpKind::Conv {
            conv,
            batchnorm: Some(batchnorm),
            activation: None,
            pool: None,
            residual: None,
        };
        Some(Rewrite::merge(graph, index, next, kind))
    })
}

fn pooling_from_scratch<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    each_op(graph, |index| {
        let next = follower(graph, index)?;
        // A padded pooling clips its windows to the image, which the convolution's row walk
        // does not.
        let pool = single_layer(graph, next).filter(|layer| {
            matches!(
                layer.kind,
                LayerKind::Pool {
                    padding: Padding::Valid,
                    ..
                }
            )
        })?;
        let (conv, batchnorm, activation) = match graph.ops[index].kind {
            OpKind::Layer(conv) if is_conv(conv) => (conv, None, None),
            OpKind::LinearActivation {
                linear, activation, ..
            } if is_conv(linear) => (linear, None, Some(activation)),
            OpKind::Conv {
                conv,
                batchnorm,
                activation,
                pool: None,
                residual: None,
            } if is_conv(conv) => (conv, batchnorm, activation),
            _ => return None,
        };
        let kind = OpKind::Conv {
            conv,
            batchnorm,
            activation,
            pool: Some(pool),
            residual: None,
        };
        Some(Rewrite::merge(graph, index, next, kind))
    })
}

fn residual_epilogue<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    each_op(graph, |index| {
        let OpKind::Add {
            block,
            skip,
            first_body_op,
        } = graph.ops[index].kind
        else {
            return None;
        };
        let add = &graph.ops[index];
        let Source::Op(last) = graph.values[add.input].source else {
            return None;
        };
        let (conv, batchnorm) = match graph.ops[last].kind {
            OpKind::Layer(conv) if is_conv(conv) => (conv, None),
            OpKind::Conv {
                conv,
                batchnorm,
                activation: None,
                pool: None,
                residual: None,
            } if is_conv(conv) => (conv, batchnorm),
            _ => return None,
        };
        if last < first_body_op {
            return None;
        }
        let after = fusing_activation(graph, index);
        let kind = OpKind::Conv {
            conv,
            batchnorm,
            activation: after.map(|(_, activation)| activation),
            pool: None,
            residual: Some(Residual { block, skip }),
        };
        let mut consumed = vec![last, index];
        consumed.extend(after.map(|(next, _)| next));
        Some(Rewrite {
            at: index,
            consumed,
            kind,
            input: graph.ops[last].input,
        })
    })
}

fn flatten_view<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    each_op(graph, |index| {
        let flatten =
            single_layer(graph, index).filter(|layer| matches!(layer.kind, LayerKind::Flatten))?;
        follower(graph, index)?;
        Some(Rewrite::replace(graph, index, OpKind::View(flatten)))
    })
}

fn pool_through_activation<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    let mut rewrites = Vec::new();
    for (index, op) in graph.ops.iter().enumerate() {
        let OpKind::LinearActivation {
            linear,
            activation,
            pooled: false,
        } = op.kind
        else {
            continue;
        };
        let Some(next) = follower(graph, index) else {
            continue;
        };
        let is_max_pool = |layer: &&Layer| matches!(layer.kind, LayerKind::Pool { max: true, .. });
        if let Some(pool) = single_layer(graph, next).filter(is_max_pool) {
            let pooled = OpKind::LinearActivation {
                linear,
                activation,
                pooled: true,
            };
            rewrites.push(Rewrite::replace(graph, index, pooled));
            let through = OpKind::PoolThroughActivation { pool, activation };
            rewrites.push(Rewrite::replace(graph, next, through));
        }
    }
    rewrites
}

fn dropout_in_place<'n>(graph: &Graph<'n>) -> Vec<Rewrite<'n>> {
    each_op(graph, |index| {
        let dropout = single_layer(graph, index)
            .filter(|layer| matches!(layer.kind, LayerKind::Dropout { .. }))?;
        follower(graph, index)?;
        may_overwrite(graph, index)
            .then(|| Rewrite::replace(graph, index, OpKind::DropoutInPlace(dropout)))
    })
}

/// Whether op `index` may overwrite the storage of the value it reads: the op that wrote that
/// storage does not read it in its own backward, or reads only its sign, and no op after
/// `index` reads it (a residual block's addition or shortcut reading the block's input). The
/// caller's input is never overwritten.
fn may_overwrite(graph: &Graph, index: usize) -> bool {
    let storage = graph.root(graph.ops[index].input);
    let read_later = graph.ops[index + 1..]
        .iter()
        .any(|op: &Op| op.inputs().iter().any(|&v| graph.root(v) == storage));
    let Source::Op(writer) = graph.values[storage].source else {
        return false;
    };
    let sign_only = |layer: &Layer| layer.kind.output_in_backward() == OutputUse::SignOnly;
    !read_later
        && match &graph.ops[writer].kind {
            OpKind::Layer(layer) => layer.kind.output_in_backward() != OutputUse::Read,
            OpKind::LinearActivation { activation, .. }
            | OpKind::PoolThroughActivation { activation, .. } => sign_only(activation),
            OpKind::Shortcut { .. } | OpKind::Add { .. } => true,
            OpKind::View(_) | OpKind::DropoutInPlace(_) | OpKind::Conv { .. } => false,
        }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
    use crate::plan::build::Builder;
    use crate::plan::tests::{names, network};
    use crate::valid::Network;

    /// The unfused graph of `net` for training (every layer kept) or inference (dropout gone).
    fn unfused(net: &Network, inference: bool) -> Graph<'_> {
        let keep = |layer: &Layer| !(inference && matches!(layer.kind, LayerKind::Dropout { .. }));
        Builder::graph(net.input, &net.layers, &net.steps, &keep)
    }

    /// The op names after `passes` rewrite the unfused graph.
    fn after(net: &Network, inference: bool, passes: &[Pass]) -> Vec<String> {
        names(&run(unfused(net, inference), passes).ops)
    }

    #[test]
    fn the_activation_after_a_product_joins_its_epilogue_within_a_run() {
        let net = network(quote!(input(8) dense(4) relu dense(2) tanh softmax));
        let ops = after(&net, false, &[ACTIVATION_EPILOGUE]);
        assert_eq!(ops, ["dense1+relu1", "dense2+tanh1", "softmax1"]);
        // Softmax has no derivative the output alone gives, and a block's edge splits runs.
        let net = network(quote!(input(4) dense(4) residual(relu dense(4)) sigmoid));
        let ops = after(&net, false, &[ACTIVATION_EPILOGUE]);
        assert_eq!(
            ops,
            ["dense1", "res1.relu1", "res1.dense1", "res1", "sigmoid1"]
        );
    }

    #[test]
    fn batch_normalisation_folds_into_a_convolution_only() {
        let net =
            network(quote!(input(6, 6, 2) conv(4, 3) batchnorm relu flatten dense(3) batchnorm));
        let passes = [BATCHNORM_FOLDING, ACTIVATION_EPILOGUE];
        let ops = after(&net, true, &passes);
        assert_eq!(
            ops,
            ["conv1+batchnorm1+relu1", "flatten1", "dense1", "batchnorm2"]
        );
        let graph = run(unfused(&net, true), &passes);
        assert!(matches!(
            graph.ops[0].kind,
            OpKind::Conv {
                batchnorm: Some(_),
                activation: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_depthwise_convolution_folds_batchnorm_and_takes_its_activation() {
        let net = network(quote!(
            input(8, 8, 4) dwconv(3, padding = 1) batchnorm relu dwconv(3) relu maxpool(2)
        ));
        let ops = after(&net, true, &INFERENCE);
        assert_eq!(
            ops,
            ["dwconv1+batchnorm1+relu1", "dwconv2+relu2", "maxpool1"]
        );
    }

    #[test]
    fn pooling_joins_the_convolution_before_it_at_inference() {
        let net = network(quote!(input(8, 8, 1) conv(4, 3) relu maxpool(2) conv(4, 1) avgpool(3)));
        let passes = [ACTIVATION_EPILOGUE, POOLING_FROM_SCRATCH];
        let ops = after(&net, true, &passes);
        assert_eq!(ops, ["conv1+relu1+maxpool1", "conv2+avgpool1"]);
        // The values are renumbered: the input and one output per op.
        let graph = run(unfused(&net, true), &passes);
        assert_eq!(graph.values.len(), 3);
        assert_eq!((graph.ops[1].input, graph.ops[1].output), (1, 2));
        // A padded pooling stays an op of its own; all-zero pads are no padding.
        let net = network(quote!(
            input(8, 8, 1) conv(4, 3) maxpool(3, stride = 2, padding = 1)
            conv(4, 1) maxpool(2, padding = (0, 0, 0, 0))
        ));
        let ops = after(&net, true, &passes);
        assert_eq!(ops, ["conv1", "maxpool1", "conv2+maxpool2"]);
    }

    #[test]
    fn a_block_ending_in_a_convolution_adds_its_input_in_the_epilogue() {
        let net = network(quote!(
            input(6, 6, 4) residual(conv(4, 3, padding = same) batchnorm) relu flatten
        ));
        let ops = after(&net, true, &INFERENCE);
        assert_eq!(ops, ["res1.conv1+res1.batchnorm1+res1+relu1", "flatten1"]);
        let graph = run(unfused(&net, true), &INFERENCE);
        let OpKind::Conv {
            residual: Some(residual),
            ..
        } = graph.ops[0].kind
        else {
            panic!("the block is one convolution");
        };
        assert_eq!((graph.ops[0].input, residual.skip), (0, 0));
        // A layer left out between the block and the activation keeps the activation apart;
        // a block that does not end in a convolution keeps its addition.
        let net = network(quote!(
            input(6, 6, 4) residual(conv(4, 3, padding = same)) dropout(0.5) relu
            residual(conv(4, 3, padding = same) relu) flatten
        ));
        let ops = after(&net, true, &INFERENCE);
        assert_eq!(
            ops,
            [
                "res1.conv1+res1",
                "relu1",
                "res2.conv1+res2.relu1",
                "res2",
                "flatten1"
            ]
        );
    }

    #[test]
    fn flatten_is_a_view_unless_it_ends_its_run() {
        let net = network(quote!(input(2, 2, 1) flatten dense(2) residual(flatten) flatten));
        let graph = run(unfused(&net, false), &[FLATTEN_VIEW]);
        let views: Vec<bool> = graph
            .ops
            .iter()
            .map(|op| matches!(op.kind, OpKind::View(_)))
            .collect();
        assert_eq!(
            names(&graph.ops),
            ["flatten1", "dense1", "res1.flatten1", "res1", "flatten2"]
        );
        assert_eq!(views, [true, false, false, false, false]);
    }

    #[test]
    fn max_pooling_runs_the_convolution_before_it_in_training() {
        let net =
            network(quote!(input(8, 8, 1) conv(4, 3) relu maxpool(2) conv(4, 1) relu avgpool(2)));
        let graph = run(unfused(&net, false), &TRAINING);
        assert_eq!(
            names(&graph.ops),
            ["conv1+relu1", "maxpool1", "conv2+relu2", "avgpool1"]
        );
        assert!(matches!(
            graph.ops[0].kind,
            OpKind::LinearActivation { pooled: true, .. }
        ));
        assert!(matches!(
            graph.ops[1].kind,
            OpKind::PoolThroughActivation { .. }
        ));
        assert!(matches!(
            graph.ops[2].kind,
            OpKind::LinearActivation { pooled: false, .. }
        ));
        assert!(matches!(graph.ops[3].kind, OpKind::Layer(_)));
    }

    #[test]
    fn dropout_scales_in_place_only_what_no_one_reads_again() {
        let in_place = |layers| {
            let net = network(layers);
            let graph = run(unfused(&net, false), &TRAINING);
            let kinds = graph
                .ops
                .iter()
                .map(|op| matches!(op.kind, OpKind::DropoutInPlace(_)));
            kinds.collect::<Vec<bool>>()
        };
        // After relu (its sign is all backward reads): in place.
        assert_eq!(
            in_place(quote!(input(4) dense(4) relu dropout(0.5) dense(2))),
            [false, true, false]
        );
        // After tanh (backward reads its output), or last in its run: a copy.
        assert_eq!(
            in_place(quote!(input(4) dense(4) tanh dropout(0.5) dense(2))),
            [false; 3]
        );
        assert_eq!(
            in_place(quote!(input(4) dense(4) dropout(0.5))),
            [false, false]
        );
        // The input of a block, which its addition reads again: a copy.
        assert_eq!(
            in_place(quote!(input(4) dense(4) residual(dropout(0.5) dense(4)))),
            [false, false, false, false]
        );
    }
}
