//! Softmax cross-entropy, fused with its gradient.
//!
//! For logits `z` and a target distribution `t` (one-hot for a label), the loss of a sample is
//! `logsumexp(z) − Σ t·z` and its gradient `softmax(z) − t`. Computing `logsumexp` after shifting
//! by the maximum logit keeps it finite for logits of any size, where `−log(softmax(z))` would
//! overflow or take `log(0)`. Losses are averaged over the batch, so gradients carry `1 / N`.

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
}
