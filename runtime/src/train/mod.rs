//! Training and evaluation in the spirit of Keras: [`fit`], [`evaluate`], [`predict`].
//!
//! `fit` shuffles the training set every epoch with a seeded generator, trains batch by batch
//! through the network's logits and the fused softmax cross-entropy ([`fit_with`]: any [`Loss`]
//! the network's head fits, such as mean squared error on target vectors), reports the running
//! loss and metric on a progress bar, evaluates on validation data after each epoch, and can
//! stop early and keep the best weights on disk. The same seed gives bit-identical weights on every run, on
//! any number of threads. Everything is checked before anything changes (`checks`), and a step
//! that produces a NaN or an infinity is not applied: `fit` returns an error naming where it
//! first appeared (`divergence`), with the network and optimiser as they were before that step.

mod checks;
mod divergence;
mod inference;
mod progress;

use std::path::PathBuf;
use std::time::Instant;

pub use divergence::NonFinite;
pub(crate) use inference::{BatchInference, evaluate_classes};
pub use inference::{Predictions, Score, evaluate, evaluate_with, predict, predict_outputs};

use crate::data::{Augment, DataError, Dataset, shuffled_indices};
use crate::loss::{FitsHead, Loss, SparseCategoricalCrossentropy};
use crate::network::Network;
use crate::optim::{OptimizerError, OptimizerState};
use crate::shape::Flat;
use crate::tensor::Batch;
use crate::weights::{self, WeightsError};
use divergence::{BufferSnapshot, grads_finite};
use progress::EpochBar;

/// Where validation data comes from (samples of shape `S` with targets of type `T`).
#[derive(Clone, Copy, Debug, Default)]
pub enum Validation<'a, S: crate::shape::Shape, T = usize> {
    /// No validation.
    #[default]
    None,
    /// The last fraction of the training set, split off before training (Keras's
    /// `validation_split`).
    Split(f32),
    /// A separate data set (Keras's `validation_data`).
    Data(&'a Dataset<S, T>),
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
    /// The loss's metric over the epoch's training batches ([`History::metric`] names it:
    /// accuracy for classification).
    pub metric: f32,
    /// Validation loss, if validating.
    pub val_loss: Option<f32>,
    /// The metric on the validation data, if validating.
    pub val_metric: Option<f32>,
    /// Wall-clock seconds for the epoch's training steps.
    pub seconds: f64,
    /// Learning rate used.
    pub learning_rate: f32,
}

/// What [`fit`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The metric each epoch reports, as Keras names it: `accuracy`, `mae` or `binary_accuracy`.
    pub metric: &'static str,
    /// One entry per epoch run.
    pub epochs: Vec<EpochStats>,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
}

/// Why training, evaluation or prediction stopped with an error. Every check runs before
/// anything is changed; a diverged step is not applied.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A batch size of zero.
    #[error("the batch size must be at least 1")]
    BatchSize,
    /// A data set with no sample.
    #[error("the {set} data is empty")]
    EmptyData {
        /// Which set: `training`, `validation`, `evaluation` or `prediction`.
        set: &'static str,
    },
    /// A target the loss cannot train on: a label the network has no output for, a
    /// binary cross-entropy target outside [0, 1].
    #[error("{set} sample {sample}: {problem}")]
    InvalidTarget {
        /// Which set: `training`, `validation` or `evaluation`.
        set: &'static str,
        /// The sample's index in that set.
        sample: usize,
        /// What is wrong with its target.
        problem: String,
    },
    /// Augmentation asked of a network whose input is not an image.
    #[error("augmentation needs image inputs (h, w, c), but this network's input is {input}")]
    AugmentNeedsImages {
        /// The network's input shape.
        input: String,
    },
    /// The data cannot be used as asked (e.g. a validation split that leaves a side empty).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The optimiser state cannot be applied to this network.
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    /// A step produced a NaN or an infinity. It was not applied: the network's weights and
    /// buffers and the optimiser state are those from before it.
    #[error(
        "training diverged at epoch {epoch}, step {step}: {origin} became non-finite (loss \
         {loss}); the weights and optimiser state are those from before this step. Check the \
         input data or lower the learning rate (it is {learning_rate})"
    )]
    Diverged {
        /// Where the first non-finite value appeared.
        origin: NonFinite,
        /// The step's loss.
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

/// Trains `network` on `train` with `optimizer`: class labels, softmax cross-entropy, accuracy
/// (Keras's `sparse_categorical_crossentropy`). [`fit_with`] takes any loss.
///
/// # Errors
/// As [`fit_with`].
pub fn fit<N, const C: usize>(
    network: &mut N,
    optimizer: &mut OptimizerState,
    train: &Dataset<N::Input>,
    validation: Validation<'_, N::Input>,
    config: &FitConfig,
) -> Result<History, TrainError>
where
    N: Network<Output = Flat<C>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    fit_with(
        network,
        SparseCategoricalCrossentropy,
        optimizer,
        train,
        validation,
        config,
    )
}

