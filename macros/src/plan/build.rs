//! The unfused graph of a network: one op per layer a pass runs, in the order written, and for
//! each residual block its layers' ops, its shortcut's and an addition. The rewrite passes
//! ([`super::passes`]) fuse from there.
//!
//! Every op belongs to a run: the ops between two block edges. Passes fuse only ops of one run,
//! so nothing fuses across a block's edge. An addition belongs to the run after its block, so
//! the activation written right after a block may join the addition. A layer left out of the
//! pass (dropout at inference) right after a block starts a run of its own, so that activation
//! is the layer written right after the block, not one after the layer left out.

use constnet_catalogue::Shape;

use super::{Graph, OpKind, Source, Value, ValueId};
use crate::valid::{Block, Layer, Step};

/// Builds the unfused graph of a network's items, keeping the layers a pass runs.
pub(super) struct Builder<'n, 'k> {
    graph: Graph<'n>,
    layers: &'n [Layer],
    /// Whether a layer takes part in the pass.
    keep: &'k dyn Fn(&Layer) -> bool,
    /// The value the next op reads.
    current: ValueId,
    /// The run the next op belongs to.
    run: usize,
}

impl<'n, 'k> Builder<'n, 'k> {
    /// The unfused graph of `steps`, fed the network input of shape `input`.
    pub(super) fn graph(
        input: Shape,
        layers: &'n [Layer],
        steps: &'n [Step],
        keep: &'k dyn Fn(&Layer) -> bool,
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
            current: 0,
            run: 0,
        };
        builder.steps(steps);
        builder.graph
    }

    /// The ops of a list of items.
    fn steps(&mut self, steps: &'n [Step]) {
        let mut after_block = false;
        for step in steps {
            match step {
                Step::Layer(index) => {
                    let layer = &self.layers[*index];
                    if (self.keep)(layer) {
                        self.push(OpKind::Layer(layer), self.current);
                    } else if after_block {
                        self.run += 1;
                    }
                    after_block = false;
                }
                Step::Residual(block) => {
                    self.block(block);
                    after_block = true;
                }
            }
        }
    }

    /// A residual block's ops: its layers', in runs of their own, its shortcut's, and the
    /// addition, in the run after the block.
    fn block(&mut self, block: &'n Block) {
        let input = self.current;
        let first_body_op = self.graph.ops.len();
        self.run += 1;
        self.steps(&block.body);
        let body = self.current;
        self.run += 1;
        let skip = match block.shortcut {
            Some(index) => {
                let layer = &self.layers[index];
                self.graph
                    .push(OpKind::Shortcut { layer, block }, input, self.run)
            }
            None => input,
        };
        let add = OpKind::Add {
            block,
            skip,
            first_body_op,
        };
        self.push(add, body);
    }

    /// Appends an op reading `input` to the current run; the next op reads its output.
    fn push(&mut self, kind: OpKind<'n>, input: ValueId) {
        self.current = self.graph.push(kind, input, self.run);
    }
}
