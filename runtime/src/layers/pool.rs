//! 2-D pooling ([`Pool2d`]): one window walk, generic over the reduction ([`Max`], [`Avg`]).
//! The stride defaults to the window size. A window over the padding ([`Padding`]) pools only the
//! input values it covers: padding is never a maximum and never counts in a mean (Keras's `same`,
//! ONNX's `count_include_pad = 0`). Each walk clips its window to the image; without padding the
//! clip is the whole window, a constant the compiler folds away.
//!
//! The innermost loop runs over the channels, contiguous in NHWC, so it vectorises. Max pooling's
//! training pass records, for every output value, which input value it is (the first position
//! holding the window's maximum, as in TensorFlow), and its backward pass sends each gradient
//! there by that index ([`PoolCache`]), optionally through the derivative of the activation
//! before it ([`MaxPool2d::backward_through_activation`]); average pooling spreads each gradient
//! over its window.

use constnet_catalogue::LayerKind;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Range;

use rayon::prelude::*;

use super::activation::{ActivationFn, EpilogueFn};
use super::padding::window_output_is;
use super::{Layer, Padding, Valid, for_each_sample_group, samples_per_task};
use crate::kernels::elementwise::{ActivationKind, max_keep_nan};
use crate::kernels::{self, simd::SimdF32, simd::VectorKernel};
use crate::shape::{Image, Shape};
use crate::tensor::Batch;

/// A window reduction: how values combine and where the gradient goes.
pub trait PoolOp: 'static + Copy + Debug + Default + Send + Sync {
    /// The value a window starts from.
    const START: f32;
    /// Whether the output is one of the window's values (the maximum): training records which,
    /// and the gradient goes to it alone. Otherwise each value of the window gets an equal share.
    const SELECTS: bool;
    /// Folds one more value into the window's running result (a selecting op returns `acc` or
    /// `x` itself).
    fn combine(acc: f32, x: f32) -> f32;
    /// [`combine`](Self::combine) on every lane.
    ///
    /// # Safety
    /// The CPU must support `S`'s instruction set.
    unsafe fn combine_lanes<S: SimdF32>(acc: S, x: S) -> S;
    /// The window's output from its running result and the number of values it pooled.
    fn finish(acc: f32, window: usize) -> f32;
    /// A selecting op's [`combine`](Self::combine) that also records where its result came
    /// from: `at` becomes `index` when `x` replaces `acc` (the op returns `acc` itself
    /// otherwise, so comparing bits tells), and stays when it does not. A select, not a branch,
    /// so loops over channels vectorise.
    #[inline(always)]
    fn select(acc: &mut f32, at: &mut u32, x: f32, index: u32) {
        let kept = Self::combine(*acc, x);
        *at = if kept.to_bits() != acc.to_bits() {
            index
        } else {
            *at
        };
        *acc = kept;
    }
}

/// The window's maximum; NaN if the window holds a NaN (as in PyTorch and TensorFlow).
#[derive(Clone, Copy, Debug, Default)]
pub struct Max;

impl PoolOp for Max {
    const START: f32 = f32::NEG_INFINITY;
    const SELECTS: bool = true;
    fn combine(acc: f32, x: f32) -> f32 {
        max_keep_nan(acc, x)
    }
    #[inline(always)]
    unsafe fn combine_lanes<S: SimdF32>(acc: S, x: S) -> S {
        unsafe { acc.max_keep_nan(x) }
    }
    fn finish(acc: f32, _window: usize) -> f32 {
        acc
    }
}

/// The window's mean.
#[derive(Clone, Copy, Debug, Default)]
pub struct Avg;

impl PoolOp for Avg {
    const START: f32 = 0.0;
    const SELECTS: bool = false;
    fn combine(acc: f32, x: f32) -> f32 {
        acc + x
    }
    #[inline(always)]
    unsafe fn combine_lanes<S: SimdF32>(acc: S, x: S) -> S {
        unsafe { acc.add(x) }
    }
    fn finish(acc: f32, window: usize) -> f32 {
        acc / window as f32
    }
}

/// What max pooling's training pass keeps for backward: for every output value, the offset (in
/// its image) of the input value it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolCache {
    selected: Vec<u32>,
}

