//! Training and evaluation in the spirit of Keras: [`fit`], [`evaluate`], [`predict`].
//!
//! `fit` shuffles the training set every epoch with a seeded generator, trains batch by batch
//! through the network's logits and the fused softmax cross-entropy, reports the running loss and
//! accuracy on a progress bar, evaluates on validation data after each epoch, and can stop early
//! and keep the best weights on disk. The same seed gives the same weights on every run with the
//! same number of threads.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{Augment, Dataset, shuffled_indices};
use crate::layers::softmax_row;
use crate::loss::{argmax, sparse_softmax_cross_entropy};
use crate::metrics::{ConfusionMatrix, Evaluation};
use crate::network::Network;
use crate::optim::OptimizerState;
use crate::shape::Flat;
use crate::tensor::Batch;
use crate::weights::{self, WeightsError};

/// Where validation data comes from.
#[derive(Clone, Copy, Debug, Default)]
pub enum Validation<'a, S: crate::shape::Shape> {
    /// No validation.
    #[default]
    None,
    /// The last fraction of the training set, split off before training (Keras's
    /// `validation_split`).
    Split(f32),
    /// A separate data set (Keras's `validation_data`).
    Data(&'a Dataset<S>),
}

/// Stop when the monitored loss (validation loss if there is validation data, else training
/// loss) has not improved by `min_delta` for `patience` epochs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest decrease that counts as an improvement.
    pub min_delta: f32,
}

/// How [`fit`] trains.
#[derive(Clone, Debug)]
pub struct FitConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per gradient step.
    pub batch_size: usize,
    /// Shuffle the training set every epoch.
    pub shuffle: bool,
    /// Seed of the shuffling and augmentation.
    pub seed: u64,
    /// Early stopping, if any.
    pub early_stopping: Option<EarlyStopping>,
    /// Save the weights here whenever the monitored loss reaches a new best.
    pub checkpoint: Option<PathBuf>,
    /// Random shifts and rotations of training images, if any.
    pub augment: Option<Augment>,
    /// Print a progress bar and a line per epoch.
    pub verbose: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            early_stopping: None,
            checkpoint: None,
            augment: None,
            verbose: true,
        }
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch (dropout active, as Keras reports it).
    pub loss: f32,
    /// Training accuracy over the epoch.
    pub accuracy: f32,
    /// Validation loss, if validating.
    pub val_loss: Option<f32>,
    /// Validation accuracy, if validating.
    pub val_accuracy: Option<f32>,
    /// Wall-clock seconds for the epoch's training steps.
    pub seconds: f64,
    /// Learning rate used.
    pub learning_rate: f32,
}

/// What [`fit`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// One entry per epoch run.
    pub epochs: Vec<EpochStats>,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
}

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration cannot work.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The loss became NaN or infinite.
    #[error(
        "the loss diverged ({loss}) at epoch {epoch}, step {step}: lower the learning rate \
         (it is {learning_rate})"
    )]
    Diverged {
        /// The non-finite loss.
        loss: f32,
        /// Epoch, from 1.
        epoch: usize,
        /// Step within the epoch, from 1.
        step: usize,
        /// The learning rate in use.
        learning_rate: f32,
    },
    /// The checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] WeightsError),
}

/// A data set `fit` either borrows or owns (when it split off validation data).
type TrainSet<'a, S> = Cow<'a, Dataset<S>>;

