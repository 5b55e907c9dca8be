"""Writes the ONNX models `tests/onnx_import.rs` imports, with onnx.helper and numpy (no torch).

Each model is laid out as PyTorch's exporter writes it (NCHW input, OIHW kernels without biases
before a batch normalisation, eps 1e-5, symmetric pads on stride-2 convolutions, residual blocks
joined by `Add`), except `keras_nhwc.onnx`, laid out as tf2onnx writes a Keras model (NHWC input
transposed to NCHW, `auto_pad = SAME_UPPER`, transposed back before flattening). Beside each
model, `<name>.io.safetensors` holds four inputs (in the model's layout) and the outputs this
file's float64 forward pass computes for them: the fixtures the Rust tests compare with.
`keras_tf2onnx.onnx` is a Keras model converted by tf2onnx itself, its expected outputs Keras's
(made only where TensorFlow and tf2onnx are installed; kept otherwise). Two more
models must be refused: `unsupported_op.onnx` (an LRN node) and `shape_mismatch.onnx` (a dense
weight for the wrong number of inputs).

With onnxruntime installed, each model also runs in ONNX Runtime and the worst relative
difference from the float64 forward pass is printed.

Usage: python3 scripts/make_onnx_fixtures.py [OUT_DIR]   (default: tests/fixtures/onnx)
"""

import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

RNG = np.random.default_rng(20261207)


# ---- The float64 forward pass of each operator, NCHW. ----

def pad_image(x, pads, value):
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv(x, w, b=None, stride=1, pads=(0, 0, 0, 0), group=1):
    x = pad_image(x, pads, 0.0)
    n, c, h, wd = x.shape
    f, per_group, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    y = np.zeros((n, f, oh, ow))
    per_out = f // group
    for o in range(f):
        g = o // per_out
        xs = x[:, g * per_group:(g + 1) * per_group]
        for i in range(oh):
            for j in range(ow):
                window = xs[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
                y[:, o, i, j] = np.tensordot(window, w[o], axes=([1, 2, 3], [0, 1, 2]))
    if b is not None:
        y += b[None, :, None, None]
    return y


def pool(x, k, stride, pads, kind):
    """Max or average pooling; padding takes no part (ONNX's count_include_pad = 0)."""
    padded = pad_image(x, pads, np.nan)
    n, c, h, w = padded.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, :, i, j] = np.nanmax(window, axis=(2, 3)) if kind == "max" else np.nanmean(
                window, axis=(2, 3))
    return y


