"""Runs constnet's QDQ exports of int8 networks in ONNX Runtime and compares them with constnet.

    CONSTNET_INT8_ONNX_DIR=/tmp/int8-models cargo test --release --test quantization
    python3 scripts/check_int8_onnx_runtime.py /tmp/int8-models

For every `<name>.onnx` in the directory, `<name>.safetensors` holds the inputs it was fed,
the outputs constnet's int8 network computed and `step`, the real value of one quantization
step of the last tensor the network quantizes. Each model must pass the ONNX checker and give
constnet's outputs within one step. Needs numpy, onnx, onnxruntime and safetensors. Exits with
status 1 if any model fails.
"""

import pathlib
import sys

import numpy as np
import onnx
import onnxruntime
from safetensors.numpy import load_file


def check(model_path: pathlib.Path) -> float:
    """The largest difference between ONNX Runtime and constnet on one model, in steps."""
    onnx.checker.check_model(onnx.load(str(model_path)), full_check=True)
    tensors = load_file(str(model_path.with_suffix(".safetensors")))
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": tensors["input"]})
    expected = tensors["output"]
    if actual.shape != expected.shape:
        raise ValueError(f"output shape {actual.shape}, constnet's {expected.shape}")
    agree = np.mean(np.argmax(actual, axis=1) == np.argmax(expected, axis=1))
    worst = float(np.max(np.abs(actual - expected)) / tensors["step"][0])
    print(f"{model_path.stem}: largest difference {worst:.3f} steps, "
          f"{100 * agree:.1f}% of the predicted classes agree")
    return worst


def main() -> int:
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    models = sorted(directory.glob("*.onnx"))
    if not models:
        print(f"no .onnx files in {directory}")
        return 1
    failed = [model.stem for model in models if check(model) > 1.0]
    print(f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}")
    if failed:
        print(f"more than one step apart: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
