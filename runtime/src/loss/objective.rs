//! Losses as objects [`fit_with`](crate::train::fit_with) and
//! [`evaluate_with`](crate::train::evaluate_with) train and score with: each pairs a loss fused
//! with its gradient on the logits with the target it reads (a class, or a vector), the function
//! between logits and outputs, the loss of an output as evaluation reports it, and a metric.
//!
//! Which networks a loss fits is checked by the compiler: the loss must implement [`FitsHead`]
//! for the network's [`head`] (its last layer: softmax, sigmoid, or none), so training a softmax
//! network on mean squared error is a compile error that says so.

use std::fmt::Debug;

use crate::kernels::elementwise::sigmoid;
use crate::layers::softmax_row;
use crate::shape::Flat;
use crate::tensor::Batch;

/// What ends a network: what its training pass stops before (its logits are that layer's
/// input), as a type, so a loss can ask for the one it fits.
pub mod head {
    /// The last layer is softmax: the logits are class scores.
    #[derive(Clone, Copy, Debug)]
    pub struct Softmax;
    /// The last layer is sigmoid: the logits are one score per label.
    #[derive(Clone, Copy, Debug)]
    pub struct Sigmoid;
    /// Neither: the outputs are the logits (values for regression, or class scores).
    #[derive(Clone, Copy, Debug)]
    pub struct Linear;
}

/// What turns logits into a network's (or a loss's) outputs: the activation of a network's
/// head (not to be confused with [`crate::layers::Activation`], the activation layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputActivation {
    /// Softmax over the outputs.
    Softmax,
    /// Sigmoid of each output.
    Sigmoid,
    /// The logits as they are.
    Identity,
}

impl OutputActivation {
    /// `out = activation(logits)`, one sample.
    pub fn apply(self, logits: &[f32], out: &mut [f32]) {
        match self {
            OutputActivation::Softmax => softmax_row(logits, out),
            OutputActivation::Sigmoid => {
                for (o, &z) in out.iter_mut().zip(logits) {
                    *o = sigmoid(z);
                }
            }
            OutputActivation::Identity => out.copy_from_slice(logits),
        }
    }
}

/// A network head: the activation its last layer applies to the logits.
pub trait Head {
    /// The activation of the last layer.
    const ACTIVATION: OutputActivation;
}

impl Head for head::Softmax {
    const ACTIVATION: OutputActivation = OutputActivation::Softmax;
}
impl Head for head::Sigmoid {
    const ACTIVATION: OutputActivation = OutputActivation::Sigmoid;
}
impl Head for head::Linear {
    const ACTIVATION: OutputActivation = OutputActivation::Identity;
}

/// A training objective for a network of `C` outputs.
pub trait Loss<const C: usize>: Copy + Debug + Send + Sync {
    /// One sample's target: a class label or a vector.
    type Target: Copy + Debug + Send + Sync;
    /// What turns logits into the outputs the loss and metric are defined on.
    const ACTIVATION: OutputActivation;
    /// The metric `fit_with` and `evaluate_with` report, as Keras names it.
    const METRIC: &'static str;

    /// Why `target` cannot be a target of this loss (a class with no output), if it cannot.
    fn target_problem(target: &Self::Target) -> Option<String>;

    /// The mean loss of `logits` against `targets` (one per sample), and its gradient with
    /// respect to the logits written into `grad`.
    fn loss_and_gradient(
        &self,
        logits: &Batch<Flat<C>>,
        targets: &[Self::Target],
        grad: &mut Batch<Flat<C>>,
    ) -> f32;

    /// The loss of one sample from its outputs (the activation applied), as evaluation reports
    /// it.
    fn sample_loss(&self, outputs: &[f32], target: &Self::Target) -> f64;

    /// The metric of one sample from its outputs; the reported metric is its mean.
    fn sample_metric(&self, outputs: &[f32], target: &Self::Target) -> f64;
}

/// A loss that trains networks whose head is `H`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot train a network whose head is `{H}`",
    label = "this loss does not fit the network's last layer",
    note = "SparseCategoricalCrossentropy fits a network that ends with softmax or with its \
            logits; MeanSquaredError and MeanAbsoluteError one that ends with a linear layer (no \
            final softmax or sigmoid); BinaryCrossentropy one that ends with sigmoid or with its \
            logits"
)]
pub trait FitsHead<H> {}

/// Softmax cross-entropy against class labels, fused with a final softmax (or on the logits
/// of a network without one); metric: accuracy. Keras's `sparse_categorical_crossentropy`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SparseCategoricalCrossentropy;

/// Mean squared error against target vectors, for a network ending with a linear layer;
/// metric: mean absolute error. Keras's `mean_squared_error`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeanSquaredError;