/// Runs `f(images, outputs, selected)` over groups of samples in parallel, as
/// [`for_each_sample_group`] does, each group with its part of `cache`'s offsets (sized for the
/// batch) to record the selecting pool's maxima in.
pub(crate) fn for_each_selecting_group<I: Shape, O: Shape>(
    input: &Batch<I>,
    output: &mut Batch<O>,
    cache: &mut PoolCache,
    f: impl Fn(&[f32], &mut [f32], &mut [u32]) + Sync,
) {
    let samples = input.len();
    output.resize(samples);
    cache.selected.resize(samples * O::LEN, 0);
    let group = samples_per_task(samples, I::LEN + O::LEN);
    input
        .as_slice()
        .par_chunks(group * I::LEN)
        .zip(output.as_mut_slice().par_chunks_mut(group * O::LEN))
        .zip(cache.selected.par_chunks_mut(group * O::LEN))
        .for_each(|((images, outputs), selected)| f(images, outputs, selected));
}

/// Pools `K × K` windows of `I`, `STRIDE` apart and padded by `P`, into `O` with the reduction
/// `Op`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pool2d<
    I: Image,
    O: Image,
    Op: PoolOp,
    const K: usize,
    const STRIDE: usize,
    P: Padding = Valid,
> {
    shapes: PhantomData<(I, O, Op, P)>,
}

/// Max pooling of `K × K` windows, `STRIDE` apart (by default, `K`).
pub type MaxPool2d<I, O, const K: usize, const STRIDE: usize = K, P = Valid> =
    Pool2d<I, O, Max, K, STRIDE, P>;
/// Average pooling of `K × K` windows, `STRIDE` apart (by default, `K`).
pub type AvgPool2d<I, O, const K: usize, const STRIDE: usize = K, P = Valid> =
    Pool2d<I, O, Avg, K, STRIDE, P>;

