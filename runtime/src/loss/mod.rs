//! Losses, each computed with its gradient in one pass: softmax cross-entropy for classification,
//! mean squared and mean absolute error for regression, and binary cross-entropy fused with a
//! sigmoid for multi-label classification. Losses are averaged over the batch (and, as Keras
//! does, over the outputs for the element-wise ones), so gradients carry that scale.
//!
//! For logits `z` and a target distribution `t` (one-hot for a label), the loss of a sample is
//! `logsumexp(z) − Σ t·z` and its gradient `softmax(z) − t`. Computing `logsumexp` after shifting
//! by the maximum logit keeps it finite for logits of any size, where `−log(softmax(z))` would
//! overflow or take `log(0)`. Losses are averaged over the batch, so gradients carry `1 / N`.

mod objective;

pub use objective::{
    BinaryCrossentropy, FitsHead, Head, Loss, MeanAbsoluteError, MeanSquaredError,
    OutputActivation, Regression, SparseCategoricalCrossentropy, head,
};

use crate::shape::Flat;
use crate::tensor::Batch;

/// Mean softmax cross-entropy of `logits` against class `labels` (one per sample), and its
/// gradient with respect to the logits written into `grad` (resized to the batch).
///
/// # Panics
/// If `labels.len()` differs from the number of samples or a label is `>= N`.
///
/// ```
/// use constnet_runtime::{Batch, Flat, loss::sparse_softmax_cross_entropy};
/// let logits = Batch::<Flat<3>>::from_vec(vec![1000.0, 0.0, -1000.0]).unwrap();
/// let mut grad = Batch::default();
/// let loss = sparse_softmax_cross_entropy(&logits, &[1], &mut grad);
/// assert_eq!(loss, 1000.0);
/// assert_eq!(grad.as_slice(), &[1.0, -1.0, 0.0]);
/// ```
pub fn sparse_softmax_cross_entropy<const N: usize>(
    logits: &Batch<Flat<N>>,
    labels: &[usize],
    grad: &mut Batch<Flat<N>>,
) -> f32 {
    assert_eq!(
        labels.len(),
        logits.len(),
        "softmax cross-entropy: {} labels for {} samples",
        labels.len(),
        logits.len()
    );
    fused(logits, grad, |sample, class| {
        let label = labels[sample];
        assert!(
            label < N,
            "softmax cross-entropy: label {label} of sample {sample} is not below {N}"
        );
        if class == label { 1.0 } else { 0.0 }
    })
}

/// Mean softmax cross-entropy of `logits` against target distributions `targets` (one-hot or
/// soft labels, each summing to 1), and its gradient with respect to the logits.
///
/// # Panics
/// If `targets` holds a different number of samples than `logits`.
pub fn softmax_cross_entropy<const N: usize>(
    logits: &Batch<Flat<N>>,
    targets: &Batch<Flat<N>>,
    grad: &mut Batch<Flat<N>>,
) -> f32 {
    assert_eq!(
        targets.len(),
        logits.len(),
        "softmax cross-entropy: {} targets for {} samples",
        targets.len(),
        logits.len()
    );
    fused(logits, grad, |sample, class| targets.sample(sample)[class])
}

/// The shared loop: `target(sample, class)` gives the target probability.
fn fused<const N: usize>(
    logits: &Batch<Flat<N>>,
    grad: &mut Batch<Flat<N>>,
    target: impl Fn(usize, usize) -> f32,
) -> f32 {
    let samples = logits.len();
    grad.resize(samples);
    if samples == 0 {
        return 0.0;
    }
    let scale = 1.0 / samples as f32;
    let mut total = 0.0f64;
    for (sample, (z, g)) in logits
        .as_slice()
        .chunks(N)
        .zip(grad.as_mut_slice().chunks_mut(N))
        .enumerate()
    {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum_exp: f32 = z.iter().map(|&v| (v - max).exp()).sum();
        let log_sum_exp = max + sum_exp.ln();
        let mut loss = 0.0f64;
        for (class, (g, &v)) in g.iter_mut().zip(z).enumerate() {
            let t = target(sample, class);
            loss += (t * (log_sum_exp - v)) as f64;
            *g = ((v - max).exp() / sum_exp - t) * scale;
        }
        total += loss;
    }
    (total / samples as f64) as f32
}

