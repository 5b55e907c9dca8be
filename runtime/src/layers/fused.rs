//! The fused operations a network's plan chooses: a linear layer (convolution or dense) with
//! the activation after it, computed as one op; and, at inference, a convolution with its
//! activation and the pooling after it, each image's convolution output pooled from per-thread
//! scratch while it is in cache instead of written to memory and read back. Forward applies the
//! activation in the GEMM's epilogue (or Winograd's output transform) while each tile is in
//! registers, so the pre-activation is never written; backward
//! turns the gradient of the activated output into the gradient of the pre-activation in place
//! (`f'` taken from the output, [`EpilogueFn::derivative_from_output`]) and runs the linear
//! layer's backward. Both equal the two unfused layers bit for bit.

use std::any::TypeId;
use std::ops::Range;

use rayon::prelude::*;

use super::pool::for_each_selecting_group;
use super::{
    BatchNorm, Conv2d, ConvCache, DepthwiseCache, DepthwiseConv2d, EpilogueFn, Layer, Max,
    MaxPool2d, Padding, ParamVec, Pool2d, PoolCache, PoolOp, WeightBias, for_each_sample_group,
    min_task_values,
};
use crate::kernels::elementwise::ActivationKind;
use crate::kernels::simd::{SimdF32, VectorKernel};
use crate::kernels::{self, with_scratch};
use crate::schedule;
use crate::shape::{Image, Shape};
use crate::tensor::Batch;

/// A layer computing `activation(linear(x) + bias)` with the activation in its GEMM epilogue:
/// [`Conv2d`](super::Conv2d) and [`Dense`](super::Dense).
pub trait Linear: Layer {
    /// Inference forward pass followed by `activation`; [`Layer::forward`] is this with
    /// [`ActivationKind::Identity`].
    fn forward_activated(
        &self,
        input: &Batch<Self::Input>,
        output: &mut Batch<Self::Output>,
        activation: ActivationKind,
        cache: &mut Self::Cache,
    );
}

/// How an image's output rows may split between threads: each row costs `muls_per_row`
/// multiply-adds, and parts start at multiples of `step` rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowSplit {
    pub muls_per_row: usize,
    pub step: usize,
}

impl RowSplit {
    /// The split of the rows of a pooling with stride `pool_stride` over these rows: a pooled
    /// row costs `pool_stride` of these, and parts start where these would.
    pub(crate) fn pooled(self, pool_stride: usize) -> RowSplit {
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        RowSplit {
            muls_per_row: self.muls_per_row * pool_stride,
            step: self.step / gcd(self.step, pool_stride),
        }
    }
}

/// How many parts to split each sample's `rows` output rows into (1: run whole samples per
/// thread instead): only when the batch has fewer samples than the pool has threads and each
/// part keeps enough work ([`schedule::min_muls_per_part`]).
pub(crate) fn row_parts(samples: usize, rows: usize, muls_per_row: usize) -> usize {
    let threads = schedule::pass_threads();
    if samples >= threads {
        return 1;
    }
    let least = schedule::min_muls_per_part(schedule::splits().row_split_min_muls_per_part);
    threads
        .min(rows.saturating_mul(muls_per_row) / least)
        .min(rows)
        .max(1)
}

/// Runs `f(image, rows, out)` over the output rows of every sample (`out` holds exactly rows
/// `rows` of that sample's output): whole samples, one contiguous group per thread, or, when
/// [`row_parts`] splits samples (batches smaller than the pool), each sample's rows in parts
/// across the threads, as `split` allows.
pub(crate) fn for_each_output_rows<I: Shape, O: Image>(
    input: &Batch<I>,
    output: &mut Batch<O>,
    split: RowSplit,
    f: impl Fn(&[f32], Range<usize>, &mut [f32]) + Sync,
) {
    let samples = input.len();
    let parts = row_parts(samples, O::H, split.muls_per_row);
    if parts < 2 {
        for_each_sample_group(input, output, |images, outputs| {
            for (image, out) in images.chunks(I::LEN).zip(outputs.chunks_mut(O::LEN)) {
                f(image, 0..O::H, out);
            }
        });
        return;
    }
    output.resize(samples);
    let row_len = O::W * O::C;
    let rows_per_part = O::H.div_ceil(parts).next_multiple_of(split.step);
    for (image, out) in input
        .as_slice()
        .chunks(I::LEN)
        .zip(output.as_mut_slice().chunks_mut(O::LEN))
    {
        out.par_chunks_mut(rows_per_part * row_len)
            .enumerate()
            .for_each(|(part, out)| {
                let start = part * rows_per_part;
                f(image, start..start + out.len() / row_len, out);
            });
    }
}