impl<I: Image, O: Image, Op: PoolOp, const K: usize, const STRIDE: usize, P: Padding>
    Pool2d<I, O, Op, K, STRIDE, P>
{
    const PADS: constnet_catalogue::Pads = P::PADDING.pads((I::H, I::W), K, STRIDE);
    /// Whether some window reaches over the border.
    const PADDED: bool = !P::PADDING.is_none();

    /// The window rows (`kh`) of output row `oh`, and the window columns (`kw`) of output column
    /// `ow`, that lie inside the image: input row `oh · STRIDE + kh − top`, column `ow · STRIDE +
    /// kw − left`. Never empty: no pad exceeds half the window.
    #[inline(always)]
    fn inside(oh: usize, ow: usize) -> (Range<usize>, Range<usize>) {
        if !Self::PADDED {
            return (0..K, 0..K);
        }
        let clip = |start: usize, pad: usize, len: usize| {
            pad.saturating_sub(start)..K.min(len + pad - start)
        };
        (
            clip(oh * STRIDE, Self::PADS.top, I::H),
            clip(ow * STRIDE, Self::PADS.left, I::W),
        )
    }

    /// The offset (in one image, channel 0) of the first input value of output pixel `(oh,
    /// ow)`'s window inside the image, and the rows and columns of the window there.
    #[inline(always)]
    fn window_start(oh: usize, ow: usize) -> (usize, usize, usize) {
        let (rows, columns) = Self::inside(oh, ow);
        let row = oh * STRIDE + rows.start - Self::PADS.top;
        let column = ow * STRIDE + columns.start - Self::PADS.left;
        ((row * I::W + column) * I::C, rows.len(), columns.len())
    }

    /// Evaluated when the layer is built: the window must fit and the output shape must be the
    /// one pooling produces.
    const SHAPES_AGREE: () = {
        assert!(
            K > 0 && STRIDE > 0,
            "pool2d: the window and stride must be at least 1"
        );
        assert!(
            P::PADDING.output((I::H, I::W), K, STRIDE).is_some(),
            "pool2d: the window is larger than its input (see the layer's type for both sizes)"
        );
        assert!(
            Self::PADS.largest() <= K / 2,
            "pool2d: a pad of more than half the window makes windows without an input value"
        );
        assert!(
            window_output_is::<I, O, P>(K, STRIDE),
            "pool2d: the output's rows and columns are not what this window, stride and padding \
             make of the input"
        );
        assert!(O::C == I::C, "pool2d: pooling keeps the number of channels");
        assert!(
            I::LEN <= u32::MAX as usize,
            "pool2d: an input image holds more than 2^32 - 1 values"
        );
    };

    /// The layer.
    pub fn new() -> Self {
        let () = Self::SHAPES_AGREE;
        Self {
            shapes: PhantomData,
        }
    }

    /// A selecting op's training pass over whole images (`images`, `outputs` and `selected` hold
    /// the same number of them): each output value and the offset, in its image, of the input
    /// value it is.
    pub(crate) fn select_images(images: &[f32], outputs: &mut [f32], selected: &mut [u32]) {
        kernels::run_vectorized(SelectMaxima::<I, O, Op, K, STRIDE, P> {
            images,
            outputs,
            selected,
            shapes: PhantomData,
        });
    }

    /// Pools output rows `rows` into `out` (exactly those rows) from `input_rows`, which holds
    /// input rows `first_input_row..` of one image: every row those windows cover inside it.
    ///
    /// # Panics
    /// If `input_rows` does not reach the last window's row or `out` is not `rows` long.
    pub(crate) fn pool_rows(
        input_rows: &[f32],
        first_input_row: usize,
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        assert_eq!(
            out.len(),
            rows.len() * O::W * O::C,
            "pool_rows: output length"
        );
        if let Some(last) = rows.end.checked_sub(1) {
            let first_read = (rows.start * STRIDE).saturating_sub(Self::PADS.top);
            let end_read = (last * STRIDE + K).saturating_sub(Self::PADS.top).min(I::H);
            assert!(
                first_input_row <= first_read
                    && input_rows.len() >= (end_read - first_input_row) * I::W * I::C,
                "pool_rows: the input rows do not cover the windows"
            );
        }
        kernels::run_vectorized(PoolRows::<I, O, Op, K, STRIDE, P> {
            input_rows,
            first_input_row,
            first_row: rows.start,
            out,
            shapes: PhantomData,
        });
    }

    /// A selecting op's backward pass: each output gradient, times `activation`'s derivative at
    /// that output value, goes to the input value the output is; every other input gradient is
    /// zero.
    fn route_gradients<F: EpilogueFn>(
        activation: &F,
        output: &Batch<O>,
        grad_output: &Batch<O>,
        cache: &PoolCache,
        grad_input: &mut Batch<I>,
    ) {
        let samples = grad_output.len();
        assert!(
            cache.selected.len() == samples * O::LEN && output.len() == samples,
            "max pooling's backward pass needs the output and cache of its training pass on \
             this batch"
        );
        grad_input.resize(samples);
        let group = samples_per_task(samples, I::LEN + O::LEN);
        grad_input
            .as_mut_slice()
            .par_chunks_mut(group * I::LEN)
            .zip(output.as_slice().par_chunks(group * O::LEN))
            .zip(grad_output.as_slice().par_chunks(group * O::LEN))
            .zip(cache.selected.par_chunks(group * O::LEN))
            .for_each(|(((grad_inputs, outputs), grad_outputs), selected)| {
                kernels::run_vectorized(RouteGradients::<I, O, F, K, STRIDE, P> {
                    activation,
                    grad_inputs,
                    outputs,
                    grad_outputs,
                    selected,
                    shapes: PhantomData,
                });
            });
    }

    /// A non-selecting op's backward pass over one image: each output gradient spread evenly
    /// over the input values its window pooled.
    fn spread_image(dx: &mut [f32], dy: &[f32]) {
        for (pixel, dy) in dy.chunks(O::C).enumerate() {
            let (first, rows, columns) = Self::window_start(pixel / O::W, pixel % O::W);
            let pooled = (rows * columns) as f32;
            for kh in 0..rows {
                for kw in 0..columns {
                    let offset = first + (kh * I::W + kw) * I::C;
                    for (dx, &dy) in dx[offset..offset + I::C].iter_mut().zip(dy) {
                        *dx += dy / pooled;
                    }
                }
            }
        }
    }
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding>
    MaxPool2d<I, O, K, STRIDE, P>
{
    /// Backward of max pooling and the activation before it, in one pass: `output` is this
    /// pool's output from [`Layer::forward_train`] (each window's maximum of activated values `y
    /// = f(x)`), and `grad_input` receives the gradient with respect to `x`, the pre-activation:
    /// each window's gradient times `f'` at its maximum, at the input value the maximum came
    /// from, zero elsewhere. The activation's own pass over every value is saved. Equals max
    /// pooling's backward followed by the activation's (exactly so when windows do not overlap).
    /// `output` may have been scaled in place by dropout when `f'` depends only on the sign
    /// (ReLU, leaky ReLU): where dropout zeroed a value, its gradient is zero too.
    ///
    /// # Panics
    /// If `cache` is not from [`Layer::forward_train`] on a batch of `output`'s size.
    pub fn backward_through_activation<F: EpilogueFn>(
        &self,
        activation: &F,
        output: &Batch<O>,
        grad_output: &Batch<O>,
        cache: &PoolCache,
        grad_input: &mut Batch<I>,
    ) {
        let () = Self::SHAPES_AGREE;
        Self::route_gradients(activation, output, grad_output, cache, grad_input);
    }
}

/// The activation of max pooling's own backward pass: the gradient goes through unchanged.
#[derive(Clone, Copy, Debug)]
struct Unchanged;

impl ActivationFn for Unchanged {
    fn value(&self, x: f32) -> f32 {
        x
    }
    fn derivative(&self, _x: f32, _y: f32) -> f32 {
        1.0
    }
}

impl EpilogueFn for Unchanged {
    fn derivative_from_output(&self, _y: f32) -> f32 {
        1.0
    }
    fn epilogue(&self) -> ActivationKind {
        ActivationKind::Identity
    }
}

/// The training pass of a selecting pool over a group of images, compiled for the active
/// instruction set: each output value and, in `selected`, the offset (in its image) of the
/// input value it is, the first of its window that `combine` kept. Plain loops over the window
/// in window order, the channel loop innermost, so it vectorises.
struct SelectMaxima<'a, I, O, Op, const K: usize, const STRIDE: usize, P> {
    images: &'a [f32],
    outputs: &'a mut [f32],
    selected: &'a mut [u32],
    shapes: PhantomData<(I, O, Op, P)>,
}

