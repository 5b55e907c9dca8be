//! A network's inference graph layer by layer, as exporters read it ([`Network::graph`]): each
//! node names its layer (the prefix of its parameters' names, `conv1`, `res1.shortcut`), says
//! what it computes with the attributes that decide it, and which values it reads. Value 0 is
//! the network's input and value `i + 1` is node `i`'s output, so a residual block's addition
//! can read its block's input as well as its layers' output.
//!
//! [`Network::graph`]: crate::network::Network::graph

/// What a node computes. Parameters are the layer's (`weight`, `bias`; batch normalisation's
/// `running_mean` and `running_var` buffers), found by the node's name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NodeOp {
    /// 2-D convolution; `weight` is `[kernel, kernel, in_channels, filters]`.
    Conv {
        /// Output channels.
        filters: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Step between windows.
        stride: usize,
        /// `same` padding (zeros, the extra row or column after), else `valid`.
        same: bool,
    },
    /// Depthwise convolution, one filter per channel; `weight` is `[kernel, kernel, channels]`.
    DepthwiseConv {
        /// Kernel height and width.
        kernel: usize,
        /// Step between windows.
        stride: usize,
        /// `same` padding, else `valid`.
        same: bool,
    },
    /// Max or average pooling over `size`x`size` windows, without padding.
    Pool {
        /// Maximum, else mean.
        max: bool,
        /// Window height and width.
        size: usize,
        /// Step between windows.
        stride: usize,
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
    /// An image to a vector of its values in HWC order.
    Flatten,
    /// `max(x, 0)`.
    Relu,
    /// `x` if positive, else `alpha · x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the vector.
    Softmax,
    /// Dropout: the identity at inference.
    Dropout,
    /// `weight · (x − running_mean) / sqrt(running_var + epsilon) + bias` per channel.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// A layer type of the user's (`layer(T)`): not describable.
    Custom,
    /// The sum of the node's two inputs: a residual block's end.
    Add,
}

/// One node of a network's inference graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The layer's name, which prefixes its parameters' names: `conv1`, `res1.conv2`; a
    /// residual block's addition is named as the block (`res1`).
    pub name: &'static str,
    /// What it computes.
    pub op: NodeOp,
    /// The values it reads: one, or two for [`NodeOp::Add`].
    pub inputs: &'static [usize],
    /// Its output shape, outermost first, without the batch axis.
    pub output: &'static [usize],
}
