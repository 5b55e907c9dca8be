//! Trains a multilayer perceptron on MNIST: flatten, dense(128) relu dropout(0.2) dense(10).
//!
//! `cargo run --release --example mlp -- --help` lists the flags.

mod common;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use common::{Args, Defaults, OptimizerName};
use constnet::prelude::*;

network! {
    /// A multilayer perceptron: 101,770 parameters.
    pub MnistMlp<input(28, 28, 1) flatten dense(128) relu dropout(0.2) dense(10) softmax>
}

/// Trains a multilayer perceptron on MNIST.
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
        epochs: 5,
        batch_size: 32,
        optimizer: OptimizerName::Adam,
        cosine_decay: false,
        augment: false,
    };
    let (train, test) = common::load_data(args)?;
    let mut network: MnistMlp = common::build(args)?;
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
    common::plots::write(&args.plots, MnistMlp::NAME, &history, &test, &predicted)?;
    common::save(&network, args)
}
