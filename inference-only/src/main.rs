//! A program that serves a trained network, as a service embedding a classifier would: the
//! network is the training example's (`examples/models/mnist_cnn.rs`, included as a module), its
//! trained weights are built into the binary with `include_bytes!` and loaded with
//! `weights::from_bytes`, and nothing is read at run time but the images it classifies. It
//! classifies the MNIST test set in `MNIST_DIR` (default `data/mnist`) and prints its accuracy.
//!
//! ```text
//! cargo run --release --example mnist -- --save mnist_cnn.safetensors
//! CONSTNET_MNIST_WEIGHTS=$PWD/mnist_cnn.safetensors cargo run --release -p constnet-inference-only
//! ```

#[path = "../../examples/models/mnist_cnn.rs"]
mod mnist_cnn;

use std::path::PathBuf;
use std::process::ExitCode;

use constnet::data::load_mnist;
use constnet::prelude::*;
use mnist_cnn::{MnistCnn, MnistCnnWorkspace};

/// The trained weights, as `build.rs` found them (empty when built without).
static WEIGHTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mnist_cnn.safetensors"));

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    if WEIGHTS.is_empty() {
        return Err(
            "built without weights: build with CONSTNET_MNIST_WEIGHTS set to the file \
                    `cargo run --release --example mnist -- --save FILE` wrote"
                .into(),
        );
    }
    let mut net = MnistCnn::new(0);
    weights::from_bytes(&mut net, WEIGHTS)?;
    let dir = std::env::var_os("MNIST_DIR").map_or_else(|| "data/mnist".into(), PathBuf::from);
    let (_, test) = load_mnist::<Hwc<28, 28, 1>>(&dir)?;

    // One image, as a service answers one request: the workspace is reused, nothing allocated.
    let mut workspace = MnistCnnWorkspace::new();
    let first = Batch::from_fn(1, |i| test.images().as_slice()[i]);
    let class = argmax(net.infer(&first, &mut workspace))[0];
    println!(
        "test image 0: class {class} (labelled {})",
        test.labels()[0]
    );

    let score = evaluate(&net, &test, 250)?;
    println!(
        "test accuracy: {:.2}% ({} images of {}; {} bytes of weights built in)",
        100.0 * score.accuracy,
        test.len(),
        dir.display(),
        WEIGHTS.len()
    );
    Ok(())
}
