//! A network's inference graph layer by layer, as exporters read it ([`Network::graph`]): each
//! node names its layer (the prefix of its parameters' names, `conv1`, `res1.shortcut`), says
//! what it computes with the attributes that decide it, and which values it reads. Value 0 is
//! the network's input and value `i + 1` is node `i`'s output, so a residual block's addition
//! can read its block's input as well as its layers' output. What a node computes is its
//! layer's [`LayerKind`], from the catalogue every part of constnet reads; its parameters are
//! the layer's (`weight`, `bias`; batch normalisation's `running_mean` and `running_var`
//! buffers), found by the node's name.
//!
//! [`Network::graph`]: crate::network::Network::graph

use constnet_catalogue::LayerKind;

use crate::layers::Layer;
use crate::shape::Shape;

/// One node of a network's inference graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The layer's name, which prefixes its parameters' names: `conv1`, `res1.conv2`; a
    /// residual block's addition is named as the block (`res1`).
    pub name: &'static str,
    /// What it computes: the layer's kind, read from the layer itself, so attributes a layer
    /// keeps at run time (batch normalisation's epsilon) are current.
    pub op: LayerKind,
    /// The values it reads: one, or two for [`LayerKind::Add`].
    pub inputs: &'static [usize],
    /// Its output shape, outermost first, without the batch axis.
    pub output: &'static [usize],
}

impl Node {
    /// The node of `layer`, named `name`, reading `inputs`.
    pub fn of<L: Layer>(name: &'static str, layer: &L, inputs: &'static [usize]) -> Self {
        Node {
            name,
            op: layer.kind(),
            inputs,
            output: <L::Output as Shape>::DIMS,
        }
    }

    /// The addition of residual block `name` (its layers' output and its shortcut's), making `S`.
    pub fn addition<S: Shape>(name: &'static str, inputs: &'static [usize]) -> Self {
        Node {
            name,
            op: LayerKind::Add,
            inputs,
            output: S::DIMS,
        }
    }
}
