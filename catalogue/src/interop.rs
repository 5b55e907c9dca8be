//! How each layer kind is written by other frameworks: the ONNX operators the exporter writes
//! for it ([`LayerKind::onnx`]) and how PyTorch lays out its tensors
//! ([`LayerKind::torch_layout`]). The exporter and the PyTorch reader in the runtime follow
//! these; an importer reads them the other way.

use crate::LayerKind;

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
    use crate::Padding;

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
