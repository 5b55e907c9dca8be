#!/usr/bin/env bash
# Imports a ResNet-18-shaped ONNX model (random weights, 3x224x224) with constnet-import, builds
# the generated network in a crate of its own (timing the build of that crate alone), checks its
# output against ONNX Runtime's on one input, and times batch-1 inference from the main thread
# beside ONNX Runtime on the same file.
#
# Usage: PYTHON=/path/to/venv/bin/python scripts/resnet18_import.sh [WORK_DIR]
# (the Python needs numpy, onnx, onnxruntime and safetensors).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
python=${PYTHON:-python3}
threads=${THREADS:-2}

"$python" "$repo/scripts/make_resnet18_onnx.py" "$work"
cargo run --release -q --manifest-path "$repo/Cargo.toml" -p constnet-import -- \
    "$work/resnet18.onnx" --name ResNet18 --out "$work/net"

mkdir -p "$work/bench/src"
cat > "$work/bench/Cargo.toml" <<TOML
[package]
name = "resnet18-import"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
constnet = { path = "$repo" }
safetensors = "0.8.0"

[profile.release]
debug = false
TOML
cat > "$work/bench/src/main.rs" <<'RUST'
mod net {
    include!(concat!(env!("RESNET18_DIR"), "/net/res_net18.rs"));
}

use std::time::Instant;

use constnet::network::Network;
use constnet::{Batch, weights};

fn main() {
    let dir = env!("RESNET18_DIR");
    let mut net = net::ResNet18::new(0);
    weights::load(&mut net, format!("{dir}/net/res_net18.safetensors")).unwrap();
    let io = std::fs::read(format!("{dir}/resnet18.io.safetensors")).unwrap();
    let io = safetensors::SafeTensors::deserialize(&io).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        let data = io.tensor(name).unwrap().data().to_vec();
        data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let (nchw, expected) = (floats("input"), floats("output"));
    let (c, h, w) = (3, 224, 224);
    let mut nhwc = vec![0.0; nchw.len()];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                nhwc[(y * w + x) * c + ch] = nchw[(ch * h + y) * w + x];
            }
        }
    }
    let input = Batch::from_vec(nhwc).unwrap();
    let mut workspace = Default::default();
    let output = net.infer(&input, &mut workspace).as_slice().to_vec();
    let worst = output
        .iter()
        .zip(&expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0f32, f32::max);
    println!("constnet vs ONNX Runtime: worst relative difference {worst:.2e}");
    for _ in 0..20 {
        net.infer(&input, &mut workspace);
    }
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let start = Instant::now();
            net.infer(&input, &mut workspace);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "constnet batch 1 (main thread): median {:.2} ms, p99 {:.2} ms",
        times[100], times[197]
    );
}
RUST
export RESNET18_DIR="$work"
cargo build --release -q --manifest-path "$work/bench/Cargo.toml"
touch "$work/bench/src/main.rs"
start=$(date +%s.%N)
cargo build --release -q --manifest-path "$work/bench/Cargo.toml"
end=$(date +%s.%N)
echo "compile time of the generated network's crate (release): $(echo "$end - $start" | bc) s"
RAYON_NUM_THREADS=$threads "$work/bench/target/release/resnet18-import"
"$python" - "$work/resnet18.onnx" "$threads" <<'PY'
import sys, time
import numpy as np
import onnxruntime
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = int(sys.argv[2])
session = onnxruntime.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
for _ in range(20):
    session.run(None, {"input": x})
times = []
for _ in range(200):
    start = time.perf_counter()
    session.run(None, {"input": x})
    times.append((time.perf_counter() - start) * 1e3)
times.sort()
print(f"ONNX Runtime batch 1: median {times[100]:.2f} ms, p99 {times[197]:.2f} ms")
PY
