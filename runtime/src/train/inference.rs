//! Inference over whole data sets: [`evaluate`] (loss, accuracy, confusion matrix),
//! [`evaluate_with`] (any loss and its metric), [`predict`] (probabilities and classes) and
//! [`predict_outputs`] (what the network outputs), all in batches through one reused workspace.

use super::TrainError;
use super::checks::{check_batch_size, check_not_empty, check_targets};
use crate::data::Dataset;
use crate::loss::{FitsHead, Head, Loss, OutputActivation, SparseCategoricalCrossentropy, argmax};
use crate::metrics::{ConfusionMatrix, Evaluation};
use crate::network::Network;
use crate::shape::{Flat, Shape};
use crate::tensor::Batch;

/// What inference over a data set runs batch by batch: a network, or its int8 form
/// ([`crate::quant::Quantized`]), giving `C` outputs per sample.
pub(crate) trait BatchInference<const C: usize> {
    /// One sample's shape.
    type Input: Shape;
    /// The buffers a call keeps its values in.
    type Workspace: Default;
    /// What the last layer applies to the outputs.
    const ACTIVATION: OutputActivation;

    /// Inference of one batch; the result lives in `workspace`.
    fn infer_batch<'w>(
        &self,
        input: &Batch<Self::Input>,
        workspace: &'w mut Self::Workspace,
    ) -> &'w Batch<Flat<C>>;
}

impl<N: Network<Output = Flat<C>>, const C: usize> BatchInference<C> for N {
    type Input = N::Input;
    type Workspace = N::Cache;
    const ACTIVATION: OutputActivation = <N::Head as Head>::ACTIVATION;

    fn infer_batch<'w>(
        &self,
        input: &Batch<N::Input>,
        workspace: &'w mut N::Cache,
    ) -> &'w Batch<Flat<C>> {
        self.infer(input, workspace)
    }
}

/// Runs inference over `images` in batches of `batch_size` (at least 1), calling
/// `visit(first_index, outputs)` for each batch's outputs with `activation` applied, unless
/// the network's last layer already applies it.
fn infer_batches<I: BatchInference<C>, const C: usize>(
    network: &I,
    images: &Batch<I::Input>,
    batch_size: usize,
    activation: OutputActivation,
    mut visit: impl FnMut(usize, &Batch<Flat<C>>),
) {
    let mut workspace = I::Workspace::default();
    let (mut batch, mut activated) = (Batch::default(), Batch::default());
    for (chunk, values) in images
        .as_slice()
        .chunks(batch_size * I::Input::LEN)
        .enumerate()
    {
        batch.set_samples(values);
        let output = network.infer_batch(&batch, &mut workspace);
        if I::ACTIVATION == activation {
            visit(chunk * batch_size, output);
            continue;
        }
        activated.resize(output.len());
        for (logits, out) in output
            .as_slice()
            .chunks(C)
            .zip(activated.as_mut_slice().chunks_mut(C))
        {
            activation.apply(logits, out);
        }
        visit(chunk * batch_size, &activated);
    }
}

/// Loss, accuracy and confusion matrix of `network` on `data`, in inference mode. The loss is
/// the mean of `−ln p(label)`, with `p` clipped at 1e-7 as Keras does.
///
/// # Errors
/// [`TrainError::BatchSize`] for a batch size of 0, [`TrainError::EmptyData`] for an empty
/// data set, [`TrainError::InvalidTarget`] for a label the network has no output for.
pub fn evaluate<N, const C: usize>(
    network: &N,
    data: &Dataset<N::Input>,
    batch_size: usize,
) -> Result<Evaluation, TrainError>
where
    N: Network<Output = Flat<C>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    evaluate_classes(network, data, batch_size)
}

/// [`evaluate`] of anything that runs inference batch by batch: a network or its int8 form.
pub(crate) fn evaluate_classes<I: BatchInference<C>, const C: usize>(
    network: &I,
    data: &Dataset<I::Input>,
    batch_size: usize,
) -> Result<Evaluation, TrainError> {
    let loss = SparseCategoricalCrossentropy;
    check_batch_size(batch_size)?;
    check_not_empty("evaluation", data.len())?;
    check_targets::<_, SparseCategoricalCrossentropy, C>("evaluation", data)?;
    let mut confusion = ConfusionMatrix::new(C);
    let mut loss_sum = 0.0f64;
    infer_batches(
        network,
        data.images(),
        batch_size,
        OutputActivation::Softmax,
        |first, probabilities| {
            let labels = &data.labels()[first..];
            for ((p, predicted), label) in probabilities
                .as_slice()
                .chunks(C)
                .zip(argmax(probabilities))
                .zip(labels)
            {
                loss_sum += Loss::<C>::sample_loss(&loss, p, label);
                confusion.add(*label, predicted);
            }
        },
    );
    Ok(Evaluation {
        loss: (loss_sum / data.len() as f64) as f32,
        accuracy: confusion.accuracy(),
        confusion,
    })
}