/// Mean absolute error against target vectors, for a network ending with a linear layer;
/// metric: mean absolute error. Keras's `mean_absolute_error`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeanAbsoluteError;

/// Binary cross-entropy of each output against a target in [0, 1] (multi-label
/// classification), fused with a final sigmoid (or on the logits of a network without one);
/// metric: the fraction of labels predicted right at 0.5. Keras's `binary_crossentropy`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryCrossentropy;

impl FitsHead<head::Softmax> for SparseCategoricalCrossentropy {}
impl FitsHead<head::Linear> for SparseCategoricalCrossentropy {}
impl FitsHead<head::Linear> for MeanSquaredError {}
impl FitsHead<head::Linear> for MeanAbsoluteError {}
impl FitsHead<head::Sigmoid> for BinaryCrossentropy {}
impl FitsHead<head::Linear> for BinaryCrossentropy {}

/// Keras clips probabilities to [1e-7, 1 − 1e-7] before taking logarithms in evaluation.
const CLIP: f32 = 1e-7;

/// The index of the largest value (the first of equals).
fn argmax_row(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

impl<const C: usize> Loss<C> for SparseCategoricalCrossentropy {
    type Target = usize;
    const ACTIVATION: OutputActivation = OutputActivation::Softmax;
    const METRIC: &'static str = "accuracy";

    fn target_problem(label: &usize) -> Option<String> {
        (*label >= C).then(|| format!("label {label} is not below the network's {C} outputs"))
    }

    fn loss_and_gradient(
        &self,
        logits: &Batch<Flat<C>>,
        labels: &[usize],
        grad: &mut Batch<Flat<C>>,
    ) -> f32 {
        super::sparse_softmax_cross_entropy(logits, labels, grad)
    }

    fn sample_loss(&self, probabilities: &[f32], label: &usize) -> f64 {
        -(probabilities[*label].max(CLIP) as f64).ln()
    }

    fn sample_metric(&self, probabilities: &[f32], label: &usize) -> f64 {
        f64::from(u8::from(argmax_row(probabilities) == *label))
    }
}

/// `Some` describing the first value of `target` outside `[low, high]` or not finite.
fn vector_problem(target: &[f32], range: Option<(f32, f32)>) -> Option<String> {
    let (low, high) = range.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (index, value) = target
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || **v < low || **v > high)?;
    Some(match range {
        Some(_) => format!("target value {index} is {value}, not in [{low}, {high}]"),
        None => format!("target value {index} is {value}, not finite"),
    })
}

/// The mean of `error(y, t)` over one sample's outputs.
fn mean_over_outputs(outputs: &[f32], target: &[f32], error: impl Fn(f32, f32) -> f32) -> f64 {
    let sum: f64 = outputs
        .iter()
        .zip(target)
        .map(|(&y, &t)| error(y, t) as f64)
        .sum();
    sum / outputs.len().max(1) as f64
}

/// A regression loss: the mean over the outputs of a function of each error `y − t`. Every
/// `Regression` is a [`Loss`] on target vectors, for a network ending with a linear layer, its
/// metric the mean absolute error.
pub trait Regression: Copy + Debug + Send + Sync {
    /// The loss at one error, and its derivative with respect to the output.
    fn value_and_slope(error: f32) -> (f32, f32);
}

impl Regression for MeanSquaredError {
    fn value_and_slope(error: f32) -> (f32, f32) {
        (error * error, 2.0 * error)
    }
}

impl Regression for MeanAbsoluteError {
    fn value_and_slope(error: f32) -> (f32, f32) {
        (error.abs(), sign(error))
    }
}

impl<const C: usize, R: Regression> Loss<C> for R {
    type Target = [f32; C];
    const ACTIVATION: OutputActivation = OutputActivation::Identity;
    const METRIC: &'static str = "mae";

    fn target_problem(target: &[f32; C]) -> Option<String> {
        vector_problem(target, None)
    }

    fn loss_and_gradient(
        &self,
        outputs: &Batch<Flat<C>>,
        targets: &[[f32; C]],
        grad: &mut Batch<Flat<C>>,
    ) -> f32 {
        super::check_target_count("regression loss", outputs.len(), targets.len());
        super::elementwise(outputs, targets.as_flattened(), grad, |y, t| {
            R::value_and_slope(y - t)
        })
    }

    fn sample_loss(&self, outputs: &[f32], target: &[f32; C]) -> f64 {
        mean_over_outputs(outputs, target, |y, t| R::value_and_slope(y - t).0)
    }

    fn sample_metric(&self, outputs: &[f32], target: &[f32; C]) -> f64 {
        mean_over_outputs(outputs, target, |y, t| (y - t).abs())
    }
}

