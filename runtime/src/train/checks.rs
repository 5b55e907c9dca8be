//! The checks `fit`, `evaluate` and `predict` make before they touch anything, each failing
//! with the [`TrainError`] that names the problem.

use std::borrow::Cow;

use super::{FitConfig, TrainError, Validation};
use crate::data::Dataset;
use crate::shape::Shape;

/// A batch size of at least one sample.
pub(super) fn check_batch_size(batch_size: usize) -> Result<(), TrainError> {
    if batch_size == 0 {
        return Err(TrainError::BatchSize);
    }
    Ok(())
}

/// At least one sample in the set called `set`.
pub(super) fn check_not_empty(set: &'static str, samples: usize) -> Result<(), TrainError> {
    if samples == 0 {
        return Err(TrainError::EmptyData { set });
    }
    Ok(())
}

/// Every label of `data` below the network's `outputs`.
pub(super) fn check_labels<S: Shape>(
    set: &'static str,
    data: &Dataset<S>,
    outputs: usize,
) -> Result<(), TrainError> {
    if data.classes() <= outputs {
        return Ok(());
    }
    match data
        .labels()
        .iter()
        .enumerate()
        .find(|(_, l)| **l >= outputs)
    {
        Some((sample, &label)) => Err(TrainError::LabelOutOfRange {
            set,
            sample,
            label,
            outputs,
        }),
        None => Ok(()),
    }
}

/// The training set and the validation set, if any, each borrowed or (after a split) owned.
pub(super) type TrainingSets<'a, S> = (Cow<'a, Dataset<S>>, Option<Cow<'a, Dataset<S>>>);

/// The training set and validation set (if any) `fit` runs on: `train` itself or, for a
/// validation split, its two parts; both checked against the configuration and a network of
/// `outputs` classes.
pub(super) fn training_sets<'a, S: Shape>(
    train: &'a Dataset<S>,
    validation: Validation<'a, S>,
    config: &FitConfig,
    outputs: usize,
) -> Result<TrainingSets<'a, S>, TrainError> {
    check_batch_size(config.batch_size)?;
    check_not_empty("training", train.len())?;
    check_labels("training", train, outputs)?;
    if config.augment.is_some() && S::DIMS.len() != 3 {
        return Err(TrainError::AugmentNeedsImages {
            input: S::describe(),
        });
    }
    let sets = match validation {
        Validation::None => (Cow::Borrowed(train), None),
        Validation::Data(data) => {
            check_not_empty("validation", data.len())?;
            check_labels("validation", data, outputs)?;
            (Cow::Borrowed(train), Some(Cow::Borrowed(data)))
        }
        Validation::Split(fraction) => {
            let (train, validation) = train.split_validation(fraction)?;
            (Cow::Owned(train), Some(Cow::Owned(validation)))
        }
    };
    Ok(sets)
}
