//! Depthwise convolution ([`DepthwiseConv2d`]): one `K × K` filter per channel, each channel
//! convolved on its own (Keras's `DepthwiseConv2D` with a depth multiplier of 1). Followed by a
//! 1x1 convolution it is a depthwise-separable convolution, the building block of MobileNet and
//! DS-CNN keyword spotters: about `K²` times fewer multiplications than a full convolution.
//!
//! Weights are stored `[K, K, C]` (Keras's `[K, K, C, 1]`), biases `[C]`. Every loop runs over
//! the channels innermost, contiguous in NHWC: the forward pass a vector of channels at a time
//! on the active instruction set, its sum kept in a register across the window. Windows that hang over the
//! border with `Same` padding skip the missing rows and columns (zeros contribute nothing).
//! Backward sums the weight gradient over fixed groups of images, one partial sum each, added
//! in group order, so results do not depend on the thread count.

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;
use std::ops::Range;

use rand::Rng;

use super::fused::{ConvWeights, Linear};
use super::padding::window_output_is;
use super::{Layer, Padding, WeightBias, for_each_sample_group, grouped_backward};
use crate::aligned::AlignedVec;
use crate::init::Init;
use crate::kernels::elementwise::ActivationKind;
use crate::kernels::{self, simd::SimdF32, simd::VectorKernel};
use crate::shape::Image;
use crate::tensor::Batch;

/// Convolves each channel of `I` with its own `K × K` filter, `STRIDE` apart, into `O` (as many
/// channels), with padding `P`.
#[derive(Clone, Debug)]
pub struct DepthwiseConv2d<
    I: Image,
    O: Image,
    const K: usize,
    const STRIDE: usize = 1,
    P = super::Valid,
> {
    /// `weight` is `[K, K, C]`, `bias` is `[C]`.
    pub params: WeightBias,
    shapes: PhantomData<(I, O, P)>,
}

/// What backward keeps between calls: one partial weight gradient per group of images.
#[derive(Clone, Debug, Default)]
pub struct DepthwiseCache {
    partial_weight_grads: AlignedVec,
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding>
    DepthwiseConv2d<I, O, K, STRIDE, P>
{
    const WEIGHT_DIMS: &'static [usize] = &[K, K, I::C];
    const PADS: constnet_catalogue::Pads = P::PADDING.pads((I::H, I::W), K, STRIDE);
    const PAD_TOP: usize = Self::PADS.top;
    const PAD_LEFT: usize = Self::PADS.left;

    /// Evaluated when the layer is built.
    const SHAPES_AGREE: () = {
        assert!(
            K > 0 && STRIDE > 0,
            "dwconv: the kernel and stride must be at least 1"
        );
        assert!(
            O::C == I::C,
            "dwconv: the output has one channel per input channel"
        );
        assert!(
            window_output_is::<I, O, P>(K, STRIDE) && O::H > 0 && O::W > 0,
            "dwconv: the output's rows and columns are not what this kernel, stride and padding \
             make of the input"
        );
    };

    /// The layer with Glorot-uniform weights (Keras's default, with its fans of a `[K, K, C, 1]`
    /// kernel) and zero biases.
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let () = Self::SHAPES_AGREE;
        let mut params = WeightBias::zeros(Self::WEIGHT_DIMS, I::C);
        Init::GlorotUniform.fill(&mut params.weight, K * K * I::C, K * K, rng);
        Self {
            params,
            shapes: PhantomData,
        }
    }

    /// Calls `visit(out_pixel, in_pixel, tap)` for every window position that lies inside the
    /// image: the offsets (in values) of the output pixel, the input pixel and the filter tap.
    fn for_each_tap(mut visit: impl FnMut(usize, usize, usize)) {
        for oh in 0..O::H {
            for ow in 0..O::W {
                let out = (oh * O::W + ow) * I::C;
                for kh in 0..K {
                    let Some(ih) = (oh * STRIDE + kh).checked_sub(Self::PAD_TOP) else {
                        continue;
                    };
                    if ih >= I::H {
                        continue;
                    }
                    for kw in 0..K {
                        let Some(iw) = (ow * STRIDE + kw).checked_sub(Self::PAD_LEFT) else {
                            continue;
                        };
                        if iw < I::W {
                            visit(out, (ih * I::W + iw) * I::C, (kh * K + kw) * I::C);
                        }
                    }
                }
            }
        }
    }