impl<I: Image, O: Image, Op: PoolOp, const K: usize, const STRIDE: usize, P: Padding> VectorKernel
    for SelectMaxima<'_, I, O, Op, K, STRIDE, P>
{
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        let images = self.images.chunks_exact(I::LEN);
        let outputs = self.outputs.chunks_exact_mut(O::LEN);
        for ((image, out), selected) in images
            .zip(outputs)
            .zip(self.selected.chunks_exact_mut(O::LEN))
        {
            for (pixel, (y, at)) in out
                .chunks_exact_mut(O::C)
                .zip(selected.chunks_exact_mut(O::C))
                .enumerate()
            {
                let (oh, ow) = (pixel / O::W, pixel % O::W);
                y.fill(Op::START);
                let (first, rows, columns) = Pool2d::<I, O, Op, K, STRIDE, P>::window_start(oh, ow);
                for (c, at) in at.iter_mut().enumerate() {
                    *at = (first + c) as u32;
                }
                for kh in 0..rows {
                    for kw in 0..columns {
                        let offset = first + (kh * I::W + kw) * I::C;
                        let values = &image[offset..offset + I::C];
                        for (c, ((y, at), &x)) in
                            y.iter_mut().zip(at.iter_mut()).zip(values).enumerate()
                        {
                            Op::select(y, at, x, (offset + c) as u32);
                        }
                    }
                }
            }
        }
    }
}

/// The backward pass of max pooling (and an activation before it) over a group of images,
/// compiled for the active instruction set: `outputs` are the values `activation`'s derivative
/// is taken at, one per output gradient (the plain backward passes anything of that length to
/// [`Unchanged`], which reads none). Windows that tile their rows (`K = STRIDE`) are written
/// whole, each value its gradient or zero, and the rows and columns no window covers are zeroed:
/// every input gradient is written once. Otherwise the images' gradients are zeroed and each
/// output gradient added at its selected offset.
struct RouteGradients<'a, I, O, F, const K: usize, const STRIDE: usize, P> {
    activation: &'a F,
    grad_inputs: &'a mut [f32],
    outputs: &'a [f32],
    grad_outputs: &'a [f32],
    selected: &'a [u32],
    shapes: PhantomData<(I, O, P)>,
}