def batchnorm(x, gamma, beta, mean, var, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(
        shape) + beta.reshape(shape)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


# ---- Building models. ----

class Builder:
    """Nodes and float32 initializers of one graph, each weight kept in float64 as well."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, what):
        self.count += 1
        return f"{what}_{self.count}"

    def constant(self, what, value, dtype=np.float32):
        name = self.name(what)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, what, shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale or 1 / math.sqrt(fan_in)
        value = RNG.uniform(-scale, scale, shape).astype(np.float32)
        return self.constant(what, value), value.astype(np.float64)

    def node(self, op, inputs, **attributes):
        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def model(self, input_shape, output, output_shape):
        graph = helper.make_graph(
            self.nodes, "imported",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", *output_shape])],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        return model


class Net:
    """A value in the graph and in the float64 forward pass, side by side."""

    def __init__(self, builder, name, value):
        self.b, self.name, self.value = builder, name, value

    def then(self, op, value, *inputs, **attributes):
        return Net(self.b, self.b.node(op, [self.name, *inputs], **attributes), value)

    def conv(self, filters, k, stride=1, pads=(0, 0, 0, 0), group=1, bias=True):
        channels = self.value.shape[1]
        w_name, w = self.b.weight("conv.weight", (filters, channels // group, k, k))
        inputs, b = [w_name], None
        if bias:
            b_name, b = self.b.weight("conv.bias", (filters,), 0.5)
            inputs.append(b_name)
        onnx_pads = [pads[0], pads[1], pads[2], pads[3]]
        value = conv(self.value, w, b, stride, pads, group)
        return self.then("Conv", value, *inputs, kernel_shape=[k, k], strides=[stride, stride],
                         pads=onnx_pads, group=group)

    def batchnorm(self, eps=1e-5):
        c = self.value.shape[1]
        gamma = RNG.uniform(0.5, 1.5, c)
        beta, mean = RNG.uniform(-0.5, 0.5, c), RNG.uniform(-0.5, 0.5, c)
        var = RNG.uniform(0.3, 2.0, c)
        names = [self.b.constant(n, v) for n, v in
                 [("bn.scale", gamma), ("bn.bias", beta), ("bn.mean", mean), ("bn.var", var)]]
        cast = [np.float32(v).astype(np.float64) for v in (gamma, beta, mean, var)]
        value = batchnorm(self.value, *cast, eps=eps)
        return self.then("BatchNormalization", value, *names, epsilon=eps)

    def relu(self):
        return self.then("Relu", np.maximum(self.value, 0))

    def pool(self, kind, k, stride, pads=(0, 0, 0, 0)):
        op = "MaxPool" if kind == "max" else "AveragePool"
        value = pool(self.value, k, stride, pads, kind)
        return self.then(op, value, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pads[0], pads[1], pads[2], pads[3]])

    def add(self, other):
        name = self.b.node("Add", [self.name, other.name])
        return Net(self.b, name, self.value + other.value)

    def gemm(self, units, transposed):
        inputs = self.value.shape[1]
        w_name, w = self.b.weight("fc.weight", (units, inputs) if transposed else (inputs, units))
        b_name, b = self.b.weight("fc.bias", (units,), 0.5)
        value = self.value @ (w.T if transposed else w) + b
        return self.then("Gemm", value, w_name, b_name, transB=int(transposed))


def torch_resnet():
    """A ResNet in miniature: the stem, an identity block and a projection block."""
    b = Builder()
    x = Net(b, "input", None)
    x.value = RNG.uniform(-1, 1, (4, 3, 16, 16))
    inputs = x.value
    x = x.conv(8, 3, stride=2, pads=(1, 1, 1, 1), bias=False).batchnorm().relu()
    x = x.pool("max", 3, 2, (1, 1, 1, 1))
    y = x.conv(8, 3, pads=(1, 1, 1, 1), bias=False).batchnorm().relu()
    y = y.conv(8, 3, pads=(1, 1, 1, 1), bias=False).batchnorm()
    x = y.add(x).relu()
    y = x.conv(16, 3, stride=2, pads=(1, 1, 1, 1), bias=False).batchnorm().relu()
    y = y.conv(16, 3, pads=(1, 1, 1, 1), bias=False).batchnorm()
    shortcut = x.conv(16, 1, stride=2, bias=False).batchnorm()
    x = y.add(shortcut).relu()
    x = x.then("GlobalAveragePool", x.value.mean(axis=(2, 3), keepdims=True))
    x = x.then("Flatten", x.value.reshape(x.value.shape[0], -1), axis=1)
    x = x.gemm(10, transposed=True)
    x = x.then("Softmax", softmax(x.value, 1), axis=1)
    return b.model([3, 16, 16], x.name, [10]), inputs, x.value


def torch_mixed():
    """Asymmetric pads, a depthwise convolution, padded average pooling, a flatten of NCHW
    values into MatMul + Add, and GELU and swish as PyTorch writes them."""
    b = Builder()
    x = Net(b, "input", RNG.uniform(-1, 1, (4, 2, 9, 8)))
    inputs = x.value
    x = x.conv(4, 3, pads=(2, 1, 0, 1))
    x = x.then("LeakyRelu", np.where(x.value > 0, x.value, 0.1 * x.value), alpha=0.1)
    x = x.conv(4, 3, pads=(1, 1, 1, 1), group=4)
    x = x.then("Sigmoid", sigmoid(x.value))
    x = x.pool("avg", 2, 2, (1, 1, 1, 1))
    x = x.then("Flatten", x.value.reshape(x.value.shape[0], -1), axis=1)
    w_name, w = b.weight("mm.weight", (x.value.shape[1], 6))
    bias_name, bias = b.weight("mm.bias", (6,), 0.5)
    x = x.then("MatMul", x.value @ w, w_name)
    x = x.then("Add", x.value + bias, bias_name)
    x = x.then("Tanh", np.tanh(x.value))
    root2 = b.constant("sqrt2", np.float32(math.sqrt(2)))
    one, half = b.constant("one", np.float32(1)), b.constant("half", np.float32(0.5))
    source = x
    scaled = x.then("Div", None, root2)
    erf = scaled.then("Erf", None)
    plus_one = erf.then("Add", None, one)
    product = Net(b, b.node("Mul", [source.name, plus_one.name]), None)
    x = product.then("Mul", gelu(source.value), half)
    s = x.then("Sigmoid", None)
    x = Net(b, b.node("Mul", [x.name, s.name]), x.value * sigmoid(x.value))
    x = x.gemm(3, transposed=False)
    return b.model([2, 9, 8], x.name, [3]), inputs, x.value


def keras_nhwc():
    """A Keras model as tf2onnx writes it: NHWC in, `same` convolutions in NCHW between two
    transpositions, flattened in HWC order."""
    b = Builder()
    nhwc = RNG.uniform(-1, 1, (4, 6, 5, 3))
    x = Net(b, "input", nhwc)
    x = x.then("Transpose", nhwc.transpose(0, 3, 1, 2), perm=[0, 3, 1, 2])
    w_name, w = b.weight("conv.weight", (4, 3, 3, 3))
    bias_name, bias = b.weight("conv.bias", (4,), 0.5)
    # SAME_UPPER with stride 2 on 6x5: one row after, one column on each side.
    value = conv(x.value, w, bias, 2, (0, 1, 1, 1))
    x = x.then("Conv", value, w_name, bias_name, kernel_shape=[3, 3], strides=[2, 2],
               auto_pad="SAME_UPPER")
    x = x.relu()
    x = x.then("Transpose", x.value.transpose(0, 2, 3, 1), perm=[0, 2, 3, 1])
    shape = b.constant("shape", np.array([-1, int(np.prod(x.value.shape[1:]))]), np.int64)
    x = x.then("Reshape", x.value.reshape(x.value.shape[0], -1), shape)
    x = x.gemm(5, transposed=False)
    x = x.then("Softmax", softmax(x.value, 1), axis=-1)
    return b.model([6, 5, 3], x.name, [5]), nhwc, x.value


def keras_tf2onnx():
    """A Keras model converted by tf2onnx itself (TensorFlow and tf2onnx needed): `same`
    convolutions (one strided), batch normalisation (which tf2onnx folds into the convolution),
    a depthwise convolution, max pooling, `Flatten` (a `Reshape` whose shape the graph computes)
    and dense layers with biases. The expected outputs are Keras's own (float32)."""
    import tensorflow as tf
    import tf2onnx

    tf.keras.utils.set_random_seed(20261207)
    rng = np.random.default_rng(7)
    layers = tf.keras.layers
    inputs = tf.keras.Input((12, 10, 3), name="input")
    x = layers.Conv2D(6, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(8, activation="tanh")(x)
    outputs = layers.Dense(4, activation="softmax")(x)
    model = tf.keras.Model(inputs, outputs)
    for layer in model.layers:
        weights = [rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path or "gamma" in w.path
                   else rng.uniform(-0.5, 0.5, w.shape) for w in layer.weights]
        if weights:
            layer.set_weights([w.astype(np.float32) for w in weights])
    spec = (tf.TensorSpec((None, 12, 10, 3), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    x = rng.uniform(-1, 1, (4, 12, 10, 3)).astype(np.float32)
    return proto, x, model.predict(x, verbose=0)


def unsupported_op():
    b = Builder()
    x = Net(b, "input", RNG.uniform(-1, 1, (1, 3, 8, 8)))
    x = x.conv(4, 3)
    x = x.then("LRN", None, size=3)
    return b.model([3, 8, 8], x.name, [4, 6, 6])


def shape_mismatch():
    b = Builder()
    x = Net(b, "input", RNG.uniform(-1, 1, (1, 2, 4, 4)))
    x = x.then("Flatten", x.value.reshape(1, -1), axis=1)
    w_name, _ = b.weight("fc.weight", (5, 30))
    x = x.then("Gemm", None, w_name, transB=1)
    return b.model([2, 4, 4], x.name, [5])


def check_with_onnx_runtime(path, inputs, expected):
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"input": inputs.astype(np.float32)})[0]
    worst = float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)))
    print(f"{path.name}: ONNX Runtime differs from the float64 forward pass by {worst:.2e}")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/onnx")
    out.mkdir(parents=True, exist_ok=True)
    for name, make in [("torch_resnet", torch_resnet), ("torch_mixed", torch_mixed),
                       ("keras_nhwc", keras_nhwc)]:
        model, inputs, outputs = make()
        path = out / f"{name}.onnx"
        onnx.save(model, path)
        save_file({"input": inputs.astype(np.float32), "output": outputs.astype(np.float32)},
                  out / f"{name}.io.safetensors")
        check_with_onnx_runtime(path, inputs, outputs)
    try:
        model, inputs, outputs = keras_tf2onnx()
    except ImportError as missing:
        print(f"keras_tf2onnx.onnx left as it is: {missing}")
    else:
        onnx.save(model, out / "keras_tf2onnx.onnx")
        save_file({"input": inputs, "output": outputs.astype(np.float32)},
                  out / "keras_tf2onnx.io.safetensors")
        check_with_onnx_runtime(out / "keras_tf2onnx.onnx", inputs, outputs)
    onnx.save(unsupported_op(), out / "unsupported_op.onnx")
    onnx.save(shape_mismatch(), out / "shape_mismatch.onnx")


if __name__ == "__main__":
    main()