    /// The window rows (`kh`) of output row `oh` and columns (`kw`) of output column `ow` that
    /// lie inside the image.
    #[inline(always)]
    fn inside(oh: usize, ow: usize) -> (Range<usize>, Range<usize>) {
        let clip = |start: usize, pad: usize, len: usize| {
            pad.saturating_sub(start)..K.min((len + pad).saturating_sub(start))
        };
        (
            clip(oh * STRIDE, Self::PAD_TOP, I::H),
            clip(ow * STRIDE, Self::PAD_LEFT, I::W),
        )
    }

    /// Inference of `input` with `weights` (a folded batch normalisation's scale and bias, or
    /// the layer's own), then `activation`, into `output`.
    pub(crate) fn forward_with(
        weights: ConvWeights<'_>,
        input: &Batch<I>,
        output: &mut Batch<O>,
        activation: ActivationKind,
    ) {
        let () = Self::SHAPES_AGREE;
        for_each_sample_group(input, output, |images, outputs| {
            kernels::run_vectorized(DepthwiseForward::<I, O, K, STRIDE, P> {
                images,
                weights,
                activation,
                outputs,
                shapes: PhantomData,
            });
        });
    }

    /// One group of images: their summed weight gradient into `dw` and, if asked for, each
    /// image's input gradient.
    fn backward_group(
        &self,
        images: &[f32],
        output_grads: &[f32],
        dw: &mut [f32],
        mut image_grads: Option<&mut [f32]>,
    ) {
        dw.fill(0.0);
        let weight = &self.params.weight;
        for (s, (image, dy)) in images
            .chunks(I::LEN)
            .zip(output_grads.chunks(O::LEN))
            .enumerate()
        {
            let mut dx = image_grads
                .as_deref_mut()
                .map(|grads| &mut grads[s * I::LEN..(s + 1) * I::LEN]);
            if let Some(dx) = dx.as_deref_mut() {
                dx.fill(0.0);
            }
            Self::for_each_tap(|o, i, w| {
                let (dy, x) = (&dy[o..o + I::C], &image[i..i + I::C]);
                for ((dw, &x), &dy) in dw[w..w + I::C].iter_mut().zip(x).zip(dy) {
                    *dw += x * dy;
                }
                if let Some(dx) = dx.as_deref_mut() {
                    let taps = dx[i..i + I::C].iter_mut().zip(&weight[w..w + I::C]);
                    for ((dx, &w), &dy) in taps.zip(dy) {
                        *dx += w * dy;
                    }
                }
            });
        }
    }
}