impl<const C: usize> Loss<C> for BinaryCrossentropy {
    type Target = [f32; C];
    const ACTIVATION: OutputActivation = OutputActivation::Sigmoid;
    const METRIC: &'static str = "binary_accuracy";

    fn target_problem(target: &[f32; C]) -> Option<String> {
        vector_problem(target, Some((0.0, 1.0)))
    }

    fn loss_and_gradient(
        &self,
        logits: &Batch<Flat<C>>,
        targets: &[[f32; C]],
        grad: &mut Batch<Flat<C>>,
    ) -> f32 {
        super::check_target_count("binary cross-entropy", logits.len(), targets.len());
        super::elementwise(
            logits,
            targets.as_flattened(),
            grad,
            super::binary_cross_entropy_with_logit,
        )
    }

    fn sample_loss(&self, probabilities: &[f32], target: &[f32; C]) -> f64 {
        mean_over_outputs(probabilities, target, |p, t| {
            let p = p.clamp(CLIP, 1.0 - CLIP);
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        })
    }

    fn sample_metric(&self, probabilities: &[f32], target: &[f32; C]) -> f64 {
        mean_over_outputs(probabilities, target, |p, t| {
            f32::from(u8::from((p > 0.5) == (t > 0.5)))
        })
    }
}

/// The sign of `x`, 0 at 0 (the subgradient mean absolute error uses there).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch<const C: usize>(values: &[f32]) -> Batch<Flat<C>> {
        Batch::from_vec(values.to_vec()).unwrap()
    }

    #[test]
    fn objectives_match_the_loss_functions() {
        let outputs = batch::<2>(&[0.5, -1.0, 2.0, 3.0]);
        let targets = [[1.0, 0.0], [0.0, 1.0]];
        let target_batch = batch::<2>(targets.as_flattened());
        let (mut a, mut b) = (Batch::default(), Batch::default());
        let pairs: [(f32, f32); 3] = [
            (
                MeanSquaredError.loss_and_gradient(&outputs, &targets, &mut a),
                super::super::mean_squared_error(&outputs, &target_batch, &mut b),
            ),
            (
                MeanAbsoluteError.loss_and_gradient(&outputs, &targets, &mut a),
                super::super::mean_absolute_error(&outputs, &target_batch, &mut b),
            ),
            (
                BinaryCrossentropy.loss_and_gradient(&outputs, &targets, &mut a),
                super::super::sigmoid_binary_cross_entropy(&outputs, &target_batch, &mut b),
            ),
        ];
        for (objective, function) in pairs {
            assert_eq!(objective, function);
        }
        assert_eq!(a.as_slice(), b.as_slice());
    }

    #[test]
    fn evaluation_losses_agree_with_training_losses() {
        // Binary cross-entropy of sigmoid outputs equals the fused loss on the logits.
        let logits = [0.5f32, -1.0];
        let target = [1.0f32, 0.0];
        let mut probabilities = [0.0; 2];
        OutputActivation::Sigmoid.apply(&logits, &mut probabilities);
        let from_outputs = BinaryCrossentropy.sample_loss(&probabilities, &target);
        let fused = Loss::<2>::loss_and_gradient(
            &BinaryCrossentropy,
            &batch::<2>(&logits),
            &[target],
            &mut Batch::default(),
        );
        assert!(
            (from_outputs - fused as f64).abs() < 1e-6,
            "{from_outputs} vs {fused}"
        );
        // By hand: −(ln σ(0.5) + ln(1 − σ(−1))) / 2.
        let by_hand =
            -((1.0 / (1.0 + (-0.5f64).exp())).ln() + (1.0 - 1.0 / (1.0 + 1f64.exp())).ln()) / 2.0;
        assert!((from_outputs - by_hand).abs() < 1e-6);
        assert_eq!(
            BinaryCrossentropy.sample_metric(&probabilities, &target),
            1.0
        );
        assert_eq!(MeanSquaredError.sample_loss(&[1.0, 3.0], &[0.0, 1.0]), 2.5);
        assert_eq!(
            MeanSquaredError.sample_metric(&[1.0, 3.0], &[0.0, 1.0]),
            1.5
        );
    }

    #[test]
    fn targets_are_checked() {
        assert!(<SparseCategoricalCrossentropy as Loss<3>>::target_problem(&3).is_some());
        assert!(<SparseCategoricalCrossentropy as Loss<3>>::target_problem(&2).is_none());
        assert!(BinaryCrossentropy::target_problem(&[0.0, 1.5]).is_some());
        assert!(MeanSquaredError::target_problem(&[0.0, f32::NAN]).is_some());
        assert!(MeanSquaredError::target_problem(&[-4.0, 1e6]).is_none());
    }
}
