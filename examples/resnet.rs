//! Trains a small ResNet on MNIST: residual blocks with batch normalisation, strided blocks
//! with projection shortcuts, global average pooling, and augmented training images (random
//! shifts and rotations), with Adam and a cosine-decayed learning rate.
//!
//! `cargo run --release --example resnet -- --help` lists the flags (the same as the `mnist`
//! example's).

mod common;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use common::{Args, Defaults, OptimizerName};
use constnet::prelude::*;

network! {
    /// A ResNet for 28x28 digits: a stem, then two stages of two residual blocks each (the first
    /// of each stage halving the image and doubling the channels through a 1x1 projection).
    pub ResNet<input(28, 28, 1) conv(16, 3, padding = same) batchnorm relu
               residual(conv(32, 3, stride = 2, padding = same) batchnorm relu
                        conv(32, 3, padding = same) batchnorm, shortcut = project) relu
               residual(conv(32, 3, padding = same) batchnorm relu
                        conv(32, 3, padding = same) batchnorm) relu
               residual(conv(64, 3, stride = 2, padding = same) batchnorm relu
                        conv(64, 3, padding = same) batchnorm, shortcut = project) relu
               residual(conv(64, 3, padding = same) batchnorm relu
                        conv(64, 3, padding = same) batchnorm) relu
               globalavgpool dense(10) softmax>
}

/// Trains a small ResNet on MNIST.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> ExitCode {
    common::exit_on_error(train(&Cli::parse().args))
}

/// Loads MNIST, builds the network, trains it, reports on the test set, draws the plots and
/// saves the weights.
fn train(args: &Args) -> Result<(), Box<dyn Error>> {
    let defaults = Defaults {
        epochs: 12,
        batch_size: 128,
        optimizer: OptimizerName::Adam,
        cosine_decay: true,
        augment: true,
    };
    let (train, test) = common::load_data(args)?;
    let mut network: ResNet = common::build(args)?;
    let mut optimizer = common::optimizer(args, &defaults, &network)?;
    let config = common::fit_config(args, &defaults, &optimizer);
    let history = fit(
        &mut network,
        &mut optimizer,
        &train,
        common::validation(args, &test),
        &config,
    )?;
    let predicted = common::report(&network, &test)?;
    common::plots::write(&args.plots, ResNet::NAME, &history, &test, &predicted)?;
    common::save(&network, args)
}
