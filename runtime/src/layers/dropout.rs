//! Inverted dropout ([`Dropout`]): in training each value is zeroed with probability `rate` and
//! the survivors scaled by `1 / (1 - rate)`, so inference is the identity.
//!
//! The mask of sample `i` in training call `t` is drawn from a generator seeded by
//! `(seed, t, i)` alone, so it does not depend on how the batch is split across threads, and a
//! clone of the layer replays the same masks.

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{Layer, min_task_values};
use crate::init::SeededRng;
use crate::kernels::{self, simd::SimdF32, simd::VectorKernel};
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

/// Which values the last training pass kept (`1`) or dropped (`0`), and the scale of the kept.
#[derive(Clone, Debug, Default)]
pub struct DropoutCache {
    kept: Vec<u8>,
    keep_scale: f32,
}

/// The masks of one training call: sample `i`'s is drawn from `(seed, call, i)`.
#[derive(Clone, Copy)]
struct Masks {
    seed: u64,
    call: u64,
    drop_below: u32,
    keep_scale: f32,
}

impl Masks {
    /// Fills `kept` with sample `sample`'s mask.
    fn draw(&self, sample: usize, kept: &mut [u8]) {
        let mut rng = SeededRng::seed_from_u64(mask_seed(self.seed, self.call, sample as u64));
        for k in kept.iter_mut() {
            *k = u8::from(rng.next_u32() >= self.drop_below);
        }
    }
}

/// Mixes `(seed, call, sample)` into one well-spread generator seed (SplitMix64's finaliser).
fn mask_seed(seed: u64, call: u64, sample: u64) -> u64 {
    let mut z = seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ sample.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The integer form of "`rng.random::<f32>() < rate`": that draw is `(r >> 8) · 2⁻²⁴` for
/// `r = rng.next_u32()`, so it is below `rate` exactly when `r` is below the returned threshold.
/// Comparing integers keeps the masks of the float form bit for bit and leaves the draw loop free
/// of float conversion and of branches on random data.
fn drop_threshold(rate: f32) -> u32 {
    let below = (f64::from(rate) * f64::from(1u32 << 24)).ceil() as u32;
    below << 8
}

/// `out = x · kept · keep_scale`, value by value: the forward pass and the gradient alike.
fn scale_kept(x: &[f32], kept: &[u8], keep_scale: f32, out: &mut [f32]) {
    for ((out, &x), &k) in out.iter_mut().zip(x).zip(kept) {
        *out = x * (f32::from(k) * keep_scale);
    }
}

/// [`scale_kept`] over `values` in place.
fn scale_kept_in_place(values: &mut [f32], kept: &[u8], keep_scale: f32) {
    kernels::run_vectorized(ScaleKeptInPlace {
        values,
        kept,
        keep_scale,
    });
}

/// [`scale_kept_in_place`], compiled for the active instruction set so the loop vectorises with
/// its widest vectors.
struct ScaleKeptInPlace<'a> {
    values: &'a mut [f32],
    kept: &'a [u8],
    keep_scale: f32,
}

impl VectorKernel for ScaleKeptInPlace<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<V: SimdF32>(self) {
        for (value, &k) in self.values.iter_mut().zip(self.kept) {
            *value *= f32::from(k) * self.keep_scale;
        }
    }
}

impl<S: Shape> Dropout<S> {
    /// The masks of the next training call on `samples` samples, counting the call; sizes the
    /// cache for them.
    fn next_masks(&mut self, samples: usize, cache: &mut DropoutCache) -> Masks {
        let masks = Masks {
            seed: self.seed,
            call: self.calls,
            drop_below: drop_threshold(self.rate),
            keep_scale: 1.0 / (1.0 - self.rate),
        };
        self.calls += 1;
        cache.kept.resize(samples * S::LEN, 0);
        cache.keep_scale = masks.keep_scale;
        masks
    }

    /// [`Layer::forward_train`] with the output written over the input, as a network's plan
    /// runs dropout after a layer whose backward pass does not read its output (or reads only
    /// its sign): same masks, same values.
    pub fn forward_train_in_place(&mut self, values: &mut Batch<S>, cache: &mut DropoutCache) {
        let masks = self.next_masks(values.len(), cache);
        cache
            .kept
            .par_chunks_mut(S::LEN)
            .zip(values.as_mut_slice().par_chunks_mut(S::LEN))
            .enumerate()
            .with_min_len(min_task_values().div_ceil(S::LEN))
            .for_each(|(sample, (kept, values))| {
                masks.draw(sample, kept);
                scale_kept_in_place(values, kept, masks.keep_scale);
            });
    }

