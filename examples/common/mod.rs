//! The steps every MNIST example takes, whatever its network, each a function the examples
//! call in order: the command-line flags, the data (downloaded if missing), the network (fresh or
//! from weights), the optimiser and `fit`'s settings, the report on the test set, the plots
//! ([`plots`]) and the weight files.

pub mod plots;

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use constnet::data::{Augment, Dataset, download, load_mnist};
use constnet::loss::{FitsHead, SparseCategoricalCrossentropy};
use constnet::network::Network;
use constnet::optim::{Adadelta, Adam, OptimizerState, RmsProp, Schedule, Sgd};
use constnet::train::{EarlyStopping, FitConfig, Validation, evaluate, predict};
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

/// The optimiser called `name`, at learning rate `lr` or Keras's default.
fn optimizer_named(name: OptimizerName, lr: Option<f32>) -> OptimizerState {
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

/// The images every example trains on: MNIST's 28x28 grey digits.
pub type Image = Hwc<28, 28, 1>;

/// Sizes the global thread pool as `--threads` asks, then reads MNIST from `--data`
/// (downloading missing files unless `--no-download`), keeping `--limit` training images.
pub fn load_data(args: &Args) -> Result<(Dataset<Image>, Dataset<Image>), Box<dyn Error>> {
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
    Ok((train, test))
}

/// Network `N` seeded with `--seed`, or with the weights of `--load` or `--load-pytorch`.
pub fn build<N: Network>(args: &Args) -> Result<N, Box<dyn Error>> {
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
    Ok(network)
}

/// The optimiser the flags or `defaults` choose, with `--freeze`'s layers frozen.
pub fn optimizer<N: Network>(
    args: &Args,
    defaults: &Defaults,
    network: &N,
) -> Result<OptimizerState, Box<dyn Error>> {
    let mut optimizer = optimizer_named(args.optimizer.unwrap_or(defaults.optimizer), args.lr);
    if defaults.cosine_decay {
        let epochs = args.epochs.unwrap_or(defaults.epochs);
        optimizer.schedule = Schedule::Cosine { epochs };
    }
    let frozen: Vec<&str> = args.freeze.iter().map(String::as_str).collect();
    optimizer
        .freeze(network, &frozen)
        .map_err(|error| format!("--freeze: {error}"))?;
    Ok(optimizer)
}

/// `fit`'s settings from the flags and `defaults`, printed.
pub fn fit_config(args: &Args, defaults: &Defaults, optimizer: &OptimizerState) -> FitConfig {
    let augment = Augment {
        max_shift: 2.0,
        max_rotation_degrees: 10.0,
    };
    let config = FitConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        seed: args.seed,
        early_stopping: args.patience.map(|patience| EarlyStopping {
            patience,
            min_delta: 0.0,
        }),
        augment: (args.augment || defaults.augment && !args.no_augment).then_some(augment),
        ..FitConfig::default()
    };
    let frozen = match args.freeze.as_slice() {
        [] => String::new(),
        layers => format!(", frozen: {}", layers.join(", ")),
    };
    println!(
        "Training for {} epochs, batch size {}, {} (learning rate {}){frozen}",
        config.epochs,
        config.batch_size,
        optimizer.optimizer().name(),
        optimizer.learning_rate(0),
    );
    config
}

/// What `fit` validates on: `--validation-split` of the training set, else the test set.
pub fn validation<'d>(args: &Args, test: &'d Dataset<Image>) -> Validation<'d, Image> {
    match args.validation_split {
        Some(fraction) => Validation::Split(fraction),
        None => Validation::Data(test),
    }
}

/// Prints the test loss and accuracy, the first ten predictions with their probabilities, the
/// confusion matrix and per-class metrics; returns every predicted class.
pub fn report<N>(network: &N, test: &Dataset<Image>) -> Result<Vec<usize>, Box<dyn Error>>
where
    N: Network<Input = Image, Output = Flat<10>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    let evaluation = evaluate(network, test, 256)?;
    println!("Test loss: {:.4}", evaluation.loss);
    println!("Test accuracy: {:.4}", evaluation.accuracy);
    let predictions = predict(network, test.images(), 256)?;
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
    Ok(predictions.classes)
}

/// Saves the weights where `--save` says, and exports the network where `--export-onnx` says.
pub fn save<N: Network>(network: &N, args: &Args) -> Result<(), Box<dyn Error>> {
    if let Some(path) = &args.save {
        weights::save(network, path)?;
        println!("Saved weights to {}", path.display());
    }
    if let Some(path) = &args.export_onnx {
        constnet::onnx::export(network, path)?;
        println!(
            "Exported the network to {} (ONNX, NHWC input)",
            path.display()
        );
    }
    Ok(())
}

/// Runs an example's `main`, printing its error and failing the process on one.
pub fn exit_on_error(result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
