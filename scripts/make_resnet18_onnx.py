"""Writes a ResNet-18-shaped ONNX model with random weights, laid out as PyTorch exports
torchvision's `resnet18` (NCHW 3x224x224 input; a 7x7 stride-2 convolution padded 3, batch norm
with eps 1e-5, ReLU, 3x3 stride-2 max pooling padded 1; four stages of two basic blocks, 64 to
512 channels, each stage after the first starting with a stride-2 block whose shortcut is a 1x1
convolution and a batch norm; global average pooling, flatten, a 1000-way linear layer), and
ONNX Runtime's output for one input beside it, for `scripts/resnet18_import.sh`.

Usage: python3 scripts/make_resnet18_onnx.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from safetensors.numpy import save_file

from make_onnx_fixtures import Builder

RNG = np.random.default_rng(18)


class Graph(Builder):
    """The fixtures' graph builder, with the two pieces a ResNet repeats."""

    def conv_bn(self, x, c_in, c_out, k, stride, pad, relu=True):
        scale = np.sqrt(2.0 / (c_in * k * k))
        w = self.constant("conv.weight", RNG.normal(0, scale, (c_out, c_in, k, k)))
        y = self.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4)
        stats = [RNG.uniform(0.5, 1.5, c_out), RNG.uniform(-0.1, 0.1, c_out),
                 RNG.uniform(-0.1, 0.1, c_out), RNG.uniform(0.5, 1.5, c_out)]
        names = [self.constant("bn", s) for s in stats]
        y = self.node("BatchNormalization", [y, *names], epsilon=1e-5)
        return self.node("Relu", [y]) if relu else y

    def block(self, x, c_in, c_out, stride):
        y = self.conv_bn(x, c_in, c_out, 3, stride, 1)
        y = self.conv_bn(y, c_out, c_out, 3, 1, 1, relu=False)
        shortcut = x if stride == 1 and c_in == c_out else self.conv_bn(
            x, c_in, c_out, 1, stride, 0, relu=False)
        return self.node("Relu", [self.node("Add", [y, shortcut])])


def resnet18():
    g = Graph()
    x = g.conv_bn("input", 3, 64, 7, 2, 3)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, width in enumerate([64, 128, 256, 512]):
        for index in range(2):
            stride = 2 if stage > 0 and index == 0 else 1
            x = g.block(x, channels, width, stride)
            channels = width
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    w = g.constant("fc.weight", RNG.normal(0, 0.01, (1000, 512)))
    b = g.constant("fc.bias", RNG.uniform(-0.1, 0.1, 1000))
    x = g.node("Gemm", [x, w, b], transB=1)
    graph = helper.make_graph(
        g.nodes, "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 1000])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(resnet18(), out / "resnet18.onnx")
    import onnxruntime
    session = onnxruntime.InferenceSession(str(out / "resnet18.onnx"),
                                           providers=["CPUExecutionProvider"])
    x = RNG.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    y = session.run(None, {"input": x})[0]
    save_file({"input": x, "output": y}, out / "resnet18.io.safetensors")


if __name__ == "__main__":
    main()