    /// [`Layer::backward`] of [`Dropout::forward_train_in_place`]: the gradient with respect to
    /// the output becomes, in place, the gradient with respect to the input.
    pub fn backward_in_place(&self, grad: &mut Batch<S>, cache: &DropoutCache) {
        let chunk = min_task_values();
        grad.as_mut_slice()
            .par_chunks_mut(chunk)
            .zip(cache.kept.par_chunks(chunk))
            .for_each(|(grad, kept)| scale_kept_in_place(grad, kept, cache.keep_scale));
    }

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

    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, _workspace: &mut DropoutCache) {
        output.resize(input.len());
        output.as_mut_slice().copy_from_slice(input.as_slice());
    }

    fn forward_train(&mut self, input: &Batch<S>, output: &mut Batch<S>, cache: &mut DropoutCache) {
        output.resize(input.len());
        let masks = self.next_masks(input.len(), cache);
        // Two passes per sample, both over L1-resident data: the serial generator fills the
        // flags, then a branch-free loop the compiler vectorises scales the input. (One fused
        // loop measured 2.5x slower.)
        cache
            .kept
            .par_chunks_mut(S::LEN)
            .zip(output.as_mut_slice().par_chunks_mut(S::LEN))
            .zip(input.as_slice().par_chunks(S::LEN))
            .enumerate()
            .with_min_len(min_task_values().div_ceil(S::LEN))
            .for_each(|(sample, ((kept, y), x))| {
                masks.draw(sample, kept);
                scale_kept(x, kept, masks.keep_scale, y);
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
        scale_kept(
            grad_output.as_slice(),
            &cache.kept,
            cache.keep_scale,
            grad_input.as_mut_slice(),
        );
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Dropout { rate: self.rate }
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
        dropout.forward(&input, &mut output, &mut DropoutCache::default());
        assert_eq!(output, input, "inference is the identity");
    }

    #[test]
    fn integer_threshold_drops_exactly_what_the_float_draw_drops() {
        use rand::RngExt;
        for rate in [
            0.0,
            1e-9,
            0.2,
            0.25,
            0.3,
            0.5,
            0.7,
            f32::from_bits(0x3f7f_ffff),
        ] {
            let drop_below = drop_threshold(rate);
            let mut float_rng = SeededRng::seed_from_u64(7);
            let mut int_rng = float_rng.clone();
            for _ in 0..100_000 {
                let float_drops = float_rng.random::<f32>() < rate;
                assert_eq!(int_rng.next_u32() < drop_below, float_drops, "rate {rate}");
            }
        }
        // The boundary draws themselves: the largest r kept and the smallest dropped.
        let rate = 0.25;
        let boundary = drop_threshold(rate);
        assert_eq!(boundary, 1 << 30);
        assert!((((boundary - 1) >> 8) as f32 / (1u32 << 24) as f32) < rate);
        assert!(((boundary >> 8) as f32 / (1u32 << 24) as f32) >= rate);
    }

    /// In place, the same masks and values as out of place, forward and backward.
    #[test]
    fn in_place_equals_out_of_place() {
        let mut dropout = Dropout::<Flat<300>>::new(0.4, 5);
        let mut in_place = dropout.clone();
        let input = Batch::<Flat<300>>::from_fn(7, |i| i as f32 - 1000.0);
        let (mut output, mut cache) = (Batch::default(), DropoutCache::default());
        dropout.forward_train(&input, &mut output, &mut cache);
        let (mut values, mut in_place_cache) = (input.clone(), DropoutCache::default());
        in_place.forward_train_in_place(&mut values, &mut in_place_cache);
        assert_eq!(values, output);
        let grad = Batch::<Flat<300>>::from_fn(7, |i| (i % 13) as f32 - 6.0);
        let mut grad_input = Batch::default();
        let no_params = &mut crate::layers::NoParams;
        dropout.backward(
            &input,
            &output,
            &grad,
            &mut cache,
            Some(&mut grad_input),
            no_params,
        );
        let mut grad_in_place = grad.clone();
        in_place.backward_in_place(&mut grad_in_place, &in_place_cache);
        assert_eq!(grad_in_place, grad_input);
    }

    #[test]
    #[should_panic(expected = "the rate must be in [0, 1)")]
    fn rate_of_one_is_rejected() {
        Dropout::<Flat<2>>::new(1.0, 0);
    }
}
