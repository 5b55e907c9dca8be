"""Runs the models `onnx-check` exported in ONNX Runtime and compares them with constnet.

    ONNX_CHECK_DIR=/tmp/onnx-models cargo test --release --manifest-path onnx-check/Cargo.toml
    python3 scripts/check_onnx_ort.py /tmp/onnx-models

For every `<name>.onnx` in the directory, `<name>.safetensors` holds the inputs it was fed and the
outputs constnet computed. Each model must pass the ONNX checker (with shape inference) and give
constnet's outputs within 1e-5 (relative to the value, above 1). Needs numpy, onnx, onnxruntime
and safetensors. Exits with status 1 if any model fails.
"""

import pathlib
import sys

import numpy as np
import onnx
import onnxruntime
from safetensors.numpy import load_file


def check(model_path: pathlib.Path) -> float:
    """The worst relative difference between ONNX Runtime and constnet on one model."""
    onnx.checker.check_model(onnx.load(str(model_path)), full_check=True)
    tensors = load_file(str(model_path.with_suffix(".safetensors")))
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": tensors["input"]})
    expected = tensors["output"]
    if actual.shape != expected.shape:
        raise ValueError(f"output shape {actual.shape}, constnet's {expected.shape}")
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)))


def main() -> int:
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    models = sorted(directory.glob("*.onnx"))
    if not models:
        print(f"no .onnx files in {directory}")
        return 1
    failed = False
    for model in models:
        worst = check(model)
        ok = worst <= 1e-5
        failed |= not ok
        print(f"{model.stem}: worst relative difference {worst:.2e} {'ok' if ok else 'FAILED'}")
    print(f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