/// `output = activation(linear(input))` in one pass, for inference and training alike (neither
/// layer keeps anything else for backward); `cache` is the linear layer's.
pub fn linear_activation_forward<L: Linear, F: EpilogueFn>(
    linear: &L,
    activation: &F,
    input: &Batch<L::Input>,
    output: &mut Batch<L::Output>,
    cache: &mut L::Cache,
) {
    linear.forward_activated(input, output, activation.epilogue(), cache);
}

/// Backward of [`linear_activation_forward`], from its input, its (activated) output and the
/// gradient with respect to that output. `grad_output` is overwritten with the gradient with
/// respect to the pre-activation, then the linear layer's backward fills `grad_input` (if
/// asked for) and `grads`.
#[allow(clippy::too_many_arguments)]
pub fn linear_activation_backward<L: Linear, F: EpilogueFn>(
    linear: &L,
    activation: &F,
    input: &Batch<L::Input>,
    output: &Batch<L::Output>,
    grad_output: &mut Batch<L::Output>,
    cache: &mut L::Cache,
    grad_input: Option<&mut Batch<L::Input>>,
    grads: &mut L::Grads,
) {
    let chunk = min_task_values();
    grad_output
        .as_mut_slice()
        .par_chunks_mut(chunk)
        .zip(output.as_slice().par_chunks(chunk))
        .for_each(|(grads, outputs)| {
            kernels::run_vectorized(TimesDerivative {
                activation,
                grads,
                outputs,
            })
        });
    linear.backward(input, output, grad_output, cache, grad_input, grads);
}

/// `grads[i] *= f'` at `outputs[i]`, compiled for the active instruction set so the loop
/// vectorises with its widest vectors.
struct TimesDerivative<'a, F> {
    activation: &'a F,
    grads: &'a mut [f32],
    outputs: &'a [f32],
}

impl<F: EpilogueFn> VectorKernel for TimesDerivative<'_, F> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        for (grad, &y) in self.grads.iter_mut().zip(self.outputs) {
            *grad *= self.activation.derivative_from_output(y);
        }
    }
}

/// Inference of a convolution with `weights` (the convolution's own, or with batch
/// normalisation folded in by [`fold_batchnorm`]), `activation` (in its epilogue) and the
/// pooling after it: `output = pool(activation(conv(input)))`. Each image's convolution output
/// (at batches smaller than the pool, each part's rows of it) lives only in per-thread scratch,
/// pooled right after it is computed; 2x2 max pooling after Winograd with the identity or ReLU
/// is taken in Winograd's output transform, and the convolution's output is not stored at all.
/// `cache` is the convolution's.
#[allow(clippy::too_many_arguments)]
pub fn conv_activation_pool_forward<
    I: Image,
    M: Image,
    O: Image,
    const K: usize,
    const STRIDE: usize,
    P: Padding,
    Op: PoolOp,
    const POOL: usize,
    const POOL_STRIDE: usize,