/// The forward pass over a group of images, compiled for the active instruction set (chosen
/// once per group): each output
/// pixel's channels a vector at a time, its sum in a register over every tap inside the image,
/// then scaled (a folded batch normalisation), biased and, for ReLU, activated there; the
/// channels past the last whole vector one at a time, and other activations over the pixel
/// while it is in L1.
struct DepthwiseForward<'a, I, O, const K: usize, const STRIDE: usize, P> {
    images: &'a [f32],
    weights: ConvWeights<'a>,
    activation: ActivationKind,
    outputs: &'a mut [f32],
    shapes: PhantomData<(I, O, P)>,
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding> VectorKernel
    for DepthwiseForward<'_, I, O, K, STRIDE, P>
{
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        let whole_vectors = I::C - I::C % S::LANES;
        let ConvWeights {
            weight,
            scale,
            bias,
        } = self.weights;
        assert!(
            self.images.len() / I::LEN == self.outputs.len() / O::LEN
                && self.images.len().is_multiple_of(I::LEN)
                && self.outputs.len().is_multiple_of(O::LEN)
                && weight.len() == K * K * I::C,
            "whole images, one output each, one filter per channel"
        );
        assert!(bias.len() == I::C && scale.is_none_or(|scale| scale.len() == I::C));
        let relu = self.activation == ActivationKind::Relu;
        let weight = weight.as_ptr();
        let images = self.images.chunks_exact(I::LEN);
        for (image, out) in images.zip(self.outputs.chunks_exact_mut(O::LEN)) {
            let image = image.as_ptr();
            for (pixel, y) in out.chunks_exact_mut(I::C).enumerate() {
                let (oh, ow) = (pixel / O::W, pixel % O::W);
                let (rows, columns) = DepthwiseConv2d::<I, O, K, STRIDE, P>::inside(oh, ow);
                let first_row =
                    oh * STRIDE + rows.start - DepthwiseConv2d::<I, O, K, STRIDE, P>::PAD_TOP;
                let first_column =
                    ow * STRIDE + columns.start - DepthwiseConv2d::<I, O, K, STRIDE, P>::PAD_LEFT;
                // SAFETY: the taps visited are those `inside` keeps, whose input rows and
                // columns lie in the image (`image` holds `I::LEN` values: whole images,
                // asserted above); tap `(kh, kw)` is in `weight` (`K · K · C` values, asserted);
                // `y`, `bias` and `scale` hold `C` values.
                unsafe {
                    let mut c = 0;
                    while c < whole_vectors {
                        let mut acc = S::zero();
                        for (row, kh) in (first_row..).zip(rows.clone()) {
                            for (column, kw) in (first_column..).zip(columns.clone()) {
                                let x = S::load(image.add((row * I::W + column) * I::C + c));
                                let w = S::load(weight.add((kh * K + kw) * I::C + c));
                                acc = x.mul_add(w, acc);
                            }
                        }
                        let b = S::load(bias.as_ptr().add(c));
                        acc = match scale {
                            Some(scale) => acc.mul_add(S::load(scale.as_ptr().add(c)), b),
                            None => acc.add(b),
                        };
                        if relu {
                            acc = acc.relu();
                        }
                        acc.store(y.as_mut_ptr().add(c));
                        c += S::LANES;
                    }
                    for (c, y) in y.iter_mut().enumerate().skip(whole_vectors) {
                        let mut acc = 0.0;
                        for (row, kh) in (first_row..).zip(rows.clone()) {
                            for (column, kw) in (first_column..).zip(columns.clone()) {
                                let x = *image.add((row * I::W + column) * I::C + c);
                                acc += x * *weight.add((kh * K + kw) * I::C + c);
                            }
                        }
                        let acc = acc * scale.map_or(1.0, |scale| scale[c]) + bias[c];
                        *y = if relu { acc.max(0.0) } else { acc };
                    }
                }
                if !relu && self.activation != ActivationKind::Identity {
                    y.iter_mut().for_each(|y| *y = self.activation.apply(*y));
                }
            }
        }
    }
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding> Layer
    for DepthwiseConv2d<I, O, K, STRIDE, P>
{
    type Input = I;
    type Output = O;
    type Grads = WeightBias;
    type Cache = DepthwiseCache;
    const PARAMS: usize = K * K * I::C + I::C;
    const MULS: usize = O::LEN * K * K;

    fn kind(&self) -> LayerKind {
        LayerKind::DepthwiseConv {
            kernel: K,
            stride: STRIDE,
            padding: P::PADDING,
        }
    }

    fn forward(&self, input: &Batch<I>, output: &mut Batch<O>, _cache: &mut DepthwiseCache) {
        let weights = (&self.params).into();
        Self::forward_with(weights, input, output, ActivationKind::Identity);
    }

    fn backward(
        &self,
        input: &Batch<I>,
        _output: &Batch<O>,
        grad_output: &Batch<O>,
        cache: &mut DepthwiseCache,
        grad_input: Option<&mut Batch<I>>,
        grads: &mut WeightBias,
    ) {
        grouped_backward(
            input,
            grad_output,
            grad_input,
            &mut cache.partial_weight_grads,
            grads,
            |images, dy, dw, dx| self.backward_group(images, dy, dw, dx),
        );
    }

    params_in_field!(params);
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding> Linear
    for DepthwiseConv2d<I, O, K, STRIDE, P>
{
    fn forward_activated(
        &self,
        input: &Batch<I>,
        output: &mut Batch<O>,
        activation: ActivationKind,
        _cache: &mut DepthwiseCache,
    ) {
        Self::forward_with((&self.params).into(), input, output, activation);
    }
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::init::seeded_rng;
    use crate::layers::{Pads, Same, Valid};
    use crate::reference::assert_close;
    use crate::shape::Hwc;

    /// The definition, value by value, in f64: `y[oh][ow][c] = b[c] + Σ x[ih][iw][c] w[kh][kw][c]`
    /// over the window positions inside the image.
    fn reference<I: Image, O: Image, const K: usize, const S: usize, P: Padding>(
        layer: &DepthwiseConv2d<I, O, K, S, P>,
        x: &[f32],
    ) -> Vec<f32> {
        let (top, left) = crate::reference::Geometry {
            in_h: I::H,
            in_w: I::W,
            in_c: I::C,
            out_c: I::C,
            kernel: K,
            stride: S,
            padding: P::PADDING,
        }
        .pad_top_left();
        let mut y = Vec::new();
        for image in x.chunks(I::LEN) {
            for oh in 0..O::H {
                for ow in 0..O::W {
                    for c in 0..I::C {
                        let mut sum = layer.params.bias[c] as f64;
                        for kh in 0..K {
                            for kw in 0..K {
                                let ih = (oh * S + kh) as isize - top;
                                let iw = (ow * S + kw) as isize - left;
                                if ih < 0 || iw < 0 || ih >= I::H as isize || iw >= I::W as isize {
                                    continue;
                                }
                                let at = (ih as usize * I::W + iw as usize) * I::C + c;
                                sum += image[at] as f64
                                    * layer.params.weight[(kh * K + kw) * I::C + c] as f64;
                            }
                        }
                        y.push(sum as f32);
                    }
                }
            }
        }
        y
    }

    fn matches_reference<I: Image, O: Image, const K: usize, const S: usize, P: Padding>() {
        let mut rng = seeded_rng(K as u64 * 10 + S as u64);
        let mut layer = DepthwiseConv2d::<I, O, K, S, P>::new(&mut rng);
        layer
            .params
            .bias
            .iter_mut()
            .for_each(|b| *b = rng.random_range(-0.5..0.5));
        let x = Batch::<I>::from_fn(3, |_| rng.random_range(-1.0..1.0));
        let mut y = Batch::default();
        layer.forward(&x, &mut y, &mut DepthwiseCache::default());
        let what = format!("dwconv {} -> {} k{K} s{S}", I::describe(), O::describe());
        assert_close(&what, y.as_slice(), &reference(&layer, x.as_slice()), 1e-5);
    }

    #[test]
    fn odd_sizes_strides_and_padding_match_the_definition() {
        matches_reference::<Hwc<7, 6, 5>, Hwc<5, 4, 5>, 3, 1, Valid>();
        matches_reference::<Hwc<7, 6, 5>, Hwc<4, 3, 5>, 3, 2, Same>();
        matches_reference::<Hwc<5, 5, 17>, Hwc<5, 5, 17>, 3, 1, Same>();
        matches_reference::<Hwc<7, 9, 3>, Hwc<2, 2, 3>, 4, 3, Valid>();
        matches_reference::<Hwc<8, 8, 6>, Hwc<4, 4, 6>, 3, 2, Pads<1, 1, 1, 1>>();
        matches_reference::<Hwc<6, 7, 5>, Hwc<6, 5, 5>, 3, 1, Pads<2, 0, 0, 0>>();
    }

    /// The weight gradient is summed in fixed groups: the same bits on 1 and 3 threads.
    #[test]
    fn gradients_do_not_depend_on_the_thread_count() {
        let mut rng = seeded_rng(3);
        let layer = DepthwiseConv2d::<Hwc<6, 6, 4>, Hwc<6, 6, 4>, 3, 1, Same>::new(&mut rng);
        let x = Batch::<Hwc<6, 6, 4>>::from_fn(21, |_| rng.random_range(-1.0..1.0));
        let dy = Batch::<Hwc<6, 6, 4>>::from_fn(21, |_| rng.random_range(-1.0..1.0));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut grads, mut dx) = (layer.new_grads(), Batch::default());
                let y = Batch::default();
                let mut cache = DepthwiseCache::default();
                layer.backward(&x, &y, &dy, &mut cache, Some(&mut dx), &mut grads);
                (grads.weight, grads.bias, dx.as_slice().to_vec())
            })
        };
        assert_eq!(run(1), run(3));
    }
}
