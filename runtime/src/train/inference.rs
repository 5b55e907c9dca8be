//! Inference over whole data sets: [`evaluate`] (loss, accuracy, confusion matrix) and
//! [`predict`] (probabilities and classes), both in batches through one reused workspace.

use super::TrainError;
use super::checks::{check_batch_size, check_labels, check_not_empty};
use crate::data::Dataset;
use crate::layers::softmax_row;
use crate::loss::argmax;
use crate::metrics::{ConfusionMatrix, Evaluation};
use crate::network::Network;
use crate::shape::{Flat, Shape};
use crate::tensor::Batch;

/// Runs inference over `images` in batches of `batch_size` (at least 1), calling
/// `visit(first_index, probabilities)` for each batch's class probabilities.
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
    for (chunk, values) in images
        .as_slice()
        .chunks(batch_size * N::Input::LEN)
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
        visit(chunk * batch_size, &probabilities);
    }
}

/// Loss, accuracy and confusion matrix of `network` on `data`, in inference mode. The loss is
/// the mean of `−ln p(label)`, with `p` clipped at 1e-7 as Keras does.
///
/// # Errors
/// [`TrainError::BatchSize`] for a batch size of 0, [`TrainError::EmptyData`] for an empty
/// data set, [`TrainError::LabelOutOfRange`] for a label the network has no output for.
pub fn evaluate<N, const C: usize>(
    network: &N,
    data: &Dataset<N::Input>,
    batch_size: usize,
) -> Result<Evaluation, TrainError>
where
    N: Network<Output = Flat<C>>,
{
    check_batch_size(batch_size)?;
    check_not_empty("evaluation", data.len())?;
    check_labels("evaluation", data, C)?;
    let mut confusion = ConfusionMatrix::new(C);
    let mut loss_sum = 0.0f64;
    infer_batches(
        network,
        data.images(),
        batch_size,
        |first, probabilities| {
            for (i, (p, predicted)) in probabilities
                .as_slice()
                .chunks(C)
                .zip(argmax(probabilities))
                .enumerate()
            {
                let label = data.labels()[first + i];
                loss_sum -= (p[label].max(1e-7) as f64).ln();
                confusion.add(label, predicted);
            }
        },
    );
    Ok(Evaluation {
        loss: (loss_sum / data.len() as f64) as f32,
        accuracy: confusion.accuracy(),
        confusion,
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

/// Class probabilities (softmax applied if the network does not end with it) and the predicted
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
{
    check_batch_size(batch_size)?;
    check_not_empty("prediction", images.len())?;
    let mut all = Batch::zeros(images.len());
    infer_batches(network, images, batch_size, |first, probabilities| {
        all.as_mut_slice()[first * C..first * C + probabilities.as_slice().len()]
            .copy_from_slice(probabilities.as_slice());
    });
    let classes = argmax(&all);
    Ok(Predictions {
        probabilities: all,
        classes,
    })
}
