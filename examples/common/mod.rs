//! What every MNIST example does, whatever its network: command-line flags, data (downloaded if
//! missing), training, evaluation, predictions, plots and weight files.

mod plots;

use std::path::PathBuf;
use std::time::Instant;

use clap::ValueEnum;
use constnet::data::{download, load_mnist};
use constnet::loss::{FitsHead, SparseCategoricalCrossentropy};
use constnet::network::Network;
use constnet::optim::{Adadelta, Adam, OptimizerState, RmsProp, Schedule, Sgd};
use constnet::train::{EarlyStopping, FitConfig, Validation, evaluate, fit, predict};
use constnet::{Flat, Hwc, weights};

/// Command-line flags shared by the examples.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the four IDX files (MNIST, or any data set of 28x28 grayscale images in 10
    /// classes laid out like it). Missing MNIST files are downloaded into it.
    #[arg(long, env = "MNIST_DIR", default_value = "data/mnist")]
    pub data: PathBuf,
    /// Passes over the training set.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per gradient step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The update rule.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerName>,
    /// Learning rate (default: the optimiser's Keras default; 1.0 for Adadelta, as in Keras's
    /// MNIST example).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Save the trained weights (safetensors) here.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start from these weights (safetensors) instead of a fresh initialisation.
    #[arg(long, conflicts_with = "load_pytorch")]
    pub load: Option<PathBuf>,
    /// Start from a PyTorch `state_dict` saved as safetensors: its modules (`0`, `3`, ... or
    /// `conv1`, `fc1`, ...) taken in order, layouts converted (OIHW, [out, in], CHW flattening).
    #[arg(long)]
    pub load_pytorch: Option<PathBuf>,
    /// Layers whose parameters stay fixed, comma-separated (e.g. `conv1,conv2`).
    #[arg(long, value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Train on the first N training images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Validate on this fraction of the training set instead of on the test set.
    #[arg(long)]
    pub validation_split: Option<f32>,
    /// Stop after this many epochs without a better validation loss.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Random shifts (±2 px) and rotations (±10°) of training images (on by default for some
    /// networks).
    #[arg(long, conflicts_with = "no_augment")]
    pub augment: bool,
    /// Train on the images as they are, for a network that augments by default.
    #[arg(long)]
    pub no_augment: bool,
    /// Seed of initialisation, shuffling, dropout and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fail instead of downloading missing files.
    #[arg(long)]
    pub no_download: bool,
    /// Export the trained network to this ONNX file (NHWC input).
    #[arg(long)]
    pub export_onnx: Option<PathBuf>,
    /// Where to write the PNGs of the training curves and of misclassified test digits.
    #[arg(long, default_value = ".")]
    pub plots: PathBuf,
}

/// The update rules the examples offer.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerName {
    /// Keras's `SGD` (momentum 0.9).
    Sgd,
    /// Keras's `Adam`.
    Adam,
    /// Keras's `Adadelta`.
    Adadelta,
    /// Keras's `RMSprop`.
    Rmsprop,
}

/// Training settings an example chooses when the flags do not.
pub struct Defaults {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerName,
    /// Whether the learning rate decays to zero over the epochs along a cosine (otherwise it
    /// stays constant).
    pub cosine_decay: bool,
    /// Whether to augment the training images unless `--no-augment` is given.
    pub augment: bool,
}

fn optimizer(name: OptimizerName, lr: Option<f32>) -> OptimizerState {
    match name {
        OptimizerName::Sgd => OptimizerState::new(Sgd {
            momentum: 0.9,
            ..Sgd::new(lr.unwrap_or(0.01))
        }),
        OptimizerName::Adam => OptimizerState::new(Adam {
            learning_rate: lr.unwrap_or(1e-3),
            ..Adam::default()
        }),
        OptimizerName::Adadelta => OptimizerState::new(Adadelta {
            learning_rate: lr.unwrap_or(1.0),
            ..Adadelta::default()
        }),
        OptimizerName::Rmsprop => OptimizerState::new(RmsProp {
            learning_rate: lr.unwrap_or(1e-3),
            ..RmsProp::default()
        }),
    }
}

type Image = Hwc<28, 28, 1>;

