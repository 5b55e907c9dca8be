//! [`Softmax`] as a layer: probabilities along the innermost axis, and the backward pass of the
//! softmax alone. Training a classifier should not backpropagate through it: the fused
//! [`softmax_cross_entropy`](crate::loss::softmax_cross_entropy) takes the logits and is both
//! cheaper and numerically safer.

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;

use rayon::prelude::*;

use super::Layer;
use crate::shape::Shape;
use crate::tensor::Batch;

/// Softmax over the innermost axis of samples of shape `S` (all features of a `Flat<N>`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax<S: Shape> {
    shape: PhantomData<S>,
}

impl<S: Shape> Softmax<S> {
    /// The layer.
    pub fn new() -> Self {
        Self { shape: PhantomData }
    }
}

/// Writes `softmax(logits)` into `probabilities`, shifting by the maximum so no `exp` overflows.
pub(crate) fn softmax_row(logits: &[f32], probabilities: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (p, &z) in probabilities.iter_mut().zip(logits) {
        *p = (z - max).exp();
        sum += *p;
    }
    for p in probabilities.iter_mut() {
        *p /= sum;
    }
}

impl<S: Shape> Layer for Softmax<S> {
    type Input = S;
    type Output = S;
    type Cache = ();

    /// Row by row; with the pool kept awake (`schedule::pool_awake`), the rows split
    /// between its threads.
    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, _workspace: &mut ()) {
        output.resize(input.len());
        let rows = |logits: &[f32], probabilities: &mut [f32]| {
            let pairs = logits.chunks(S::CHANNELS);
            for (x, y) in pairs.zip(probabilities.chunks_mut(S::CHANNELS)) {
                softmax_row(x, y);
            }
        };
        if !crate::schedule::pool_awake() {
            return rows(input.as_slice(), output.as_mut_slice());
        }
        let part = input.len().div_ceil(crate::schedule::pass_threads()) * S::CHANNELS;
        input
            .as_slice()
            .par_chunks(part.max(1))
            .zip(output.as_mut_slice().par_chunks_mut(part.max(1)))
            .for_each(|(logits, probabilities)| rows(logits, probabilities));
    }

    /// `dx = y ⊙ (dy − Σ dy ⊙ y)` per row.
    fn backward(
        &self,
        _input: &Batch<S>,
        output: &Batch<S>,
        grad_output: &Batch<S>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<S>>,
        _grads: &mut Self::Grads,
    ) {
        let Some(grad_input) = grad_input else { return };
        grad_input.resize(output.len());
        for ((dx, y), dy) in grad_input
            .as_mut_slice()
            .chunks_mut(S::CHANNELS)
            .zip(output.as_slice().chunks(S::CHANNELS))
            .zip(grad_output.as_slice().chunks(S::CHANNELS))
        {
            let dot: f32 = y.iter().zip(dy).map(|(y, dy)| y * dy).sum();
            for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                *dx = y * (dy - dot);
            }
        }
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Softmax
    }

    no_params!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_logits_stay_finite() {
        let mut p = [0.0; 3];
        softmax_row(&[1000.0, 0.0, -1000.0], &mut p);
        assert_eq!(p, [1.0, 0.0, 0.0]);
        softmax_row(&[2.0, 2.0, 2.0], &mut p);
        assert!(p.iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-7));
    }
}