>(
    // Both layers only name the types: the weights come in `weights`, and pooling is stateless.
    _conv: &Conv2d<I, M, K, STRIDE, P>,
    weights: ConvWeights<'_>,
    activation: ActivationKind,
    _pool: &Pool2d<M, O, Op, POOL, POOL_STRIDE>,
    input: &Batch<I>,
    output: &mut Batch<O>,
    cache: &mut ConvCache,
) {
    // Convolution rows `first..end` feed output rows `rows` of the pooling.
    let conv_rows = |rows: &Range<usize>| {
        let first = rows.start * POOL_STRIDE;
        first..((rows.end - 1) * POOL_STRIDE + POOL).min(M::H)
    };
    let prepared = Conv2d::<I, M, K, STRIDE, P>::prepare(weights, input.len(), cache);
    let split = prepared
        .row_split(M::W * K * K * I::C * M::C)
        .pooled(POOL_STRIDE);
    // Winograd's tiles (4x4 or 2x2) hold whole 2x2 windows: its output transform pools them as
    // it stores them, and the convolution's output is never written.
    let pooled_by_tiles = prepared.is_winograd()
        && (POOL, POOL_STRIDE) == (2, 2)
        && TypeId::of::<Op>() == TypeId::of::<Max>()
        && matches!(activation, ActivationKind::Identity | ActivationKind::Relu);
    let pooled_rows = |image: &[f32], rows: Range<usize>, out: &mut [f32]| {
        let needed = conv_rows(&rows);
        if pooled_by_tiles {
            return Conv2d::<I, M, K, STRIDE, P>::forward_rows_max_pooled(
                prepared, image, needed, out, activation,
            );
        }
        with_scratch(needed.len() * M::W * M::C, |conv_out| {
            Conv2d::<I, M, K, STRIDE, P>::forward_rows(
                prepared,
                image,
                needed.clone(),
                conv_out,
                activation,
                false,
            );
            Pool2d::<M, O, Op, POOL, POOL_STRIDE>::pool_rows(conv_out, needed.start, rows, out);
        });
    };
    for_each_output_rows(input, output, split, pooled_rows);
}

/// Training forward pass of a convolution with `activation` in its epilogue and the max pooling
/// after it: `output = maxpool(activation(conv(input)))`, each window's maximum recorded in
/// `pool_cache` for [`MaxPool2d::backward_through_activation`]. Each image's convolution output
/// lives only in per-thread scratch: backward never reads it (the pool takes the activation's
/// derivative at its own output, and the convolution's gradients need only its input).
/// `conv_cache` is the convolution's. Equals the fused convolution's training pass followed by
/// the pool's, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn conv_activation_pool_forward_train<
    I: Image,
    M: Image,
    O: Image,
    const K: usize,
    const STRIDE: usize,
    P: Padding,
    F: EpilogueFn,
    const POOL: usize,
    const POOL_STRIDE: usize,
>(
    conv: &Conv2d<I, M, K, STRIDE, P>,
    activation: &F,
    // Only names the type: pooling is stateless.
    _pool: &MaxPool2d<M, O, POOL, POOL_STRIDE>,
    input: &Batch<I>,
    output: &mut Batch<O>,
    conv_cache: &mut ConvCache,
    pool_cache: &mut PoolCache,
) {
    let weights = ConvWeights::from(&conv.params);
    let prepared = Conv2d::<I, M, K, STRIDE, P>::prepare(weights, input.len(), conv_cache);
    let activation = activation.epilogue();
    let pool_group = |images: &[f32], outputs: &mut [f32], selected: &mut [u32]| {
        with_scratch(M::LEN, |conv_out| {
            let outputs = outputs.chunks_mut(O::LEN).zip(selected.chunks_mut(O::LEN));
            for (image, (out, selected)) in images.chunks(I::LEN).zip(outputs) {
                let rows = 0..M::H;
                Conv2d::<I, M, K, STRIDE, P>::forward_rows(
                    prepared, image, rows, conv_out, activation, false,
                );
                MaxPool2d::<M, O, POOL, POOL_STRIDE>::select_images(conv_out, out, selected);
            }
        });
    };
    for_each_selecting_group(input, output, pool_cache, pool_group);
}

/// Inference of a convolution with `weights` (see [`conv_activation_pool_forward`]) and
/// `activation` in its GEMM epilogue; `cache` is the convolution's.
pub fn conv_params_forward<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding>(
    // Only names the type: the weights come in `weights`.
    _conv: &Conv2d<I, O, K, STRIDE, P>,
    weights: ConvWeights<'_>,
    activation: ActivationKind,
    input: &Batch<I>,
    output: &mut Batch<O>,
    cache: &mut ConvCache,
) {
    Conv2d::<I, O, K, STRIDE, P>::forward_with(weights, input, output, activation, false, cache);
}

/// Inference of the last convolution of a residual block with the block's addition in its
/// GEMM epilogue: `output = activation(conv(input) + residual)` with `weights` (see
/// [`conv_params_forward`]), `residual` the block's input or its projection, and
/// `activation` the one after the block. The output is filled with `residual` first and the
/// product accumulated onto it, so the sum never makes a pass of its own. `cache` is the
/// convolution's.
#[allow(clippy::too_many_arguments)]
pub fn conv_residual_forward<
    I: Image,
    O: Image,
    const K: usize,
    const STRIDE: usize,
    P: Padding,