/// A loss and its metric over a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// The mean loss, from the outputs of inference (probabilities clipped as Keras does).
    pub loss: f32,
    /// The mean of the loss's metric ([`Loss::METRIC`] names it).
    pub metric: f32,
}

/// `loss` and its metric for `network` on `data`, in inference mode.
///
/// # Errors
/// [`TrainError::BatchSize`] for a batch size of 0, [`TrainError::EmptyData`] for an empty
/// data set, [`TrainError::InvalidTarget`] for a target `loss` cannot use.
pub fn evaluate_with<N, L, const C: usize>(
    network: &N,
    loss: L,
    data: &Dataset<N::Input, L::Target>,
    batch_size: usize,
) -> Result<Score, TrainError>
where
    N: Network<Output = Flat<C>>,
    L: Loss<C>,
    L: FitsHead<N::Head>,
{
    check_batch_size(batch_size)?;
    check_not_empty("evaluation", data.len())?;
    check_targets::<_, L, C>("evaluation", data)?;
    let (mut loss_sum, mut metric_sum) = (0.0f64, 0.0f64);
    infer_batches(
        network,
        data.images(),
        batch_size,
        L::ACTIVATION,
        |first, outputs| {
            let targets = &data.targets()[first..];
            for (row, target) in outputs.as_slice().chunks(C).zip(targets) {
                loss_sum += loss.sample_loss(row, target);
                metric_sum += loss.sample_metric(row, target);
            }
        },
    );
    let samples = data.len() as f64;
    Ok(Score {
        loss: (loss_sum / samples) as f32,
        metric: (metric_sum / samples) as f32,
    })
}

/// Class probabilities and predicted classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions<const C: usize> {
    /// One probability distribution per sample.
    pub probabilities: Batch<Flat<C>>,
    /// The most probable class of each sample.
    pub classes: Vec<usize>,
}

/// Class probabilities (softmax applied if the network ends with its logits) and the predicted
/// class of every image, in inference mode.
///
/// # Errors
/// [`TrainError::BatchSize`] for a batch size of 0, [`TrainError::EmptyData`] for no images.
pub fn predict<N, const C: usize>(
    network: &N,
    images: &Batch<N::Input>,
    batch_size: usize,
) -> Result<Predictions<C>, TrainError>
where
    N: Network<Output = Flat<C>>,
    SparseCategoricalCrossentropy: FitsHead<N::Head>,
{
    let probabilities = outputs(network, images, batch_size, OutputActivation::Softmax)?;
    let classes = argmax(&probabilities);
    Ok(Predictions {
        probabilities,
        classes,
    })
}

/// What `network` outputs for every image, in inference mode: values for regression, label
/// probabilities after a final sigmoid.
///
/// # Errors
/// [`TrainError::BatchSize`] for a batch size of 0, [`TrainError::EmptyData`] for no images.
pub fn predict_outputs<N, const C: usize>(
    network: &N,
    images: &Batch<N::Input>,
    batch_size: usize,
) -> Result<Batch<Flat<C>>, TrainError>
where
    N: Network<Output = Flat<C>>,
{
    outputs(network, images, batch_size, <N::Head as Head>::ACTIVATION)
}

/// The outputs of `network` for every image, `activation` applied unless the network applies
/// it.
fn outputs<N, const C: usize>(
    network: &N,
    images: &Batch<N::Input>,
    batch_size: usize,
    activation: OutputActivation,
) -> Result<Batch<Flat<C>>, TrainError>
where
    N: Network<Output = Flat<C>>,
{
    check_batch_size(batch_size)?;
    check_not_empty("prediction", images.len())?;
    let mut all = Batch::zeros(images.len());
    infer_batches(network, images, batch_size, activation, |first, outputs| {
        all.as_mut_slice()[first * C..first * C + outputs.as_slice().len()]
            .copy_from_slice(outputs.as_slice());
    });
    Ok(all)
}