impl<I: Image, O: Image, F: EpilogueFn, const K: usize, const STRIDE: usize, P: Padding>
    VectorKernel for RouteGradients<'_, I, O, F, K, STRIDE, P>
{
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        let Self {
            activation,
            grad_inputs,
            outputs,
            grad_outputs,
            selected,
            ..
        } = self;
        let images = grad_inputs.chunks_exact_mut(I::LEN);
        let pooled = outputs
            .chunks_exact(O::LEN)
            .zip(grad_outputs.chunks_exact(O::LEN))
            .zip(selected.chunks_exact(O::LEN));
        for (dx, ((y, dy), selected)) in images.zip(pooled) {
            if K == STRIDE && P::PADDING.is_none() {
                write_windows::<I, O, F, K>(activation, dx, y, dy, selected);
            } else {
                dx.fill(0.0);
                for ((&y, &dy), &at) in y.iter().zip(dy).zip(selected) {
                    dx[at as usize] += dy * activation.derivative_from_output(y);
                }
            }
        }
    }
}

/// One image's input gradient when max pooling's windows tile their rows (`K = STRIDE`, no
/// padding): row by
/// row, each window's values the gradient (times `activation`'s derivative at the output `y`)
/// where selected and zero elsewhere, then the columns and rows no window covers zero.
#[inline(always)]
fn write_windows<I: Image, O: Image, F: EpilogueFn, const K: usize>(
    activation: &F,
    dx: &mut [f32],
    y: &[f32],
    dy: &[f32],
    selected: &[u32],
) {
    let covered_width = O::W * K * I::C;
    for row in 0..O::H * K {
        let oh = row / K;
        let row_start = row * I::W * I::C;
        for ow in 0..O::W {
            let pixel = (oh * O::W + ow) * O::C;
            let (y, dy) = (&y[pixel..pixel + O::C], &dy[pixel..pixel + O::C]);
            let at = &selected[pixel..pixel + O::C];
            for kw in 0..K {
                let offset = row_start + (ow * K + kw) * I::C;
                let dx = &mut dx[offset..offset + I::C];
                for (c, ((dx, &at), (&y, &dy))) in
                    dx.iter_mut().zip(at).zip(y.iter().zip(dy)).enumerate()
                {
                    let gradient = dy * activation.derivative_from_output(y);
                    *dx = if at as usize == offset + c {
                        gradient
                    } else {
                        0.0
                    };
                }
            }
        }
        dx[row_start + covered_width..row_start + I::W * I::C].fill(0.0);
    }
    dx[O::H * K * I::W * I::C..].fill(0.0);
}

/// The vector kernel of [`Pool2d::pool_rows`], whose checks it relies on: each output pixel's
/// channels a vector at a time, the running result in a register across the window, the
/// channels past the last whole vector one at a time.
struct PoolRows<'a, I, O, Op, const K: usize, const STRIDE: usize, P> {
    input_rows: &'a [f32],
    first_input_row: usize,
    first_row: usize,
    out: &'a mut [f32],
    shapes: PhantomData<(I, O, Op, P)>,
}

impl<I: Image, O: Image, Op: PoolOp, const K: usize, const STRIDE: usize, P: Padding> VectorKernel
    for PoolRows<'_, I, O, Op, K, STRIDE, P>
{
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        let whole_vectors = I::C - I::C % S::LANES;
        let input = self.input_rows.as_ptr();
        for (pixel, y) in self.out.chunks_exact_mut(O::C).enumerate() {
            let (oh, ow) = (self.first_row + pixel / O::W, pixel % O::W);
            let (first, rows, columns) = Pool2d::<I, O, Op, K, STRIDE, P>::window_start(oh, ow);
            let window = first - self.first_input_row * I::W * I::C;
            // SAFETY: `pool_rows` checked that `input_rows` holds every row of this pixel's
            // window, and the window's columns lie inside a row; `y` holds `C` values.
            unsafe {
                let mut c = 0;
                while c < whole_vectors {
                    let mut acc = S::splat(Op::START);
                    for kh in 0..rows {
                        let row = input.add(window + kh * I::W * I::C + c);
                        for kw in 0..columns {
                            acc = Op::combine_lanes(acc, S::load(row.add(kw * I::C)));
                        }
                    }
                    acc.store(y.as_mut_ptr().add(c));
                    c += S::LANES;
                }
                for (c, y) in y.iter_mut().enumerate().skip(whole_vectors) {
                    let mut acc = Op::START;
                    for kh in 0..rows {
                        let row = input.add(window + kh * I::W * I::C + c);
                        for kw in 0..columns {
                            acc = Op::combine(acc, *row.add(kw * I::C));
                        }
                    }
                    *y = acc;
                }
            }
            for y in y.iter_mut() {
                *y = Op::finish(*y, rows * columns);
            }
        }
    }
}