/// Mean squared error, Keras's `mean_squared_error`: the mean of `(y − t)²` over the outputs
/// and the samples, and its gradient `2 (y − t) / (N · samples)` written into `grad`.
///
/// # Panics
/// If `targets` holds a different number of samples than `outputs`.
///
/// ```
/// use constnet_runtime::{Batch, Flat, loss::mean_squared_error};
/// let outputs = Batch::<Flat<2>>::from_vec(vec![1.0, 2.0, 3.0, 5.0]).unwrap();
/// let targets = Batch::<Flat<2>>::from_vec(vec![0.0, 2.0, 3.0, 3.0]).unwrap();
/// let mut grad = Batch::default();
/// assert_eq!(mean_squared_error(&outputs, &targets, &mut grad), 1.25); // (1 + 0 + 0 + 4) / 4
/// assert_eq!(grad.as_slice(), &[0.5, 0.0, 0.0, 1.0]);
/// ```
pub fn mean_squared_error<const N: usize>(
    outputs: &Batch<Flat<N>>,
    targets: &Batch<Flat<N>>,
    grad: &mut Batch<Flat<N>>,
) -> f32 {
    check_target_count("mean squared error", outputs.len(), targets.len());
    elementwise(outputs, targets.as_slice(), grad, |y, t| {
        MeanSquaredError::value_and_slope(y - t)
    })
}

/// Mean absolute error, Keras's `mean_absolute_error`: the mean of `|y − t|` over the outputs and
/// the samples, and its gradient `sign(y − t) / (N · samples)` (0 where `y = t`).
///
/// # Panics
/// If `targets` holds a different number of samples than `outputs`.
pub fn mean_absolute_error<const N: usize>(
    outputs: &Batch<Flat<N>>,
    targets: &Batch<Flat<N>>,
    grad: &mut Batch<Flat<N>>,
) -> f32 {
    check_target_count("mean absolute error", outputs.len(), targets.len());
    elementwise(outputs, targets.as_slice(), grad, |y, t| {
        MeanAbsoluteError::value_and_slope(y - t)
    })
}

/// Binary cross-entropy of `sigmoid(logits)` against targets in `[0, 1]` (one independent label
/// per output: multi-label classification), fused with the sigmoid as softmax is with its
/// cross-entropy: per value `max(z, 0) − z·t + ln(1 + e^(−|z|))`, which is finite for logits of
/// any size where `−t·ln σ(z) − (1 − t)·ln(1 − σ(z))` would take `ln 0`; the mean over the outputs
/// and the samples, and its gradient `(σ(z) − t) / (N · samples)`.
///
/// # Panics
/// If `targets` holds a different number of samples than `logits`.
///
/// ```
/// use constnet_runtime::{Batch, Flat, loss::sigmoid_binary_cross_entropy};
/// let logits = Batch::<Flat<2>>::from_vec(vec![1000.0, -1000.0]).unwrap();
/// let targets = Batch::<Flat<2>>::from_vec(vec![0.0, 0.0]).unwrap();
/// let mut grad = Batch::default();
/// assert_eq!(sigmoid_binary_cross_entropy(&logits, &targets, &mut grad), 500.0);
/// assert_eq!(grad.as_slice(), &[0.5, 0.0]);
/// ```
pub fn sigmoid_binary_cross_entropy<const N: usize>(
    logits: &Batch<Flat<N>>,
    targets: &Batch<Flat<N>>,
    grad: &mut Batch<Flat<N>>,
) -> f32 {
    check_target_count("binary cross-entropy", logits.len(), targets.len());
    elementwise(
        logits,
        targets.as_slice(),
        grad,
        binary_cross_entropy_with_logit,
    )
}

/// `max(z, 0) − z·t + ln(1 + e^−|z|)`, binary cross-entropy of `sigmoid(z)` against `t` without
/// computing `ln(sigmoid(z))` (which is `−∞` for logits below about −104), and its slope
/// `sigmoid(z) − t`.
pub(crate) fn binary_cross_entropy_with_logit(z: f32, t: f32) -> (f32, f32) {
    let loss = z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
    (loss, crate::kernels::elementwise::sigmoid(z) - t)
}

/// Panics unless there is one target per sample.
fn check_target_count(what: &str, samples: usize, targets: usize) {
    assert_eq!(
        targets, samples,
        "{what}: {targets} targets for {samples} samples"
    );
}

/// The shared loop of the element-wise losses: `loss_and_slope(y, t)` gives one value's loss and
/// its derivative; both are averaged over the `N · samples` values.
pub(crate) fn elementwise<const N: usize>(
    outputs: &Batch<Flat<N>>,
    targets: &[f32],
    grad: &mut Batch<Flat<N>>,
    loss_and_slope: impl Fn(f32, f32) -> (f32, f32),
) -> f32 {
    grad.resize(outputs.len());
    let count = outputs.as_slice().len();
    if count == 0 {
        return 0.0;
    }
    let scale = 1.0 / count as f32;
    let mut total = 0.0f64;
    let values = outputs.as_slice().iter().zip(targets);
    for (g, (&y, &t)) in grad.as_mut_slice().iter_mut().zip(values) {
        let (loss, slope) = loss_and_slope(y, t);
        total += loss as f64;
        *g = slope * scale;
    }
    (total / count as f64) as f32
}

