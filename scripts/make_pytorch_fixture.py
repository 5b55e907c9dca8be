"""Writes the PyTorch-weights fixture of `tests/pytorch_weights.rs`, with numpy alone (no torch).

The network, as PyTorch would define it:

    features = nn.Sequential(
        nn.Conv2d(2, 3, 3),          # features.0
        nn.BatchNorm2d(3),           # features.1 (eps 1e-5)
        nn.ReLU(),                   # features.2
        nn.MaxPool2d(2),             # features.3
    )
    classifier = nn.Sequential(
        nn.Flatten(),                # classifier.0 (flattens C, H, W)
        nn.Linear(3 * 3 * 3, 5),     # classifier.1
        nn.ReLU(),                   # classifier.2
        nn.Linear(5, 4),             # classifier.3
    )
    softmax over the 4 outputs

on 2x8x8 inputs (NCHW). `pytorch_cnn.safetensors` holds its `state_dict` as
`safetensors.torch.save_file` would write it: PyTorch's names and layouts (Conv2d weight OIHW,
Linear weight [out, in]) and BatchNorm's int64 `num_batches_tracked`.
`pytorch_cnn_sequential.safetensors` holds the same tensors named as one `nn.Sequential` of the
eight layers would (`0` conv, `1` batch norm, `5` and `7` linear).
`pytorch_cnn_io.safetensors` holds four inputs (NCHW) and the probabilities this file's
NCHW forward pass (float64) computes for them.

Usage: python3 scripts/make_pytorch_fixture.py [OUT_DIR]   (default: tests/fixtures)
"""

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

EPS = 1e-5


def conv2d(x, w, b):
    """Valid, stride-1 convolution of NCHW `x` with OIHW `w`."""
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    out = np.zeros((n, o, h - k + 1, wd - k + 1))
    for i in range(h - k + 1):
        for j in range(wd - k + 1):
            window = x[:, :, i : i + k, j : j + k]
            out[:, :, i, j] = np.einsum("ncij,ocij->no", window, w)
    return out + b[None, :, None, None]


def batchnorm(x, gamma, beta, mean, var):
    scale = gamma / np.sqrt(var + EPS)
    return (x - mean[None, :, None, None]) * scale[None, :, None, None] + beta[None, :, None, None]


def maxpool2(x):
    n, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def forward(x, p):
    y = conv2d(x, p["features.0.weight"], p["features.0.bias"])
    y = batchnorm(
        y,
        p["features.1.weight"],
        p["features.1.bias"],
        p["features.1.running_mean"],
        p["features.1.running_var"],
    )
    y = maxpool2(np.maximum(y, 0.0))
    y = y.reshape(y.shape[0], -1)  # C, H, W order, as nn.Flatten
    y = np.maximum(y @ p["classifier.1.weight"].T + p["classifier.1.bias"], 0.0)
    y = y @ p["classifier.3.weight"].T + p["classifier.3.bias"]
    y = np.exp(y - y.max(axis=1, keepdims=True))
    return y / y.sum(axis=1, keepdims=True)


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    uniform = lambda *shape: rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    params = {
        "features.0.weight": uniform(3, 2, 3, 3),
        "features.0.bias": uniform(3),
        "features.1.weight": (1.0 + uniform(3)).astype(np.float32),
        "features.1.bias": uniform(3),
        "features.1.running_mean": uniform(3),
        "features.1.running_var": (0.5 + rng.uniform(0, 1, 3)).astype(np.float32),
        "classifier.1.weight": uniform(5, 27),
        "classifier.1.bias": uniform(5),
        "classifier.3.weight": uniform(4, 5),
        "classifier.3.bias": uniform(4),
    }
    state_dict = dict(params, **{"features.1.num_batches_tracked": np.array(100, dtype=np.int64)})
    save_file(state_dict, str(out_dir / "pytorch_cnn.safetensors"))
    sequential = {"features.0": "0", "features.1": "1", "classifier.1": "5", "classifier.3": "7"}
    renamed = {}
    for name, value in state_dict.items():
        module, tensor = name.rsplit(".", 1)
        renamed[f"{sequential[module]}.{tensor}"] = value
    save_file(renamed, str(out_dir / "pytorch_cnn_sequential.safetensors"))
    inputs = rng.uniform(0, 1, (4, 2, 8, 8)).astype(np.float32)
    as_f64 = {name: value.astype(np.float64) for name, value in params.items()}
    outputs = forward(inputs.astype(np.float64), as_f64).astype(np.float32)
    save_file({"inputs": inputs, "outputs": outputs}, str(out_dir / "pytorch_cnn_io.safetensors"))
    print(f"wrote the fixture to {out_dir}")


if __name__ == "__main__":
    main()
