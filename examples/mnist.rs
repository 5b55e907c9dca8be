//! Trains the Keras MNIST example network (or, with `--model small-cnn`, a smaller CNN) on MNIST,
//! then reports on the test set, draws the training curves and saves the weights.
//!
//! `cargo run --release --example mnist -- --help` lists the flags.

mod common;
#[path = "models/mnist_cnn.rs"]
mod mnist_cnn;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use common::{Args, Defaults, Image, OptimizerName};
use constnet::loss::FitsHead;
use constnet::prelude::*;
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
    /// Also make the int8 network (calibrated on 500 training images), report its test
    /// accuracy beside the f32 one, and save it (`NAME-int8.safetensors`) and export it
    /// (`NAME-int8.onnx`, QDQ) beside the f32 weights and model.
    #[arg(long)]
    quantize: bool,
    #[command(flatten)]
    args: Args,
}

fn main() -> ExitCode {
    let Cli {
        model,
        args,
        quantize,
    } = Cli::parse();
    let defaults = |epochs, batch_size| Defaults {
        epochs,
        batch_size,
        optimizer: OptimizerName::Adam,
        cosine_decay: false,
        augment: false,
    };
    common::exit_on_error(match model {
        Model::KerasCnn => train::<MnistCnn>(&args, defaults(12, 128), quantize),
        Model::SmallCnn => train::<SmallCnn>(&args, defaults(5, 32), quantize),
    })
}

/// Loads MNIST, builds network `N`, trains it, reports on the test set, draws the plots and
/// saves the weights; then, if asked, quantizes it to int8.
fn train<N>(args: &Args, defaults: Defaults, quantize: bool) -> Result<(), Box<dyn Error>>
where
    N: Network<Input = Image, Output = Flat<10>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    let (train, test) = common::load_data(args)?;
    let mut network: N = common::build(args)?;
    let mut optimizer = common::optimizer(args, &defaults, &network)?;
    let config = common::fit_config(args, &defaults, &optimizer);
    let started = std::time::Instant::now();
    let validation = common::validation(args, &test);
    let history = fit(&mut network, &mut optimizer, &train, validation, &config)?;
    println!("Trained in {:.1}s", started.elapsed().as_secs_f64());
    let predicted = common::report(&network, &test)?;
    common::plots::write(&args.plots, N::NAME, &history, &test, &predicted)?;
    common::save(&network, args)?;
    if quantize {
        quantize_int8(&network, &train, &test, args)?;
    }
    Ok(())
}

/// Training images the int8 network's activation ranges are calibrated on.
const CALIBRATION_IMAGES: usize = 500;

/// Makes the int8 form of `network` from the first training images, reports its test accuracy
/// beside the f32 network's, and saves it beside the f32 weights.
fn quantize_int8<N>(
    network: &N,
    train: &Dataset<Image>,
    test: &Dataset<Image>,
    args: &Args,
) -> Result<(), Box<dyn Error>>
where
    N: Network<Input = Image, Output = Flat<10>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    let calibration = train.take(CALIBRATION_IMAGES);
    let int8 = Quantized::calibrate(network, calibration.images())?;
    let f32_accuracy = evaluate(network, test, 256)?.accuracy;
    let int8_accuracy = int8.evaluate(test, 256)?.accuracy;
    println!("Test accuracy: {f32_accuracy:.4}");
    println!("Test accuracy (int8): {int8_accuracy:.4}");
    println!(
        "int8 - f32: {:+.2} points",
        100.0 * (int8_accuracy - f32_accuracy)
    );
    if let Some(path) = &args.save {
        let int8_path = path.with_file_name(format!(
            "{}-int8.safetensors",
            path.file_stem().unwrap_or_default().to_string_lossy()
        ));
        int8.save(&int8_path)?;
        println!("Saved the int8 network to {}", int8_path.display());
    }
    if let Some(path) = &args.export_onnx {
        let int8_path = path.with_file_name(format!(
            "{}-int8.onnx",
            path.file_stem().unwrap_or_default().to_string_lossy()
        ));
        constnet::onnx::export_quantized(&int8, &int8_path)?;
        println!(
            "Exported the int8 network to {} (ONNX, QDQ)",
            int8_path.display()
        );
    }
    Ok(())
}