/// The class with the highest logit (or probability) of each sample.
pub fn argmax<const N: usize>(scores: &Batch<Flat<N>>) -> Vec<usize> {
    scores
        .as_slice()
        .chunks(N)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_textbook_formula_on_moderate_logits() {
        let logits =
            Batch::<Flat<4>>::from_vec(vec![0.5, -1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
        let mut grad = Batch::default();
        let loss = sparse_softmax_cross_entropy(&logits, &[2, 0], &mut grad);
        let row = |z: &[f64], label: usize| {
            let sum: f64 = z.iter().map(|v| v.exp()).sum();
            -(z[label].exp() / sum).ln()
        };
        let expected = (row(&[0.5, -1.0, 2.0, 0.0], 2) + row(&[1.0; 4], 0)) / 2.0;
        assert!(
            (loss as f64 - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
        assert!((grad.sample(1)[0] - (0.25 - 1.0) / 2.0).abs() < 1e-7);
        let one_hot = Batch::<Flat<4>>::from_vec(vec![0., 0., 1., 0., 1., 0., 0., 0.]).unwrap();
        let mut grad_dense = Batch::default();
        assert_eq!(
            softmax_cross_entropy(&logits, &one_hot, &mut grad_dense),
            loss
        );
        assert_eq!(grad_dense, grad);
    }

    #[test]
    fn extreme_logits_give_finite_exact_values() {
        let logits = Batch::<Flat<2>>::from_vec(vec![-1e30, 1e30, 1e4, -1e4]).unwrap();
        let mut grad = Batch::default();
        let loss = sparse_softmax_cross_entropy(&logits, &[0, 0], &mut grad);
        assert!(loss.is_finite());
        // Sample 0: logsumexp − z₀ = 1e30 − (−1e30) = 2e30; sample 1: ≈ 0. The mean is 1e30.
        assert_eq!(loss, 1e30);
        assert!(grad.as_slice().iter().all(|g| g.is_finite()));
        assert_eq!(argmax(&logits), vec![1, 0]);
    }

    /// Each element-wise loss against values worked out by hand, and its gradient against
    /// central differences of the loss.
    #[test]
    fn elementwise_losses_match_hand_computed_values_and_their_slopes() {
        type Loss = fn(&Batch<Flat<2>>, &Batch<Flat<2>>, &mut Batch<Flat<2>>) -> f32;
        let outputs = Batch::<Flat<2>>::from_vec(vec![0.0, 2.0, -1.5, 0.25]).unwrap();
        let targets = Batch::<Flat<2>>::from_vec(vec![1.0, 0.0, 0.5, 0.25]).unwrap();
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        let bce = |z: f64, t: f64| -(t * sigmoid(z).ln() + (1.0 - t) * (1.0 - sigmoid(z)).ln());
        let cases: [(&str, Loss, f64); 3] = [
            ("mse", mean_squared_error, (1.0 + 4.0 + 4.0 + 0.0) / 4.0),
            ("mae", mean_absolute_error, (1.0 + 2.0 + 2.0 + 0.0) / 4.0),
            (
                "bce",
                sigmoid_binary_cross_entropy,
                (bce(0.0, 1.0) + bce(2.0, 0.0) + bce(-1.5, 0.5) + bce(0.25, 0.25)) / 4.0,
            ),
        ];
        for (name, loss, expected) in cases {
            let mut grad = Batch::default();
            let value = loss(&outputs, &targets, &mut grad);
            assert!(
                (value as f64 - expected).abs() < 1e-6,
                "{name}: {value} vs {expected}"
            );
            for i in 0..4 {
                // MAE has a kink at the fourth value, where its slope is defined as 0.
                if name == "mae" && i == 3 {
                    assert_eq!(grad.as_slice()[i], 0.0);
                    continue;
                }
                let step = 1e-3;
                let mut shifted = outputs.clone();
                shifted.as_mut_slice()[i] += step;
                let up = loss(&shifted, &targets, &mut Batch::default());
                shifted.as_mut_slice()[i] -= 2.0 * step;
                let down = loss(&shifted, &targets, &mut Batch::default());
                let numeric = (up - down) / (2.0 * step);
                let analytic = grad.as_slice()[i];
                assert!(
                    (numeric - analytic).abs() < 1e-3,
                    "{name} value {i}: slope {analytic} vs difference {numeric}"
                );
            }
        }
    }

    /// Binary cross-entropy stays finite and exact for logits far past where σ rounds to 0 or 1.
    #[test]
    fn binary_cross_entropy_is_finite_for_extreme_logits() {
        let logits = Batch::<Flat<4>>::from_vec(vec![1000.0, -1000.0, 90.0, -90.0]).unwrap();
        let targets = Batch::<Flat<4>>::from_vec(vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let mut grad = Batch::default();
        let loss = sigmoid_binary_cross_entropy(&logits, &targets, &mut grad);
        assert_eq!(loss, (0.0 + 0.0 + 90.0 + 90.0) / 4.0);
        assert_eq!(grad.as_slice(), &[0.0, 0.0, 0.25, -0.25]);
    }
}
