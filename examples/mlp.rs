//! Trains a multilayer perceptron on MNIST: flatten, dense(128) relu dropout(0.2) dense(10).
//!
//! `cargo run --release --example mlp -- --help` lists the flags.

mod common;

use clap::Parser;
use common::{Defaults, OptimizerName};
use constnet::network;

network! {
    /// A multilayer perceptron: 101,770 parameters.
    pub MnistMlp<input(28, 28, 1) flatten dense(128) relu dropout(0.2) dense(10) softmax>
}

/// Trains a multilayer perceptron on MNIST.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: common::Args,
}

fn main() {
    common::main::<MnistMlp>(
        &Cli::parse().args,
        Defaults {
            epochs: 5,
            batch_size: 32,
            optimizer: OptimizerName::Adam,
            cosine_decay: false,
            augment: false,
        },
    );
}
