//! Fine-tunes a model trained elsewhere: a ResNet-style network exported from PyTorch as ONNX
//! becomes a `network!` at compile time, takes the model's weights, learns a new task with every
//! layer frozen but the last, and is exported to ONNX again.
//!
//! ```sh
//! cargo run --release --features import --example fine_tune_onnx
//! ```

use std::error::Error;

use constnet::network::Network;
use constnet::onnx;
use constnet::prelude::*;
use constnet::rand::RngExt;

constnet::onnx_network!("tests/fixtures/onnx/torch_resnet.onnx", pub TorchResnet);

const MODEL: &str = "tests/fixtures/onnx/torch_resnet.onnx";

/// The new task: which of the three colour channels of a 16x16 image is brightest on average
/// (classes 0 to 2 of the model's ten outputs).
fn brightest_channel(samples: usize, seed: u64) -> Result<Dataset<Hwc<16, 16, 3>>, Box<dyn Error>> {
    let mut rng = constnet::init::seeded_rng(seed);
    let bright: Vec<usize> = (0..samples).map(|_| rng.random_range(0..3)).collect();
    let images = Batch::from_fn(samples, |i| {
        let (sample, channel) = (i / (16 * 16 * 3), i % 3);
        let boost = if channel == bright[sample] { 0.3 } else { 0.0 };
        rng.random_range(0.0..0.7) + boost
    });
    Ok(Dataset::new(images, bright, 10)?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let imported = constnet::import::import_file(MODEL)?;
    let mut net = TorchResnet::new(0);
    weights::from_bytes(&mut net, &imported.safetensors()?)?;
    print!("{}", TorchResnet::summary());

    let (train, test) = (brightest_channel(2048, 1)?, brightest_channel(512, 2)?);
    let mut optimizer = OptimizerState::new(Adam {
        learning_rate: 0.01,
        ..Adam::default()
    });
    let trained_elsewhere: Vec<&str> = TorchResnet::LAYERS
        .iter()
        .filter(|layer| layer.params > 0 && layer.name != "dense1")
        .map(|layer| layer.name)
        .collect();
    optimizer.freeze(&net, &trained_elsewhere)?;

    let before = evaluate(&net, &test, 256)?;
    let config = FitConfig {
        epochs: 5,
        batch_size: 32,
        verbose: false,
        ..FitConfig::default()
    };
    fit(&mut net, &mut optimizer, &train, Validation::None, &config)?;
    let after = evaluate(&net, &test, 256)?;
    println!(
        "Test accuracy before fine-tuning: {:.2}%, after: {:.2}%",
        100.0 * before.accuracy,
        100.0 * after.accuracy
    );

    let out = std::env::temp_dir().join("torch_resnet_fine_tuned.onnx");
    onnx::export(&net, &out)?;
    println!("Exported the fine-tuned network to {}", out.display());
    Ok(())
}