>(
    // Only names the type: the weights come in `weights`.
    _conv: &Conv2d<I, O, K, STRIDE, P>,
    weights: ConvWeights<'_>,
    activation: ActivationKind,
    input: &Batch<I>,
    residual: &Batch<O>,
    output: &mut Batch<O>,
    cache: &mut ConvCache,
) {
    assert_eq!(
        input.len(),
        residual.len(),
        "a residual block's two paths disagree"
    );
    output.copy_from(residual);
    Conv2d::<I, O, K, STRIDE, P>::forward_with(weights, input, output, activation, true, cache);
}

/// The weights a convolution runs with at inference: its weight matrix and bias, and, with
/// batch normalisation folded in, a factor per filter that the GEMM epilogue multiplies the
/// product by ([`Epilogue::scale`](crate::kernels::gemm::Epilogue::scale)).
#[derive(Clone, Copy, Debug)]
pub struct ConvWeights<'a> {
    /// HWIO, as [`Conv2d::params`] stores it.
    pub weight: &'a ParamVec,
    /// One factor per filter, or none.
    pub scale: Option<&'a [f32]>,
    /// One value per filter.
    pub bias: &'a [f32],
}

impl<'a> From<&'a WeightBias> for ConvWeights<'a> {
    /// A layer's own weights and bias, unscaled.
    fn from(params: &'a WeightBias) -> Self {
        Self {
            weight: &params.weight,
            scale: None,
            bias: &params.bias,
        }
    }
}

/// Inference batch normalisation as the convolution before it applies it: a scale and a bias
/// per filter (see [`fold_batchnorm`]).
#[derive(Clone, Debug, Default)]
pub struct FoldedBatchNorm {
    scale: Vec<f32>,
    bias: Vec<f32>,
}

/// Folds inference batch normalisation into the convolution before it: with
/// `s = gamma / sqrt(running_var + epsilon)`, the convolution's product is scaled by `s[f]` in
/// its GEMM epilogue and gets the bias `(b[f] − running_mean[f]) · s[f] + beta[f]`, so the
/// convolution alone computes both layers (up to rounding). It costs a few operations per
/// filter, so it is redone on every call and never stale after training; the weights
/// themselves are used as they are.
pub fn fold_batchnorm<'a, O: Shape>(
    params: &'a WeightBias,
    batchnorm: &BatchNorm<O>,
    folded: &'a mut FoldedBatchNorm,
) -> ConvWeights<'a> {
    let FoldedBatchNorm { scale, bias } = folded;
    scale.clear();
    scale.extend((0..O::CHANNELS).map(|f| {
        batchnorm.params.weight[f] / (batchnorm.running_var[f] + batchnorm.epsilon).sqrt()
    }));
    bias.clear();
    bias.extend((0..O::CHANNELS).map(|f| {
        (params.bias[f] - batchnorm.running_mean[f]) * scale[f] + batchnorm.params.bias[f]
    }));
    ConvWeights {
        weight: &params.weight,
        scale: Some(scale),
        bias,
    }
}

/// Inference of a depthwise convolution with `weights` ([`ConvWeights::from`] its parameters,
/// or [`fold_batchnorm`]'s) and `activation` applied in its epilogue, as
/// [`conv_params_forward`] runs a convolution.
pub fn depthwise_params_forward<
    I: Image,
    O: Image,
    const K: usize,
    const STRIDE: usize,
    P: Padding,
