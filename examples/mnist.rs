//! Trains the Keras MNIST example network (or, with `--model small-cnn`, a smaller CNN) on MNIST
//! and reports test accuracy, predictions, the confusion matrix and per-class metrics.
//!
//! `cargo run --release --example mnist -- --help` lists the flags.

mod common;
#[path = "models/mnist_cnn.rs"]
mod mnist_cnn;

use clap::Parser;
use common::{Defaults, OptimizerName};
use constnet::network;
use mnist_cnn::MnistCnn;

network! {
    /// A smaller CNN: 592,074 parameters.
    pub SmallCnn<input(28, 28, 1) conv(32, 5) relu maxpool(2) flatten dense(128) relu dense(10)
                 softmax>
}

/// Which network to train.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum Model {
    /// The Keras example network, Adam, 12 epochs, batch 128 (`--optimizer adadelta` for the
    /// original `mnist_cnn.py`'s optimiser).
    #[default]
    KerasCnn,
    /// conv(32, 5) maxpool(2) dense(128) dense(10), Adam, 5 epochs, batch 32.
    SmallCnn,
}

/// Trains a CNN on MNIST.
#[derive(Parser)]
struct Cli {
    /// The network to train.
    #[arg(long, value_enum, default_value_t)]
    model: Model,
    #[command(flatten)]
    args: common::Args,
}

fn main() {
    let cli = Cli::parse();
    match cli.model {
        Model::KerasCnn => common::main::<MnistCnn>(
            &cli.args,
            Defaults {
                epochs: 12,
                batch_size: 128,
                optimizer: OptimizerName::Adam,
                cosine_decay: false,
                augment: false,
            },
        ),
        Model::SmallCnn => common::main::<SmallCnn>(
            &cli.args,
            Defaults {
                epochs: 5,
                batch_size: 32,
                optimizer: OptimizerName::Adam,
                cosine_decay: false,
                augment: false,
            },
        ),
    }
}
