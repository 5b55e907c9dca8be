//! The checks `fit`, `evaluate` and `predict` make before they touch anything, each failing
//! with the [`TrainError`] that names the problem.

use std::borrow::Cow;

use super::{FitConfig, TrainError, Validation};
use crate::data::Dataset;
use crate::loss::Loss;
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

/// Every target of `data` one that loss `L` can train a network of `C` outputs on.
pub(super) fn check_targets<S: Shape, L: Loss<C>, const C: usize>(
    set: &'static str,
    data: &Dataset<S, L::Target>,
) -> Result<(), TrainError> {
    let problem = data
        .targets()
        .iter()
        .enumerate()
        .find_map(|(sample, target)| Some((sample, L::target_problem(target)?)));
    match problem {
        Some((sample, problem)) => Err(TrainError::InvalidTarget {
            set,
            sample,
            problem,
        }),
        None => Ok(()),
    }
}

/// The training set and the validation set, if any, each borrowed or (after a split) owned.
pub(super) type TrainingSets<'a, S, T> = (Cow<'a, Dataset<S, T>>, Option<Cow<'a, Dataset<S, T>>>);

/// The training set and validation set (if any) `fit` runs on: `train` itself or, for a
/// validation split, its two parts; both checked against the configuration and loss `L` on a
/// network of `C` outputs.
pub(super) fn training_sets<'a, S: Shape, L: Loss<C>, const C: usize>(
    train: &'a Dataset<S, L::Target>,
    validation: Validation<'a, S, L::Target>,
    config: &FitConfig,
) -> Result<TrainingSets<'a, S, L::Target>, TrainError> {
    check_batch_size(config.batch_size)?;
    check_not_empty("training", train.len())?;
    check_targets::<S, L, C>("training", train)?;
    if config.augment.is_some() && S::DIMS.len() != 3 {
        return Err(TrainError::AugmentNeedsImages {
            input: S::describe(),
        });
    }
    let sets = match validation {
        Validation::None => (Cow::Borrowed(train), None),
        Validation::Data(data) => {
            check_not_empty("validation", data.len())?;
            check_targets::<S, L, C>("validation", data)?;
            (Cow::Borrowed(train), Some(Cow::Borrowed(data)))
        }
        Validation::Split(fraction) => {
            let (train, validation) = train.split_validation(fraction)?;
            (Cow::Owned(train), Some(Cow::Owned(validation)))
        }
    };
    Ok(sets)
}