/// Trains `network` on `train` with `optimizer` to minimise `loss`, whose targets the data
/// sets hold (class labels, or target vectors for regression and multi-label classification).
/// The compiler checks that the loss fits the network's last layer (mean squared error needs no
/// final softmax).
///
/// # Errors
/// Before training: a batch size of 0, empty data, a target the loss cannot use (a label the
/// network has no output for), a validation split that leaves either side empty, augmentation of
/// non-images, an optimiser state made on another network ([`TrainError`] says which). During
/// training: a step that produced a non-finite value ([`TrainError::Diverged`], the step not
/// applied), or a checkpoint that could not be written.
pub fn fit_with<N, L, const C: usize>(
    network: &mut N,
    loss: L,
    optimizer: &mut OptimizerState,
    train: &Dataset<N::Input, L::Target>,
    validation: Validation<'_, N::Input, L::Target>,
    config: &FitConfig,
) -> Result<History, TrainError>
where
    N: Network<Output = Flat<C>>,
    L: Loss<C>,
    L: FitsHead<N::Head>,
{
    let (train, validation) = checks::training_sets::<_, L, C>(train, validation, config)?;
    optimizer.check_network(network)?;
    let mut stepper = Stepper::<N, L, C>::new(network, loss);
    let mut history = History {
        metric: L::METRIC,
        ..History::default()
    };
    let mut monitor = Monitor::new(config.early_stopping);
    for epoch in 0..config.epochs {
        let mut stats = stepper.run_epoch(network, optimizer, &train, config, epoch)?;
        if let Some(data) = validation.as_deref() {
            let score = evaluate_with(network, loss, data, config.batch_size.max(128))?;
            (stats.val_loss, stats.val_metric) = (Some(score.loss), Some(score.metric));
        }
        if config.verbose {
            let steps = train.len().div_ceil(config.batch_size);
            println!("{}", epoch_line(&stats, L::METRIC, config.epochs, steps));
        }
        let progress = monitor.observe(stats.val_loss.unwrap_or(stats.loss));
        history.epochs.push(stats);
        match progress {
            Progress::Improved => {
                if let Some(path) = &config.checkpoint {
                    weights::save(network, path)?;
                }
            }
            Progress::Stalled => {}
            Progress::Stop => {
                history.stopped_early = true;
                if config.verbose {
                    println!(
                        "Early stopping: no improvement for {} epochs",
                        monitor.stalled
                    );
                }
                break;
            }
        }
    }
    Ok(history)
}

/// What the monitored loss did in an epoch.
enum Progress {
    /// A new best: save the checkpoint.
    Improved,
    /// No new best, and patience is not exhausted.
    Stalled,
    /// No new best for `patience` epochs: stop.
    Stop,
}

/// Early stopping's bookkeeping: the best monitored loss and the epochs since it.
struct Monitor {
    early_stopping: Option<EarlyStopping>,
    best: f32,
    stalled: usize,
}

impl Monitor {
    fn new(early_stopping: Option<EarlyStopping>) -> Self {
        Self {
            early_stopping,
            best: f32::INFINITY,
            stalled: 0,
        }
    }

    fn observe(&mut self, monitored: f32) -> Progress {
        let min_delta = self.early_stopping.map_or(0.0, |e| e.min_delta);
        if monitored < self.best - min_delta {
            (self.best, self.stalled) = (monitored, 0);
            return Progress::Improved;
        }
        self.stalled += 1;
        match self.early_stopping {
            Some(e) if self.stalled >= e.patience => Progress::Stop,
            _ => Progress::Stalled,
        }
    }
}

/// The loss and the buffers one training run reuses for every step.
struct Stepper<N: Network, L: Loss<C>, const C: usize> {
    loss: L,
    workspace: N::Cache,
    grads: N::Grads,
    batch: Batch<N::Input>,
    targets: Vec<L::Target>,
    grad_logits: Batch<Flat<C>>,
    buffers_before_step: BufferSnapshot,
}

impl<N: Network<Output = Flat<C>>, L: Loss<C>, const C: usize> Stepper<N, L, C> {
    fn new(network: &N, loss: L) -> Self {
        Self {
            loss,
            workspace: N::Cache::default(),
            grads: network.new_grads(),
            batch: Batch::default(),
            targets: Vec::new(),
            grad_logits: Batch::default(),
            buffers_before_step: BufferSnapshot::default(),
        }
    }