/// Trains, evaluates and reports on network `N`; errors are printed by `main`.
pub fn run<N>(args: &Args, defaults: Defaults) -> Result<(), Box<dyn std::error::Error>>
where
    N: Network<Input = Image, Output = Flat<10>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    if !args.no_download {
        download::ensure_mnist(&args.data, &download::MNIST_MIRRORS)?;
    }
    let (mut train, test) = load_mnist::<Image>(&args.data)?;
    if let Some(limit) = args.limit {
        train = train.take(limit);
    }
    println!(
        "{} training and {} test images from {}",
        train.len(),
        test.len(),
        args.data.display()
    );

    let mut network = N::new(args.seed);
    if let Some(path) = &args.load {
        weights::load(&mut network, path)?;
        println!("Loaded weights from {}", path.display());
    }
    if let Some(path) = &args.load_pytorch {
        weights::load_pytorch(&mut network, path, weights::TorchNames::InOrder)?;
        println!("Loaded PyTorch weights from {}", path.display());
    }
    print!("{}", N::summary());

    let mut optimizer = optimizer(args.optimizer.unwrap_or(defaults.optimizer), args.lr);
    let epochs = args.epochs.unwrap_or(defaults.epochs);
    if defaults.cosine_decay {
        optimizer.schedule = Schedule::Cosine { epochs };
    }
    let frozen: Vec<&str> = args.freeze.iter().map(String::as_str).collect();
    optimizer
        .freeze(&network, &frozen)
        .map_err(|error| format!("--freeze: {error}"))?;
    let config = FitConfig {
        epochs,
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        seed: args.seed,
        early_stopping: args.patience.map(|patience| EarlyStopping {
            patience,
            min_delta: 0.0,
        }),
        augment: (args.augment || defaults.augment && !args.no_augment).then_some(
            constnet::data::Augment {
                max_shift: 2.0,
                max_rotation_degrees: 10.0,
            },
        ),
        ..FitConfig::default()
    };
    let validation = match args.validation_split {
        Some(fraction) => Validation::Split(fraction),
        None => Validation::Data(&test),
    };
    println!(
        "Training for {} epochs, batch size {}, {} (learning rate {}){}",
        config.epochs,
        config.batch_size,
        optimizer.optimizer().name(),
        optimizer.learning_rate(0),
        if args.freeze.is_empty() {
            String::new()
        } else {
            format!(", frozen: {}", args.freeze.join(", "))
        }
    );
    let started = Instant::now();
    let history = fit(&mut network, &mut optimizer, &train, validation, &config)?;
    println!("Trained in {:.1}s", started.elapsed().as_secs_f64());

    let evaluation = evaluate(&network, &test, 256)?;
    println!("Test loss: {:.4}", evaluation.loss);
    println!("Test accuracy: {:.4}", evaluation.accuracy);

    let predictions = predict(&network, test.images(), 256)?;
    println!("First 10 test images:");
    for (i, class) in predictions.classes.iter().enumerate().take(10) {
        let probabilities: Vec<String> = predictions
            .probabilities
            .sample(i)
            .iter()
            .map(|p| format!("{p:.3}"))
            .collect();
        println!(
            "  #{i}: predicted {class} (true {}), p = [{}]",
            test.labels()[i],
            probabilities.join(", ")
        );
    }
    println!(
        "Confusion matrix (rows: true class, columns: predicted):\n{}",
        evaluation.confusion
    );
    print!("{}", evaluation.confusion.report());

    plots::write(&args.plots, N::NAME, &history, &test, &predictions.classes)?;
    if let Some(path) = &args.save {
        weights::save(&network, path)?;
        println!("Saved weights to {}", path.display());
    }
    if let Some(path) = &args.export_onnx {
        constnet::onnx::export(&network, path)?;
        println!(
            "Exported the network to {} (ONNX, NHWC input)",
            path.display()
        );
    }
    Ok(())
}

/// Runs `N` with `args`, and exits with status 1 and the error on failure.
pub fn main<N>(args: &Args, defaults: Defaults)
where
    N: Network<Input = Image, Output = Flat<10>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    if let Err(error) = run::<N>(args, defaults) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