impl<I: Image, O: Image, Op: PoolOp, const K: usize, const STRIDE: usize, P: Padding> Layer
    for Pool2d<I, O, Op, K, STRIDE, P>
{
    type Input = I;
    type Output = O;
    type Cache = PoolCache;

    fn forward(&self, input: &Batch<I>, output: &mut Batch<O>, _workspace: &mut PoolCache) {
        let () = Self::SHAPES_AGREE;
        for_each_sample_group(input, output, |images, outputs| {
            for (image, out) in images.chunks(I::LEN).zip(outputs.chunks_mut(O::LEN)) {
                Self::pool_rows(image, 0, 0..O::H, out);
            }
        });
    }

    fn forward_train(&mut self, input: &Batch<I>, output: &mut Batch<O>, cache: &mut PoolCache) {
        if !Op::SELECTS {
            return self.forward(input, output, cache);
        }
        let () = Self::SHAPES_AGREE;
        for_each_selecting_group(input, output, cache, Self::select_images);
    }

    fn backward(
        &self,
        input: &Batch<I>,
        _output: &Batch<O>,
        grad_output: &Batch<O>,
        cache: &mut PoolCache,
        grad_input: Option<&mut Batch<I>>,
        _grads: &mut Self::Grads,
    ) {
        let Some(grad_input) = grad_input else { return };
        if Op::SELECTS {
            Self::route_gradients(&Unchanged, grad_output, grad_output, cache, grad_input);
        } else {
            grad_input.resize(input.len());
            let group = samples_per_task(input.len(), I::LEN + O::LEN);
            let dx_groups = grad_input.as_mut_slice().par_chunks_mut(group * I::LEN);
            let dy_groups = grad_output.as_slice().par_chunks(group * O::LEN);
            dx_groups.zip(dy_groups).for_each(|(dx, dy)| {
                dx.fill(0.0);
                for (dx, dy) in dx.chunks_mut(I::LEN).zip(dy.chunks(O::LEN)) {
                    Self::spread_image(dx, dy);
                }
            });
        }
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Pool {
            max: Op::SELECTS,
            size: K,
            stride: STRIDE,
            padding: P::PADDING,
        }
    }

    no_params!();
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::init::seeded_rng;
    use crate::layers::NoParams;
    use crate::layers::activation::{LeakyReluFn, ReluFn, SigmoidFn, TanhFn};
    use crate::reference::{Geometry, assert_close, pool_backward, pool_forward};
    use crate::shape::Hwc;

    fn matches_reference<I: Image, O: Image, Op: PoolOp, const K: usize, const S: usize>(
        max: bool,
    ) {
        matches_reference_padded::<I, O, Op, K, S, Valid>(max);
    }

    fn matches_reference_padded<
        I: Image,
        O: Image,
        Op: PoolOp,
        const K: usize,
        const S: usize,
        P: Padding,
    >(
        max: bool,
    ) {
        let mut rng = seeded_rng(K as u64);
        let samples = 3;
        let mut pool = Pool2d::<I, O, Op, K, S, P>::new();
        let x = Batch::<I>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let dy = Batch::<O>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let geometry = Geometry {
            in_h: I::H,
            in_w: I::W,
            in_c: I::C,
            out_c: I::C,
            kernel: K,
            stride: S,
            padding: P::PADDING,
        };
        let what = format!(
            "{:?} pool {} -> {} k{K} s{S} padding {}",
            Op::default(),
            I::describe(),
            O::describe(),
            P::PADDING
        );
        let mut y = Batch::default();
        let mut cache = PoolCache::default();
        pool.forward_train(&x, &mut y, &mut cache);
        let mut inferred = Batch::default();
        pool.forward(&x, &mut inferred, &mut PoolCache::default());
        assert_eq!(
            inferred.as_slice(),
            y.as_slice(),
            "{what}: inference and training"
        );
        let want = pool_forward(geometry, max, x.as_slice(), samples);
        assert_close(&format!("{what}: forward"), y.as_slice(), &want, 1e-6);
        // A buffer left over from an earlier pass: every value must be overwritten.
        let mut dx = Batch::<I>::from_fn(samples, |_| f32::NAN);
        pool.backward(&x, &y, &dy, &mut cache, Some(&mut dx), &mut NoParams);
        let want = pool_backward(geometry, max, x.as_slice(), dy.as_slice(), samples);
        assert_close(
            &format!("{what}: input gradient"),
            dx.as_slice(),
            &want,
            1e-6,
        );
    }

    #[test]
    fn odd_sizes_and_strides_match_the_reference() {
        matches_reference::<Hwc<5, 7, 3>, Hwc<2, 3, 3>, Max, 2, 2>(true);
        matches_reference::<Hwc<5, 7, 3>, Hwc<2, 3, 3>, Avg, 2, 2>(false);
        matches_reference::<Hwc<5, 7, 3>, Hwc<2, 3, 3>, Max, 3, 2>(true);
        matches_reference::<Hwc<5, 7, 3>, Hwc<3, 5, 3>, Avg, 3, 1>(false);
        matches_reference::<Hwc<24, 24, 64>, Hwc<12, 12, 64>, Max, 2, 2>(true);
        matches_reference::<Hwc<6, 9, 5>, Hwc<2, 3, 5>, Avg, 3, 3>(false);
        // Whole vectors of every instruction set and a remainder.
        matches_reference::<Hwc<5, 6, 19>, Hwc<2, 3, 19>, Max, 2, 2>(true);
        matches_reference::<Hwc<5, 6, 19>, Hwc<3, 4, 19>, Avg, 3, 1>(false);
    }

    #[test]
    fn padded_windows_pool_only_the_input_they_cover() {
        use crate::layers::{Pads, Same};
        // ResNet's stem pooling: 3x3, stride 2, a pad of 1 (PyTorch's MaxPool2d(3, 2, 1)).
        matches_reference_padded::<Hwc<8, 8, 19>, Hwc<4, 4, 19>, Max, 3, 2, Pads<1, 1, 1, 1>>(true);
        matches_reference_padded::<Hwc<7, 8, 5>, Hwc<4, 4, 5>, Avg, 3, 2, Pads<1, 1, 1, 1>>(false);
        // Keras's `same` pooling at odd sizes, and asymmetric pads.
        matches_reference_padded::<Hwc<5, 7, 3>, Hwc<3, 4, 3>, Max, 2, 2, Same>(true);
        matches_reference_padded::<Hwc<5, 7, 3>, Hwc<3, 4, 3>, Avg, 2, 2, Same>(false);
        matches_reference_padded::<Hwc<5, 5, 17>, Hwc<5, 4, 17>, Max, 3, 1, Pads<1, 1, 0, 1>>(true);
        matches_reference_padded::<Hwc<5, 5, 17>, Hwc<5, 4, 17>, Avg, 2, 1, Pads<1, 0, 0, 0>>(
            false,
        );
    }

    /// Max pooling's backward through an activation equals the pool's backward followed by the
    /// activation's: bit for bit where windows do not overlap, within rounding where an input
    /// value is the maximum of several windows (its gradients are added before the derivative
    /// multiplies them in one, after in the other).
    fn through_activation_equals_two_passes<
        I: Image,
        O: Image,
        F: EpilogueFn,
        const K: usize,
        const S: usize,
    >(
        activation: F,
    ) {
        let mut rng = seeded_rng(K as u64 + 10 * S as u64);
        let samples = 3;
        let mut pool = MaxPool2d::<I, O, K, S>::new();
        let x = Batch::<I>::from_fn(samples, |_| rng.random_range(-2.0..2.0));
        let activated = Batch::<I>::from_fn(samples, |i| activation.value(x.as_slice()[i]));
        let dy = Batch::<O>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let (mut y, mut cache) = (Batch::default(), PoolCache::default());
        pool.forward_train(&activated, &mut y, &mut cache);
        let mut two_passes = Batch::default();
        pool.backward(
            &activated,
            &y,
            &dy,
            &mut cache,
            Some(&mut two_passes),
            &mut NoParams,
        );
        for (grad, &value) in two_passes
            .as_mut_slice()
            .iter_mut()
            .zip(activated.as_slice())
        {
            *grad *= activation.derivative_from_output(value);
        }
        let mut fused = Batch::<I>::from_fn(samples, |_| f32::NAN);
        pool.backward_through_activation(&activation, &y, &dy, &cache, &mut fused);
        let what = format!("{activation:?}, {} k{K} s{S}", I::describe());
        if K == S {
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(fused.as_slice()),
                bits(two_passes.as_slice()),
                "{what}"
            );
        } else {
            assert_close(&what, fused.as_slice(), two_passes.as_slice(), 1e-6);
        }
    }

    fn through_every_activation<I: Image, O: Image, const K: usize, const S: usize>() {
        through_activation_equals_two_passes::<I, O, _, K, S>(ReluFn);
        through_activation_equals_two_passes::<I, O, _, K, S>(LeakyReluFn { alpha: 0.1 });
        through_activation_equals_two_passes::<I, O, _, K, S>(SigmoidFn);
        through_activation_equals_two_passes::<I, O, _, K, S>(TanhFn);
    }

    #[test]
    fn backward_through_an_activation_equals_the_two_passes() {
        through_every_activation::<Hwc<24, 24, 64>, Hwc<12, 12, 64>, 2, 2>();
        // A row and a column no window covers; whole vectors and a remainder.
        through_every_activation::<Hwc<5, 7, 19>, Hwc<2, 3, 19>, 2, 2>();
        // Overlapping windows.
        through_every_activation::<Hwc<5, 7, 3>, Hwc<2, 3, 3>, 3, 2>();
        through_every_activation::<Hwc<4, 5, 2>, Hwc<2, 3, 2>, 3, 1>();
    }

    /// The vector lanes combine as the scalar [`Max::combine`] does, bit for bit: a NaN
    /// anywhere in the window wins, and of `-0.0` and `0.0` the first in window order is kept.
    #[test]
    fn vector_lanes_keep_nan_and_the_first_of_equal_values() {
        const C: usize = 37;
        let pool = MaxPool2d::<Hwc<2, 2, C>, Hwc<1, 1, C>, 2>::new();
        let window_values = |c: usize| -> [f32; 4] {
            let mut values = match c % 3 {
                0 => [-0.0, 0.0, -1.0, -2.0],
                1 => [0.0, -0.0, -3.0, -0.0],
                _ => [1.0, 2.0, 2.0, -5.0],
            };
            if c % 5 < 4 {
                values[c % 5] = f32::NAN;
            }
            values
        };
        let mut x = Batch::<Hwc<2, 2, C>>::zeros(1);
        for c in 0..C {
            for (position, value) in window_values(c).into_iter().enumerate() {
                x.as_mut_slice()[position * C + c] = value;
            }
        }
        let mut y = Batch::default();
        pool.forward(&x, &mut y, &mut PoolCache::default());
        for c in 0..C {
            let want = window_values(c).into_iter().fold(Max::START, Max::combine);
            assert_eq!(y.as_slice()[c].to_bits(), want.to_bits(), "channel {c}");
        }
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_maximum_only() {
        let mut pool = MaxPool2d::<Hwc<2, 2, 1>, Hwc<1, 1, 1>, 2>::new();
        let x = Batch::<Hwc<2, 2, 1>>::from_vec(vec![1.0, 3.0, 3.0, 0.0]).unwrap();
        let mut y = Batch::default();
        let mut cache = PoolCache::default();
        pool.forward_train(&x, &mut y, &mut cache);
        assert_eq!(y.as_slice(), &[3.0]);
        let mut dx = Batch::default();
        let dy = Batch::from_vec(vec![1.0]).unwrap();
        pool.backward(&x, &y, &dy, &mut cache, Some(&mut dx), &mut NoParams);
        assert_eq!(dx.as_slice(), &[0.0, 1.0, 0.0, 0.0]);
    }

    /// A NaN anywhere in a window makes the window's maximum NaN, wherever it sits and
    /// whatever the other values are; windows without one are unaffected.
    #[test]
    fn nan_in_a_window_propagates() {
        let pool = MaxPool2d::<Hwc<2, 4, 1>, Hwc<1, 2, 1>, 2>::new();
        for position in [0, 1, 4, 5] {
            let mut values = vec![1.0, 5.0, 2.0, 3.0, -4.0, 0.5, 7.0, 6.0];
            values[position] = f32::NAN;
            let x = Batch::<Hwc<2, 4, 1>>::from_vec(values).unwrap();
            let mut y = Batch::default();
            pool.forward(&x, &mut y, &mut PoolCache::default());
            assert!(
                y.as_slice()[0].is_nan(),
                "NaN at {position}: {:?}",
                y.as_slice()
            );
            assert_eq!(y.as_slice()[1], 7.0);
        }
    }
}