    /// One pass over `train` in batches; the validation figures are left to the caller.
    fn run_epoch(
        &mut self,
        network: &mut N,
        optimizer: &mut OptimizerState,
        train: &Dataset<N::Input, L::Target>,
        config: &FitConfig,
        epoch: usize,
    ) -> Result<EpochStats, TrainError> {
        let started = Instant::now();
        let order: Vec<usize> = if config.shuffle {
            shuffled_indices(train.len(), config.seed.wrapping_add(epoch as u64))
        } else {
            (0..train.len()).collect()
        };
        let steps = train.len().div_ceil(config.batch_size);
        let bar = EpochBar::new(config.verbose, steps, epoch, config.epochs);
        let (mut loss_sum, mut metric_sum) = (0.0f64, 0.0f64);
        for (step, indices) in order.chunks(config.batch_size).enumerate() {
            train.gather(indices, &mut self.batch, &mut self.targets);
            if let Some(augment) = &config.augment {
                augment.apply(
                    &mut self.batch,
                    augment_seed(config.seed, epoch, steps, step),
                );
            }
            let (loss, batch_metric) = self
                .step(network, optimizer, indices, epoch)
                .inspect_err(|_| bar.abandon())
                .map_err(|failure| failure.at(epoch + 1, step + 1))?;
            loss_sum += loss as f64 * indices.len() as f64;
            metric_sum += batch_metric;
            let seen = (step * config.batch_size + indices.len()) as f64;
            bar.step(|| {
                format!(
                    "loss: {:.4} - {}: {:.4}",
                    loss_sum / seen,
                    L::METRIC,
                    metric_sum / seen
                )
            });
        }
        bar.finish();
        Ok(EpochStats {
            epoch: epoch + 1,
            loss: (loss_sum / train.len() as f64) as f32,
            metric: (metric_sum / train.len() as f64) as f32,
            val_loss: None,
            val_metric: None,
            seconds: started.elapsed().as_secs_f64(),
            learning_rate: optimizer.learning_rate(epoch),
        })
    }

    /// One gradient step on the gathered batch (rows are the training samples `indices`):
    /// returns the loss and the sum of the metric over the batch. When the step yields a
    /// non-finite value it is not applied, and the network's buffers are put back.
    fn step(
        &mut self,
        network: &mut N,
        optimizer: &mut OptimizerState,
        indices: &[usize],
        epoch: usize,
    ) -> Result<(f32, f64), StepFailure> {
        self.buffers_before_step.take(network);
        let logits = network.forward_logits(&self.batch, &mut self.workspace);
        let metric = metric_sum(&self.loss, logits, &self.targets);
        let loss = self
            .loss
            .loss_and_gradient(logits, &self.targets, &mut self.grad_logits);
        let backward_ran = loss.is_finite();
        if backward_ran {
            network.backward_logits(
                &self.batch,
                &self.grad_logits,
                &mut self.workspace,
                None,
                &mut self.grads,
            );
        }
        if !backward_ran || !grads_finite(&self.grads) {
            self.buffers_before_step.restore(network);
            let origin = divergence::locate::<N>(
                self.batch.as_slice(),
                indices,
                &self.workspace,
                &self.grads,
                backward_ran,
            );
            return Err(StepFailure::Diverged {
                origin,
                loss,
                learning_rate: optimizer.learning_rate(epoch),
            });
        }
        optimizer.step(network, &self.grads, epoch)?;
        Ok((loss, metric))
    }
}

/// The sum over a batch of `loss`'s metric, from the logits with the loss's activation applied.
fn metric_sum<L: Loss<C>, const C: usize>(
    loss: &L,
    logits: &Batch<Flat<C>>,
    targets: &[L::Target],
) -> f64 {
    let mut outputs = [0.0; C];
    logits
        .as_slice()
        .chunks_exact(C)
        .zip(targets)
        .map(|(row, target)| {
            L::ACTIVATION.apply(row, &mut outputs);
            loss.sample_metric(&outputs, target)
        })
        .sum()
}

/// Why a step failed, before the epoch and step numbers are attached.
enum StepFailure {
    Diverged {
        origin: NonFinite,
        loss: f32,
        learning_rate: f32,
    },
    Optimizer(OptimizerError),
}

impl From<OptimizerError> for StepFailure {
    fn from(error: OptimizerError) -> Self {
        Self::Optimizer(error)
    }
}

impl StepFailure {
    /// The error, for step `step` of epoch `epoch` (both from 1).
    fn at(self, epoch: usize, step: usize) -> TrainError {
        match self {
            Self::Diverged {
                origin,
                loss,
                learning_rate,
            } => TrainError::Diverged {
                origin,
                loss,
                epoch,
                step,
                learning_rate,
            },
            Self::Optimizer(error) => error.into(),
        }
    }
}

/// The augmentation seed of one step: distinct for every step of a run.
fn augment_seed(seed: u64, epoch: usize, steps: usize, step: usize) -> u64 {
    seed ^ ((epoch * steps + step) as u64) << 20
}

/// The line Keras prints after an epoch whose metric is called `metric`.
fn epoch_line(stats: &EpochStats, metric: &str, epochs: usize, steps: usize) -> String {
    let mut line = format!(
        "Epoch {}/{epochs} - {steps}/{steps} - {:.1}s {:.0}ms/step - {metric}: {:.4} - loss: {:.4}",
        stats.epoch,
        stats.seconds,
        stats.seconds * 1e3 / steps as f64,
        stats.metric,
        stats.loss
    );
    if let (Some(value), Some(loss)) = (stats.val_metric, stats.val_loss) {
        line += &format!(" - val_{metric}: {value:.4} - val_loss: {loss:.4}");
    }
    line
}
