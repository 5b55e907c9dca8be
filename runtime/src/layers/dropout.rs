//! Inverted dropout ([`Dropout`]): in training each value is zeroed with probability `rate` and
//! the survivors scaled by `1 / (1 - rate)`, so inference is the identity.
//!
//! The mask of sample `i` in training call `t` is drawn from a generator seeded by
//! `(seed, t, i)` alone, so it does not depend on how the batch is split across threads, and a
//! clone of the layer replays the same masks.

use std::marker::PhantomData;

use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

use super::Layer;
use crate::init::SeededRng;
use crate::shape::Shape;
use crate::tensor::Batch;

/// Inverted dropout over samples of shape `S`.
#[derive(Clone, Debug)]
pub struct Dropout<S: Shape> {
    rate: f32,
    seed: u64,
    calls: u64,
    shape: PhantomData<S>,
}

/// The scale (`0` or `1 / (1 - rate)`) applied to each value in the last training pass.
#[derive(Clone, Debug, Default)]
pub struct DropoutCache {
    mask: Vec<f32>,
}

/// Mixes `(seed, call, sample)` into one well-spread generator seed (SplitMix64's finaliser).
fn mask_seed(seed: u64, call: u64, sample: u64) -> u64 {
    let mut z = seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ sample.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<S: Shape> Dropout<S> {
    /// Drops each value with probability `rate`, with masks drawn from `seed`.
    ///
    /// # Panics
    /// If `rate` is not in `[0, 1)`.
    pub fn new(rate: f32, seed: u64) -> Self {
        assert!(
            (0.0..1.0).contains(&rate),
            "dropout: the rate must be in [0, 1), got {rate}"
        );
        Self {
            rate,
            seed,
            calls: 0,
            shape: PhantomData,
        }
    }

    /// The probability of dropping a value.
    pub fn rate(&self) -> f32 {
        self.rate
    }
}

impl<S: Shape> Layer for Dropout<S> {
    type Input = S;
    type Output = S;
    type Cache = DropoutCache;

    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>) {
        output.resize(input.len());
        output.as_mut_slice().copy_from_slice(input.as_slice());
    }

    fn forward_train(&mut self, input: &Batch<S>, output: &mut Batch<S>, cache: &mut DropoutCache) {
        let (rate, seed, call) = (self.rate, self.seed, self.calls);
        self.calls += 1;
        let keep_scale = 1.0 / (1.0 - rate);
        output.resize(input.len());
        cache.mask.resize(input.as_slice().len(), 0.0);
        cache
            .mask
            .par_chunks_mut(S::LEN)
            .zip(output.as_mut_slice().par_chunks_mut(S::LEN))
            .zip(input.as_slice().par_chunks(S::LEN))
            .enumerate()
            .for_each(|(sample, ((mask, y), x))| {
                let mut rng = SeededRng::seed_from_u64(mask_seed(seed, call, sample as u64));
                for ((m, y), &x) in mask.iter_mut().zip(y).zip(x) {
                    *m = if rng.random::<f32>() < rate {
                        0.0
                    } else {
                        keep_scale
                    };
                    *y = x * *m;
                }
            });
    }

    fn backward(
        &self,
        _input: &Batch<S>,
        _output: &Batch<S>,
        grad_output: &Batch<S>,
        cache: &mut DropoutCache,
        grad_input: Option<&mut Batch<S>>,
        _grads: &mut Self::Grads,
    ) {
        let Some(grad_input) = grad_input else { return };
        grad_input.resize(grad_output.len());
        for ((dx, &dy), &m) in grad_input
            .as_mut_slice()
            .iter_mut()
            .zip(grad_output.as_slice())
            .zip(&cache.mask)
        {
            *dx = dy * m;
        }
    }

    no_params!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Flat;

    #[test]
    fn drops_about_rate_and_preserves_the_mean() {
        let mut dropout = Dropout::<Flat<1000>>::new(0.25, 3);
        let input = Batch::<Flat<1000>>::from_fn(20, |_| 1.0);
        let mut output = Batch::default();
        let mut cache = DropoutCache::default();
        dropout.forward_train(&input, &mut output, &mut cache);
        let dropped = output.as_slice().iter().filter(|&&v| v == 0.0).count();
        assert!(
            (4500..5500).contains(&dropped),
            "dropped {dropped} of 20000"
        );
        let mean = output.as_slice().iter().sum::<f32>() / 20_000.0;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        let first = output.clone();
        dropout.forward_train(&input, &mut output, &mut cache);
        assert_ne!(first, output, "each training call draws a new mask");
        dropout.forward(&input, &mut output);
        assert_eq!(output, input, "inference is the identity");
    }

    #[test]
    #[should_panic(expected = "the rate must be in [0, 1)")]
    fn rate_of_one_is_rejected() {
        Dropout::<Flat<2>>::new(1.0, 0);
    }
}