>(
    // Only names the type: the weights come in `weights`.
    _depthwise: &DepthwiseConv2d<I, O, K, STRIDE, P>,
    weights: ConvWeights<'_>,
    activation: ActivationKind,
    input: &Batch<I>,
    output: &mut Batch<O>,
    _cache: &mut DepthwiseCache,
) {
    DepthwiseConv2d::<I, O, K, STRIDE, P>::forward_with(weights, input, output, activation);
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::init::seeded_rng;
    use crate::layers::{
        Activation, Conv2d, Dense, LeakyReluFn, Pool2d, PoolOp, ReluFn, Same, SigmoidFn, TanhFn,
        Valid,
    };
    use crate::reference::assert_close;
    use crate::shape::{Hwc, Shape};

    /// Random values in [-1, 1), a quarter of them exactly zero (ReLU's kink).
    fn random<S: Shape>(samples: usize, seed: u64) -> Batch<S> {
        let mut rng = seeded_rng(seed);
        Batch::from_fn(samples, |_| {
            if rng.random_range(0..4) == 0 {
                0.0
            } else {
                rng.random_range(-1.0..1.0)
            }
        })
    }

    /// The fused op against the linear layer followed by the activation layer: forward, input
    /// gradient and every parameter gradient, bit for bit.
    fn fused_equals_unfused<L: Linear, F: EpilogueFn>(mut linear: L, function: F, samples: usize)
    where
        L::Grads: PartialEq + std::fmt::Debug,
    {
        let activation = Activation::<L::Output, F>::with(function.clone());
        let what = format!(
            "{} with {function:?}, {samples} samples",
            std::any::type_name::<L>()
        );
        let x = random::<L::Input>(samples, 1);
        let dy = random::<L::Output>(samples, 2);

        let (mut pre, mut y) = (Batch::default(), Batch::default());
        linear.forward_train(&x, &mut pre, &mut Default::default());
        activation.forward(&pre, &mut y, &mut ());
        let mut fused_y = Batch::default();
        linear_activation_forward(
            &linear,
            &function,
            &x,
            &mut fused_y,
            &mut Default::default(),
        );
        assert_eq!(fused_y.as_slice(), y.as_slice(), "{what}: forward");

        let (mut dpre, mut dx) = (Batch::default(), Batch::default());
        let mut grads = linear.new_grads();
        activation.backward(
            &pre,
            &y,
            &dy,
            &mut (),
            Some(&mut dpre),
            &mut Default::default(),
        );
        linear.backward(
            &x,
            &pre,
            &dpre,
            &mut Default::default(),
            Some(&mut dx),
            &mut grads,
        );

        let (mut fused_dy, mut fused_dx) = (dy.clone(), Batch::default());
        let mut fused_grads = linear.new_grads();
        linear_activation_backward(
            &linear,
            &function,
            &x,
            &fused_y,
            &mut fused_dy,
            &mut Default::default(),
            Some(&mut fused_dx),
            &mut fused_grads,
        );
        assert_eq!(fused_dx.as_slice(), dx.as_slice(), "{what}: input gradient");
        assert_eq!(fused_grads, grads, "{what}: parameter gradients");
    }

    fn every_activation<L: Linear + Clone>(linear: L, samples: usize)
    where
        L::Grads: PartialEq + std::fmt::Debug,
    {
        fused_equals_unfused(linear.clone(), ReluFn, samples);
        fused_equals_unfused(linear.clone(), LeakyReluFn { alpha: 0.3 }, samples);
        fused_equals_unfused(linear.clone(), SigmoidFn, samples);
        fused_equals_unfused(linear, TanhFn, samples);
    }

    #[test]
    fn conv_with_activation_equals_the_two_layers() {
        let mut rng = seeded_rng(5);
        for samples in [1, 3] {
            every_activation(
                Conv2d::<Hwc<7, 5, 3>, Hwc<4, 3, 5>, 3, 2, Same>::new(&mut rng),
                samples,
            );
            every_activation(
                Conv2d::<Hwc<9, 9, 2>, Hwc<7, 7, 17>, 3, 1, Valid>::new(&mut rng),
                samples,
            );
        }
        // Large enough that a batch of one is split between threads.
        every_activation(
            Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::new(&mut rng),
            1,
        );
    }

    /// Inference of the fused convolution, activation and pooling against the three layers,
    /// bit for bit.
    fn conv_pool_equals_the_three_layers<
        I: Image,
        M: Image,
        O: Image,
        const K: usize,
        const S: usize,
        P: Padding,
        Op: PoolOp,
        const PK: usize,
        const PS: usize,
    >(
        conv: Conv2d<I, M, K, S, P>,
        activation: ActivationKind,
        samples: usize,
    ) {
        let pool = Pool2d::<M, O, Op, PK, PS>::new();
        let x = random::<I>(samples, 3);
        let mut conv_out = Batch::default();
        conv.forward_activated(&x, &mut conv_out, activation, &mut Default::default());
        let mut want = Batch::default();
        pool.forward(&conv_out, &mut want, &mut Default::default());
        let mut got = Batch::default();
        conv_activation_pool_forward(
            &conv,
            (&conv.params).into(),
            activation,
            &pool,
            &x,
            &mut got,
            &mut Default::default(),
        );
        let what = format!(
            "{}, {activation:?}, {samples} samples",
            std::any::type_name::<O>()
        );
        assert_eq!(got.as_slice(), want.as_slice(), "{what}");
    }

    #[test]
    fn conv_activation_pool_equals_the_three_layers() {
        use crate::layers::{Avg, Max};
        let mut rng = seeded_rng(7);
        for samples in [1, 3] {
            conv_pool_equals_the_three_layers::<_, _, Hwc<12, 12, 64>, 3, 1, Valid, Max, 2, 2>(
                Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::new(&mut rng),
                ActivationKind::Relu,
                samples,
            );
            conv_pool_equals_the_three_layers::<_, _, Hwc<3, 2, 5>, 3, 1, Valid, Max, 3, 2>(
                Conv2d::<Hwc<9, 8, 8>, Hwc<7, 6, 5>, 3>::new(&mut rng),
                ActivationKind::Tanh,
                samples,
            );
            conv_pool_equals_the_three_layers::<_, _, Hwc<2, 3, 4>, 3, 2, Same, Avg, 2, 2>(
                Conv2d::<Hwc<9, 13, 1>, Hwc<5, 7, 4>, 3, 2, Same>::new(&mut rng),
                ActivationKind::Identity,
                samples,
            );
            // Winograd pooling its own tiles at odd sizes and a channel count off the vector
            // width: a last tile row and column partly outside, an odd last column dropped.
            for activation in [ActivationKind::Identity, ActivationKind::Relu] {
                conv_pool_equals_the_three_layers::<_, _, Hwc<6, 12, 20>, 3, 1, Valid, Max, 2, 2>(
                    Conv2d::<Hwc<15, 27, 16>, Hwc<13, 25, 20>, 3>::new(&mut rng),
                    activation,
                    samples,
                );
                conv_pool_equals_the_three_layers::<_, _, Hwc<7, 6, 16>, 3, 1, Same, Max, 2, 2>(
                    Conv2d::<Hwc<14, 13, 16>, Hwc<14, 13, 16>, 3, 1, Same>::new(&mut rng),
                    activation,
                    samples,
                );
            }
            conv_pool_equals_the_three_layers::<_, _, Hwc<12, 12, 32>, 5, 1, Valid, Max, 2, 2>(
                Conv2d::<Hwc<28, 28, 1>, Hwc<24, 24, 32>, 5>::new(&mut rng),
                ActivationKind::Relu,
                samples,
            );
        }
    }

    /// The training forward pass of a convolution, its activation and max pooling, pooled from
    /// scratch, against the fused convolution's training pass and the pool's: the same output
    /// and the same recorded maxima, bit for bit (CI runs it with each convolution algorithm).
    fn training_conv_pool_equals_two_passes<
        I: Image,
        M: Image,
        O: Image,
        F: EpilogueFn,
        const K: usize,
        const POOL: usize,
        const POOL_STRIDE: usize,
    >(
        conv: Conv2d<I, M, K>,
        activation: F,
        samples: usize,
    ) {
        let x = random::<I>(samples, 11);
        let mut pool = MaxPool2d::<M, O, POOL, POOL_STRIDE>::new();
        let (mut activated, mut want, mut want_cache) =
            (Batch::default(), Batch::default(), PoolCache::default());
        let mut conv_cache = ConvCache::default();
        linear_activation_forward(&conv, &activation, &x, &mut activated, &mut conv_cache);
        pool.forward_train(&activated, &mut want, &mut want_cache);
        let (mut got, mut got_cache) = (Batch::default(), PoolCache::default());
        conv_activation_pool_forward_train(
            &conv,
            &activation,
            &pool,
            &x,
            &mut got,
            &mut conv_cache,
            &mut got_cache,
        );
        let what = format!("{} {activation:?}, {samples} samples", M::describe());
        assert_eq!(got.as_slice(), want.as_slice(), "{what}: output");
        assert!(got_cache == want_cache, "{what}: recorded maxima");
    }

    #[test]
    fn training_conv_activation_pool_equals_two_passes() {
        use crate::layers::{ReluFn, SigmoidFn};
        let mut rng = seeded_rng(12);
        // W1's conv2.
        for samples in [1, 3] {
            training_conv_pool_equals_two_passes::<_, _, Hwc<12, 12, 64>, _, 3, 2, 2>(
                Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::new(&mut rng),
                ReluFn,
                samples,
            );
        }
        // Rows and columns no window covers; overlapping windows.
        training_conv_pool_equals_two_passes::<_, _, Hwc<3, 2, 5>, _, 3, 2, 2>(
            Conv2d::<Hwc<9, 7, 8>, Hwc<7, 5, 5>, 3>::new(&mut rng),
            SigmoidFn,
            3,
        );
        training_conv_pool_equals_two_passes::<_, _, Hwc<3, 2, 5>, _, 3, 3, 2>(
            Conv2d::<Hwc<9, 7, 8>, Hwc<7, 5, 5>, 3>::new(&mut rng),
            ReluFn,
            3,
        );
    }

    /// Inference of a depthwise convolution with batch normalisation folded in and each
    /// activation in its epilogue, against the three layers, at channel counts with and without
    /// a remainder past the last whole vector.
    #[test]
    fn depthwise_with_folded_batchnorm_and_activation_matches_the_layers() {
        use crate::layers::{BatchNorm, DepthwiseConv2d, Pads};
        fn check<I: Image, O: Image>(seed: u64) {
            let mut rng = seeded_rng(seed);
            let mut depthwise = DepthwiseConv2d::<I, O, 3, 2, Pads<1, 1, 1, 1>>::new(&mut rng);
            let mut batchnorm = BatchNorm::<O>::new();
            for values in [
                &mut depthwise.params.bias[..],
                &mut batchnorm.params.weight[..],
                &mut batchnorm.params.bias[..],
                &mut batchnorm.running_mean[..],
            ] {
                values
                    .iter_mut()
                    .for_each(|v| *v = rng.random_range(-2.0..2.0));
            }
            let variances = batchnorm.running_var.iter_mut();
            variances.for_each(|v| *v = rng.random_range(0.01..4.0));
            let x = random::<I>(3, seed);
            let (mut y, mut normalized) = (Batch::default(), Batch::default());
            depthwise.forward(&x, &mut y, &mut Default::default());
            batchnorm.forward(&y, &mut normalized, &mut Default::default());
            for activation in [
                ActivationKind::Identity,
                ActivationKind::Relu,
                ActivationKind::LeakyRelu(0.1),
                ActivationKind::Sigmoid,
                ActivationKind::Tanh,
            ] {
                let want: Vec<f32> = normalized
                    .as_slice()
                    .iter()
                    .map(|&v| activation.apply(v))
                    .collect();
                let mut folded = FoldedBatchNorm::default();
                let weights = fold_batchnorm(&depthwise.params, &batchnorm, &mut folded);
                let mut got = Batch::default();
                let cache = &mut Default::default();
                depthwise_params_forward(&depthwise, weights, activation, &x, &mut got, cache);
                let what = format!("depthwise {} {activation:?}", I::describe());
                assert_close(&what, got.as_slice(), &want, 1e-5);
            }
        }
        check::<Hwc<8, 7, 32>, Hwc<4, 4, 32>>(21);
        check::<Hwc<7, 8, 19>, Hwc<4, 4, 19>>(22);
    }

    /// Inference of a convolution with batch normalisation folded in, against the two layers
    /// (and ReLU), with running statistics, scale and shift far from their initial values.
    #[test]
    fn folded_batchnorm_matches_the_layers() {
        use crate::layers::{Avg, BatchNorm, Relu};
        let mut rng = seeded_rng(8);
        let conv = Conv2d::<Hwc<9, 8, 8>, Hwc<7, 6, 5>, 3>::new(&mut rng);
        let mut batchnorm = BatchNorm::<Hwc<7, 6, 5>>::new();
        for values in [
            &mut batchnorm.params.weight[..],
            &mut batchnorm.params.bias[..],
            &mut batchnorm.running_mean[..],
        ] {
            values
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-2.0..2.0));
        }
        let variances = batchnorm.running_var.iter_mut();
        variances.for_each(|v| *v = rng.random_range(0.01..4.0));
        let x = random::<Hwc<9, 8, 8>>(3, 4);
        let (mut y, mut normalized, mut want) =
            (Batch::default(), Batch::default(), Batch::default());
        conv.forward(&x, &mut y, &mut Default::default());
        batchnorm.forward(&y, &mut normalized, &mut Default::default());
        Relu::new().forward(&normalized, &mut want, &mut ());
        let mut folded = FoldedBatchNorm::default();
        let weights = fold_batchnorm(&conv.params, &batchnorm, &mut folded);
        let mut got = Batch::default();
        let mut cache = ConvCache::default();
        conv_params_forward(
            &conv,
            weights,
            ActivationKind::Relu,
            &x,
            &mut got,
            &mut cache,
        );
        assert_close("folded", got.as_slice(), want.as_slice(), 1e-5);
        // And with the pooling after it.
        let pool = Pool2d::<Hwc<7, 6, 5>, Hwc<3, 3, 5>, Avg, 2, 2>::new();
        let (mut pooled_want, mut pooled) = (Batch::default(), Batch::default());
        pool.forward(&want, &mut pooled_want, &mut Default::default());
        conv_activation_pool_forward(
            &conv,
            weights,
            ActivationKind::Relu,
            &pool,
            &x,
            &mut pooled,
            &mut cache,
        );
        assert_close(
            "folded and pooled",
            pooled.as_slice(),
            pooled_want.as_slice(),
            1e-5,
        );
    }

    #[test]
    fn dense_with_activation_equals_the_two_layers() {
        let mut rng = seeded_rng(6);
        for samples in [1, 5] {
            every_activation(Dense::<7, 3>::new(&mut rng), samples);
            every_activation(Dense::<33, 70>::new(&mut rng), samples);
        }
        // Large enough that a single sample is split by columns.
        every_activation(Dense::<9216, 128>::new(&mut rng), 1);
    }

    /// The residual addition in the epilogue against the convolution, the sum and the
    /// activation as three passes: valid, same and strided convolutions, a batch of one (its
    /// rows split across threads) and a batch of several.
    fn residual_in_epilogue_equals_three_passes<
        I: Image,
        O: Image,
        const K: usize,
        const S: usize,
        P: Padding,
    >() {
        let conv = Conv2d::<I, O, K, S, P>::new(&mut seeded_rng(3));
        let relu = Activation::<O, ReluFn>::new();
        for samples in [1, 5] {
            let x = random::<I>(samples, 4);
            let skip = random::<O>(samples, 5);
            let (mut conv_out, mut sum, mut want) =
                (Batch::default(), Batch::default(), Batch::default());
            conv.forward(&x, &mut conv_out, &mut Default::default());
            crate::layers::residual_add_forward(&conv_out, &skip, &mut sum);
            relu.forward(&sum, &mut want, &mut ());
            let mut got = Batch::default();
            let kind = EpilogueFn::epilogue(&relu.function);
            let weights = (&conv.params).into();
            let cache = &mut ConvCache::default();
            conv_residual_forward(&conv, weights, kind, &x, &skip, &mut got, cache);
            let what = format!(
                "{} k{K} s{S} padding {}, {samples} samples",
                I::describe(),
                P::PADDING
            );
            assert_close(&what, got.as_slice(), want.as_slice(), 1e-5);
        }
    }

    #[test]
    fn residual_addition_in_the_convolution_epilogue() {
        residual_in_epilogue_equals_three_passes::<Hwc<9, 9, 4>, Hwc<7, 7, 6>, 3, 1, Valid>();
        residual_in_epilogue_equals_three_passes::<Hwc<14, 14, 8>, Hwc<14, 14, 8>, 3, 1, Same>();
        residual_in_epilogue_equals_three_passes::<Hwc<14, 14, 8>, Hwc<7, 7, 16>, 3, 2, Same>();
        residual_in_epilogue_equals_three_passes::<Hwc<28, 28, 32>, Hwc<28, 28, 32>, 3, 1, Same>();
    }
}