/// Trains `network` on `train` with `optimizer`.
pub fn fit<N, const C: usize>(
    network: &mut N,
    optimizer: &mut OptimizerState,
    train: &Dataset<N::Input>,
    validation: Validation<'_, N::Input>,
    config: &FitConfig,
) -> Result<History, TrainError>
where
    N: Network<Output = Flat<C>>,
{
    if config.batch_size == 0 || train.is_empty() {
        return Err(TrainError::Config(format!(
            "{} training samples in batches of {}",
            train.len(),
            config.batch_size
        )));
    }
    if config.augment.is_some() && <N::Input as crate::shape::Shape>::DIMS.len() != 3 {
        return Err(TrainError::Config(
            "augmentation needs image inputs (h, w, c)".into(),
        ));
    }
    let (train, validation): (TrainSet<'_, N::Input>, Option<TrainSet<'_, N::Input>>) =
        match validation {
            Validation::None => (Cow::Borrowed(train), None),
            Validation::Data(data) => (Cow::Borrowed(train), Some(Cow::Borrowed(data))),
            Validation::Split(fraction) => {
                let (train, validation) = train.clone().split_validation(fraction);
                (Cow::Owned(train), Some(Cow::Owned(validation)))
            }
        };
    let steps = train.len().div_ceil(config.batch_size);
    let mut workspace = N::Cache::default();
    let mut grads = network.new_grads();
    let (mut batch, mut labels, mut grad_logits) = (Batch::default(), Vec::new(), Batch::default());
    let mut history = History::default();
    let (mut best, mut epochs_without_improvement) = (f32::INFINITY, 0);

    for epoch in 0..config.epochs {
        let started = Instant::now();
        let order: Vec<usize> = if config.shuffle {
            shuffled_indices(train.len(), config.seed.wrapping_add(epoch as u64))
        } else {
            (0..train.len()).collect()
        };
        let bar = progress_bar(config.verbose, steps, epoch, config.epochs);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (step, indices) in order.chunks(config.batch_size).enumerate() {
            train.gather(indices, &mut batch, &mut labels);
            if let Some(augment) = &config.augment {
                augment.apply(
                    &mut batch,
                    config.seed ^ ((epoch * steps + step) as u64) << 20,
                );
            }
            let logits = network.forward_logits(&batch, &mut workspace);
            correct += argmax(logits)
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            let loss = sparse_softmax_cross_entropy(logits, &labels, &mut grad_logits);
            if !loss.is_finite() {
                bar.abandon();
                return Err(TrainError::Diverged {
                    loss,
                    epoch: epoch + 1,
                    step: step + 1,
                    learning_rate: optimizer.learning_rate(epoch),
                });
            }
            network.backward_logits(&batch, &grad_logits, &mut workspace, None, &mut grads);
            optimizer.step(network, &grads, epoch);
            loss_sum += loss as f64 * indices.len() as f64;
            let seen = (step * config.batch_size + indices.len()) as f64;
            bar.set_message(format!(
                "loss: {:.4} - accuracy: {:.4}",
                loss_sum / seen,
                correct as f64 / seen
            ));
            bar.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let evaluation = validation
            .as_deref()
            .map(|data| evaluate(network, data, config.batch_size.max(128)));
        let stats = EpochStats {
            epoch: epoch + 1,
            loss: (loss_sum / train.len() as f64) as f32,
            accuracy: correct as f32 / train.len() as f32,
            val_loss: evaluation.as_ref().map(|e| e.loss),
            val_accuracy: evaluation.as_ref().map(|e| e.accuracy),
            seconds,
            learning_rate: optimizer.learning_rate(epoch),
        };
        if config.verbose {
            println!("{}", epoch_line(&stats, config.epochs, steps));
        }
        let monitored = stats.val_loss.unwrap_or(stats.loss);
        history.epochs.push(stats);
        if monitored < best - config.early_stopping.map_or(0.0, |e| e.min_delta) {
            best = monitored;
            epochs_without_improvement = 0;
            if let Some(path) = &config.checkpoint {
                weights::save(network, path)?;
            }
        } else {
            epochs_without_improvement += 1;
            if config
                .early_stopping
                .is_some_and(|e| epochs_without_improvement >= e.patience)
            {
                history.stopped_early = true;
                if config.verbose {
                    println!(
                        "Early stopping: no improvement for {epochs_without_improvement} epochs"
                    );
                }
                break;
            }
        }
    }
    Ok(history)
}

fn progress_bar(verbose: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} ETA {eta} - {msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(format!("Epoch {}/{epochs}", epoch + 1));
    bar
}

/// The line Keras prints after an epoch.
fn epoch_line(stats: &EpochStats, epochs: usize, steps: usize) -> String {
    let mut line = format!(
        "Epoch {}/{epochs} - {steps}/{steps} - {:.1}s {:.0}ms/step - accuracy: {:.4} - loss: {:.4}",
        stats.epoch,
        stats.seconds,
        stats.seconds * 1e3 / steps as f64,
        stats.accuracy,
        stats.loss
    );
    if let (Some(accuracy), Some(loss)) = (stats.val_accuracy, stats.val_loss) {
        line += &format!(" - val_accuracy: {accuracy:.4} - val_loss: {loss:.4}");
    }
    line
}

/// Runs inference over `images` in batches of `batch_size`, calling `visit(first_index,
/// probabilities)` for each batch's class probabilities.
fn infer_batches<N, const C: usize>(
    network: &N,
    images: &Batch<N::Input>,
    batch_size: usize,
    mut visit: impl FnMut(usize, &Batch<Flat<C>>),
) where
    N: Network<Output = Flat<C>>,
{
    let mut workspace = N::Cache::default();
    let (mut batch, mut probabilities) = (Batch::default(), Batch::default());
    let sample_len = <N::Input as crate::shape::Shape>::LEN;
    for (chunk, values) in images
        .as_slice()
        .chunks(batch_size.max(1) * sample_len)
        .enumerate()
    {
        batch.set_samples(values);
        let output = network.infer(&batch, &mut workspace);
        if N::ENDS_WITH_SOFTMAX {
            probabilities.copy_from(output);
        } else {
            probabilities.resize(output.len());
            for (logits, p) in output
                .as_slice()
                .chunks(C)
                .zip(probabilities.as_mut_slice().chunks_mut(C))
            {
                softmax_row(logits, p);
            }
        }
        visit(chunk * batch_size.max(1), &probabilities);
    }
}

/// Loss, accuracy and confusion matrix of `network` on `data`, in inference mode. The loss is
/// the mean of `−ln p(label)`, with `p` clipped at 1e-7 as Keras does.
pub fn evaluate<N, const C: usize>(
    network: &N,
    data: &Dataset<N::Input>,
    batch_size: usize,
) -> Evaluation
where
    N: Network<Output = Flat<C>>,
{
    let mut confusion = ConfusionMatrix::new(C);
    let mut loss_sum = 0.0f64;
    infer_batches(network, &data.images, batch_size, |first, probabilities| {
        for (i, (p, predicted)) in probabilities
            .as_slice()
            .chunks(C)
            .zip(argmax(probabilities))
            .enumerate()
        {
            let label = data.labels[first + i];
            loss_sum -= (p[label].max(1e-7) as f64).ln();
            confusion.add(label, predicted);
        }
    });
    Evaluation {
        loss: (loss_sum / data.len().max(1) as f64) as f32,
        accuracy: confusion.accuracy(),
        confusion,
    }
}

/// Class probabilities and predicted classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions<const C: usize> {
    /// One probability distribution per sample.
    pub probabilities: Batch<Flat<C>>,
    /// The most probable class of each sample.
    pub classes: Vec<usize>,
}

/// Class probabilities (softmax applied if the network does not end with it) and the predicted
/// class of every image, in inference mode.
pub fn predict<N, const C: usize>(
    network: &N,
    images: &Batch<N::Input>,
    batch_size: usize,
) -> Predictions<C>
where
    N: Network<Output = Flat<C>>,
{
    let mut all = Batch::zeros(images.len());
    infer_batches(network, images, batch_size, |first, probabilities| {
        all.as_mut_slice()[first * C..first * C + probabilities.as_slice().len()]
            .copy_from_slice(probabilities.as_slice());
    });
    let classes = argmax(&all);
    Predictions {
        probabilities: all,
        classes,
    }
}
