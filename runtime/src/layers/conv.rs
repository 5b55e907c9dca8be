//! 2-D convolution ([`Conv2d`]) with its kernels: im2col, col2im and the GEMM calls.
//!
//! The patches of an image form a matrix (one row per output pixel, `k·k·C` columns in `(kh, kw,
//! c)` order; in NHWC a patch row is `k` runs of `k·C` contiguous floats), and the convolution
//! becomes one GEMM with the weights, stored `[k, k, in_channels, filters]` as Keras stores them:
//! - forward: `Y = patches · W + b`, the GEMM reading the patches straight from the image
//!   ([`Patches`]), or from a zero-padded copy of it with `Same` padding;
//! - weight gradient: `dW = Σ_images patchesᵀ · dY` (patches copied out), `db = Σ dY`;
//! - input gradient: `dpatches = dY · Wᵀ` (`Wᵀ` copied out once per call), scattered back onto
//!   the image (col2im).
//!
//! 3x3 stride-1 convolutions of enough input channels and tiles run all three passes with
//! Winograd's F(4x4, 3x3) or F(2x2, 3x3) instead ([`ConvAlgorithm`], [`winograd`]); the input
//! gradient is then the adjoint of the forward pass.
//!
//! Inference splits the images into one contiguous group per rayon thread, or, for batches
//! smaller than the pool, each image's output pixels; the bias and a fused activation are
//! applied in the GEMM's epilogue ([`Linear`]). Backward sums the
//! weight gradient over fixed groups of images (`GRADIENT_GROUP`), one partial sum each, and adds
//! the partial sums in group order, so the result is the same bit for bit on any number of
//! threads.

use constnet_catalogue::LayerKind;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Range;

use rand::Rng;

use super::fused::{ConvWeights, Linear, RowSplit, for_each_output_rows};
use super::padding::window_output_is;
use super::{Layer, Padding, ParamVec, Valid, Version, WeightBias, grouped_backward, max};
use crate::aligned::AlignedVec;
use crate::context::{self, ConvPolicy};
use crate::init::Init;
use crate::kernels::elementwise::ActivationKind;
use crate::kernels::gemm::{Epilogue, MatMut, MatRef, Patches, gemm, gemm_patches};
use crate::kernels::winograd::{self, Tile};
use crate::kernels::with_scratch;
use crate::shape::Image;
use crate::tensor::Batch;

/// How an op runs its convolution, as functions of the batch size.
#[derive(Clone, Copy, Debug)]
pub struct ConvOp {
    /// The algorithm ([`Conv2d::algorithm`]).
    pub algorithm: fn(usize) -> ConvAlgorithm,
    /// Values of transformed filters kept between calls ([`Conv2d::cached_filter_values`]).
    pub cached_filter_values: fn(usize) -> usize,
}

/// How a convolution computes its passes' products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// The patches times the weights, in one GEMM per image (or part of one).
    Gemm,
    /// Winograd's minimal filtering with this tile ([`winograd`]): 4x (F(4x4, 3x3)) or 2.25x
    /// (F(2x2, 3x3)) fewer multiplications, for 3x3 stride-1 convolutions.
    Winograd(Tile),
}

impl std::fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvAlgorithm::Gemm => f.pad("GEMM"),
            ConvAlgorithm::Winograd(tile) => f.pad(&format!("Winograd {tile}")),
        }
    }
}

/// Fewest input channels for which a 3x3 convolution runs Winograd: with fewer, the
/// transforms cost more than the multiplications saved.
const WINOGRAD_MIN_CHANNELS: usize = 8;
/// Fewest 4x4 output tiles a call must have (over all its images) to run Winograd: with fewer,
/// each thread's share of tiles does not repay streaming all the transformed filters.
const WINOGRAD_MIN_TILES: usize = 32;

/// A convolution's weights made ready for its algorithm: as stored for the GEMM, and the
/// transformed filters for Winograd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreparedWeights<'a> {
    weights: ConvWeights<'a>,
    /// The geometry Winograd runs with, and its transformed filters.
    winograd: Option<(winograd::Geometry, &'a [f32])>,
}

impl PreparedWeights<'_> {
    /// Whether the convolution runs Winograd's algorithm.
    pub(crate) fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    /// How an image's output rows may split between threads ([`for_each_output_rows`]), given
    /// the GEMM's `gemm_muls_per_row` (of a 3x3 kernel, for Winograd): for Winograd, a quarter
    /// (F(4x4, 3x3)) or 1/2.25 (F(2x2, 3x3)) of the multiply-adds, and parts of whole tiles.
    pub(crate) fn row_split(&self, gemm_muls_per_row: usize) -> RowSplit {
        match self.winograd {
            Some((geometry, _)) => {
                let (size, positions) = (geometry.tile.size(), geometry.tile.positions());
                RowSplit {
                    muls_per_row: gemm_muls_per_row * positions / (9 * size * size),
                    step: size,
                }
            }
            None => RowSplit {
                muls_per_row: gemm_muls_per_row,
                step: 1,
            },
        }
    }
}

/// Winograd's transformed filters of one convolution, kept between calls beside the
/// [`Version`] of the weights they were computed from, and recomputed when the weights have
/// another. Every way of changing the weights (an optimiser step, a weight file, a write to
/// [`Conv2d::params`]) gives them a new version, so the filters are never stale, and checking
/// them reads no weights.
#[derive(Clone, Debug, Default)]
pub(crate) struct TransformedFilters {
    /// The version of the weights `filters` were computed from.
    source: Option<Version>,
    filters: AlignedVec,
}

impl TransformedFilters {
    /// The filters of `weight`, `len` values that `transform(weight, filters)` computes, from
    /// the cache when `weight` has the version they were computed from.
    fn get(
        &mut self,
        weight: &ParamVec,
        len: usize,
        transform: impl FnOnce(&[f32], &mut [f32]),
    ) -> &[f32] {
        if self.filters.len() != len || self.source != Some(weight.version()) {
            self.filters.resize(len, 0.0);
            transform(weight, &mut self.filters);
            self.source = Some(weight.version());
        }
        &self.filters
    }

    /// Bytes held by the filters.
    fn bytes(&self) -> usize {
        self.filters.capacity() * size_of::<f32>()
    }
}

/// What a convolution keeps between calls: Winograd's transformed filters for the forward pass
/// and for the input gradient, and the buffers backward reuses (`Wᵀ` and the partial weight
/// gradient of each group of images).
#[derive(Clone, Debug, Default)]
pub struct ConvCache {
    filters: TransformedFilters,
    transposed_filters: TransformedFilters,
    weight_t: AlignedVec,
    partial_weight_grads: AlignedVec,
}

impl ConvCache {
    /// Bytes of Winograd's transformed filters held (forward and input gradient).
    pub fn filter_bytes(&self) -> usize {
        self.filters.bytes() + self.transposed_filters.bytes()
    }
}

/// A 2-D convolution of `I` into `O` with `O::C` filters of `K × K`, stride `STRIDE` and padding
/// `P`, followed by a bias per filter.
///
/// `O`'s rows and columns must be those the convolution produces; a type that says otherwise
/// fails to compile when the layer is built.
///
/// ```
/// use constnet_runtime::layers::{Conv2d, Layer};
/// use constnet_runtime::{Batch, Hwc, init::seeded_rng};
/// let conv = Conv2d::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>::new(&mut seeded_rng(0));
/// let mut output = Batch::default();
/// conv.forward(&Batch::zeros(2), &mut output, &mut Default::default());
/// assert_eq!(output.len(), 2);
/// assert_eq!(<Conv2d<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3> as Layer>::PARAMS, 320);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d<I: Image, O: Image, const K: usize, const STRIDE: usize = 1, P: Padding = Valid> {
    /// `weight`: `[K, K, I::C, O::C]`; `bias`: `[O::C]`.
    pub params: WeightBias,
    shapes: PhantomData<(I, O, P)>,
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding>
    Conv2d<I, O, K, STRIDE, P>
{
    const WEIGHT_DIMS: &'static [usize] = &[K, K, I::C, O::C];
    /// Columns of the patch matrix: one input window.
    const PATCH: usize = K * K * I::C;
    /// Rows of the patch matrix: one per output pixel.
    const PIXELS: usize = O::H * O::W;
    const PADS: constnet_catalogue::Pads = P::PADDING.pads((I::H, I::W), K, STRIDE);
    const PAD_TOP: usize = Self::PADS.top;
    const PAD_LEFT: usize = Self::PADS.left;
    /// Whether any window reaches over the border, which the forward pass then reads from a
    /// padded copy of the image.
    const PADS_INPUT: bool = !P::PADDING.is_none();
    /// Rows and columns of the image with its padding around it, as far as the windows reach
    /// (the forward pass reads its patches from this copy).
    const PADDED: [usize; 2] = if Self::PADS_INPUT {
        [(O::H - 1) * STRIDE + K, (O::W - 1) * STRIDE + K]
    } else {
        [I::H, I::W]
    };

    /// Whether Winograd can compute this convolution (3x3, stride 1).
    const WINOGRAD_APPLIES: bool = K == 3 && STRIDE == 1;
    /// This convolution's shapes for Winograd with `tile`.
    const fn winograd(tile: Tile) -> winograd::Geometry {
        winograd::Geometry {
            in_h: I::H,
            in_w: I::W,
            in_channels: I::C,
            out_h: O::H,
            out_w: O::W,
            filters: O::C,
            pad_top: Self::PAD_TOP,
            pad_left: Self::PAD_LEFT,
            tile,
        }
    }

    /// The tile Winograd runs with: F(2x2, 3x3) where it needs no more element-wise products
    /// than F(4x4, 3x3) (small outputs such as 5x5 and 6x6, which 4x4 tiles overhang), as it
    /// then transforms less and rounds less; F(4x4, 3x3) everywhere else. Measured forward, one
    /// image, one thread: 6x6x64 → 6x6x64 15.3 µs with F(2x2, 3x3) against 19.4, 5x5x32 5.7
    /// against 10.3; 7x7x64 22.7 against 18.2, 9x9x64 37.3 against 35.7. F(4x4, 3x3)'s
    /// accuracy holds at every shape measured: worst error 1.7e-5 of `1 + |value|` (F(2x2,
    /// 3x3): 1.2e-6) from 16 to 16,384 input channels; the kernels' tests bound both.
    const WINOGRAD_TILE: Tile =
        if Tile::F2x2.products(O::H, O::W) <= Tile::F4x4.products(O::H, O::W) {
            Tile::F2x2
        } else {
            Tile::F4x4
        };

    /// The algorithm a pass (forward or backward) over `samples` images runs: Winograd for 3x3
    /// stride-1 convolutions of at least 8 input channels and 32 4x4 output tiles over the
    /// batch, with the tile of `WINOGRAD_TILE`; the GEMM otherwise. The pass's context may force
    /// either, or a tile, where Winograd applies ([`ConvPolicy`]).
    pub fn algorithm(samples: usize) -> ConvAlgorithm {
        if !Self::WINOGRAD_APPLIES {
            return ConvAlgorithm::Gemm;
        }
        let size = Tile::F4x4.size();
        let tiles = O::H.div_ceil(size) * O::W.div_ceil(size);
        let worth_it = I::C >= WINOGRAD_MIN_CHANNELS && samples * tiles >= WINOGRAD_MIN_TILES;
        match context::with_current(|settings| settings.conv) {
            ConvPolicy::Gemm => ConvAlgorithm::Gemm,
            ConvPolicy::Winograd => ConvAlgorithm::Winograd(Self::WINOGRAD_TILE),
            ConvPolicy::Winograd2x2 => ConvAlgorithm::Winograd(Tile::F2x2),
            ConvPolicy::Winograd4x4 => ConvAlgorithm::Winograd(Tile::F4x4),
            ConvPolicy::Auto if worth_it => ConvAlgorithm::Winograd(Self::WINOGRAD_TILE),
            ConvPolicy::Auto => ConvAlgorithm::Gemm,
        }
    }

    /// How an op of this convolution runs it, for the plan table.
    pub const CONV_OP: ConvOp = ConvOp {
        algorithm: Self::algorithm,
        cached_filter_values: Self::cached_filter_values,
    };

    /// Values of Winograd's transformed filters that `cache` keeps after a forward pass over
    /// `samples` images (none for the GEMM).
    pub fn cached_filter_values(samples: usize) -> usize {
        match Self::algorithm(samples) {
            ConvAlgorithm::Gemm => 0,
            ConvAlgorithm::Winograd(tile) => Self::winograd(tile).filter_len(),
        }
    }

    /// `weights` made ready for [`Self::algorithm`] over `samples` images: with Winograd's
    /// transformed filters from `cache`.
    pub(crate) fn prepare<'a>(
        weights: ConvWeights<'a>,
        samples: usize,
        cache: &'a mut ConvCache,
    ) -> PreparedWeights<'a> {
        let ConvAlgorithm::Winograd(tile) = Self::algorithm(samples) else {
            return PreparedWeights {
                weights,
                winograd: None,
            };
        };
        let geometry = Self::winograd(tile);
        let filters =
            cache
                .filters
                .get(weights.weight, geometry.filter_len(), |weight, filters| {
                    winograd::transform_filters(geometry, weight, filters)
                });
        PreparedWeights {
            weights,
            winograd: Some((geometry, filters)),
        }
    }

    /// Evaluated when the layer is built: the declared shapes must be what the convolution makes.
    const SHAPES_AGREE: () = {
        assert!(K > 0, "conv2d: the kernel size must be at least 1");
        assert!(STRIDE > 0, "conv2d: the stride must be at least 1");
        assert!(
            P::PADDING.output((I::H, I::W), K, STRIDE).is_some(),
            "conv2d: the kernel is larger than its input (see the layer's type for both sizes)"
        );
        assert!(
            Self::PADS.largest() < K,
            "conv2d: a pad as large as the kernel makes windows of zeros only"
        );
        assert!(
            window_output_is::<I, O, P>(K, STRIDE),
            "conv2d: the output's rows and columns are not what this kernel, stride and padding \
             make of the input"
        );
    };

    /// A convolution with Glorot-uniform weights and zero biases (Keras's defaults).
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self::with_init(Init::GlorotUniform, rng)
    }

    /// A convolution whose weights are drawn by `init`, with zero biases.
    pub fn with_init<R: Rng + ?Sized>(init: Init, rng: &mut R) -> Self {
        let () = Self::SHAPES_AGREE;
        let mut params = WeightBias::zeros(Self::WEIGHT_DIMS, O::C);
        init.fill(&mut params.weight, K * K * I::C, K * K * O::C, rng);
        Self {
            params,
            shapes: PhantomData,
        }
    }

    /// Walks one patch row per output pixel of `pixels` and calls `visit(column_offset, source,
    /// len)` for each run of it: `column_offset` counts from the patch row of `pixels.start`,
    /// `source` is the run's offset in the image, or `None` where the window hangs over the zero
    /// padding.
    fn for_each_patch_run(
        pixels: Range<usize>,
        mut visit: impl FnMut(usize, Option<usize>, usize),
    ) {
        let row_run = K * I::C;
        let first = pixels.start;
        for pixel in pixels {
            let (oh, ow) = (pixel / O::W, pixel % O::W);
            let patch = (pixel - first) * Self::PATCH;
            let iw0 = (ow * STRIDE) as isize - Self::PAD_LEFT as isize;
            for kh in 0..K {
                let ih = (oh * STRIDE + kh) as isize - Self::PAD_TOP as isize;
                let run = patch + kh * row_run;
                if ih < 0 || ih >= I::H as isize {
                    visit(run, None, row_run);
                } else if iw0 >= 0 && iw0 as usize + K <= I::W {
                    visit(
                        run,
                        Some((ih as usize * I::W + iw0 as usize) * I::C),
                        row_run,
                    );
                } else {
                    for kw in 0..K {
                        let iw = iw0 + kw as isize;
                        let inside = iw >= 0 && iw < I::W as isize;
                        let source = inside.then(|| (ih as usize * I::W + iw as usize) * I::C);
                        visit(run + kw * I::C, source, I::C);
                    }
                }
            }
        }
    }

    /// Copies the patches of output pixels `pixels` of `image` into `patches` (one row of
    /// `PATCH` values per pixel).
    fn im2col(image: &[f32], pixels: Range<usize>, patches: &mut [f32]) {
        if !Self::PADS_INPUT {
            // Every window lies inside the image: `K` runs of a constant `K · C` values per
            // pixel, which the compiler copies inline (a call per run cost more than the copy
            // for one input channel).
            let row_run = K * I::C;
            for (pixel, patch) in pixels.zip(patches.chunks_exact_mut(Self::PATCH)) {
                let (oh, ow) = (pixel / O::W, pixel % O::W);
                for (kh, run) in patch.chunks_exact_mut(row_run).enumerate() {
                    let src = ((oh * STRIDE + kh) * I::W + ow * STRIDE) * I::C;
                    run.copy_from_slice(&image[src..src + row_run]);
                }
            }
            return;
        }
        Self::for_each_patch_run(pixels, |col, source, len| {
            let dst = &mut patches[col..col + len];
            match source {
                Some(src) => dst.copy_from_slice(&image[src..src + len]),
                None => dst.fill(0.0),
            }
        });
    }

    /// `out = activation(conv(image) + b)` (`activation(out + conv(image) + b)` when
    /// `accumulate`: a residual block's input added in the epilogue) with `prepared` weights
    /// (this layer's, or with batch normalisation folded in) for output rows `rows` of one
    /// image, `out` holding exactly those rows. Winograd reads the image as it is; the GEMM
    /// reads the patches straight from the image ([`Patches`]), or with `Same` padding from a
    /// zero-padded copy of it in scratch (a copy of the image, where im2col would copy every
    /// window).
    pub(crate) fn forward_rows(
        prepared: PreparedWeights<'_>,
        image: &[f32],
        rows: Range<usize>,
        out: &mut [f32],
        activation: ActivationKind,
        accumulate: bool,
    ) {
        let weights = prepared.weights;
        let epilogue = Self::epilogue(weights, activation, accumulate);
        if let Some((geometry, filters)) = prepared.winograd {
            return winograd::forward_rows(geometry, filters, image, rows, out, epilogue);
        }
        let pixels = rows.start * O::W..rows.end * O::W;
        let count = pixels.len();
        let product = |image: &[f32], [height, width]: [usize; 2]| {
            gemm_patches(
                MatMut::row_major(out, count, O::C),
                Patches::new(image, [height, width, I::C], K, STRIDE, pixels),
                MatRef::row_major(weights.weight, Self::PATCH, O::C),
                epilogue,
            )
        };
        if !Self::PADS_INPUT {
            return product(image, Self::PADDED);
        }
        let [height, width] = Self::PADDED;
        with_scratch(height * width * I::C, |padded| {
            Self::pad(image, padded);
            product(padded, Self::PADDED);
        });
    }

    /// Rows `rows` of one image's convolution by Winograd, as [`Self::forward_rows`] computes
    /// them, max-pooled 2x2 with stride 2 into `pooled` as each tile is stored
    /// ([`winograd::forward_rows_max_pooled`]: `rows` even at both ends, `activation` the
    /// identity or ReLU).
    ///
    /// # Panics
    /// If `prepared` has no Winograd filters, or as [`winograd::forward_rows_max_pooled`].
    pub(crate) fn forward_rows_max_pooled(
        prepared: PreparedWeights<'_>,
        image: &[f32],
        rows: Range<usize>,
        pooled: &mut [f32],
        activation: ActivationKind,
    ) {
        let (geometry, filters) = prepared
            .winograd
            .expect("the weights were prepared for Winograd");
        let epilogue = Self::epilogue(prepared.weights, activation, false);
        winograd::forward_rows_max_pooled(geometry, filters, image, rows, pooled, epilogue);
    }

    /// The epilogue a convolution's product is stored with: its bias, its folded batch
    /// normalisation's scale if any, then `activation`.
    fn epilogue<'a>(
        weights: ConvWeights<'a>,
        activation: ActivationKind,
        accumulate: bool,
    ) -> Epilogue<'a> {
        Epilogue {
            accumulate,
            scale: weights.scale,
            bias: Some(weights.bias),
            activation,
        }
    }

    /// `image` with the zeros of its padding around it, into `padded` ([`Self::PADDED`]
    /// rows and columns; input rows and columns no window reaches are left out).
    fn pad(image: &[f32], padded: &mut [f32]) {
        let [height, width] = Self::PADDED;
        padded.fill(0.0);
        let columns = I::W.min(width - Self::PAD_LEFT);
        for (y, row) in image
            .chunks_exact(I::W * I::C)
            .enumerate()
            .take(height - Self::PAD_TOP)
        {
            let at = ((y + Self::PAD_TOP) * width + Self::PAD_LEFT) * I::C;
            padded[at..at + columns * I::C].copy_from_slice(&row[..columns * I::C]);
        }
    }

    /// Backward of one group of images: their summed weight gradient into `weight_grad` and,
    /// if asked for, each image's input gradient.
    fn backward_group(
        images: &[f32],
        output_grads: &[f32],
        weight_t: MatRef<'_>,
        weight_grad: &mut [f32],
        mut image_grads: Option<&mut [f32]>,
    ) {
        weight_grad.fill(0.0);
        with_scratch(Self::PIXELS * Self::PATCH, |patches| {
            for (s, (image, dy)) in images
                .chunks(I::LEN)
                .zip(output_grads.chunks(O::LEN))
                .enumerate()
            {
                let dy = MatRef::row_major(dy, Self::PIXELS, O::C);
                Self::im2col(image, 0..Self::PIXELS, patches);
                gemm(
                    MatMut::row_major(weight_grad, Self::PATCH, O::C),
                    MatRef::row_major(patches, Self::PIXELS, Self::PATCH).t(),
                    dy,
                    true,
                );
                if let Some(image_grads) = image_grads.as_deref_mut() {
                    // The patch matrix is no longer needed: reuse it for its gradient.
                    gemm(
                        MatMut::row_major(patches, Self::PIXELS, Self::PATCH),
                        dy,
                        weight_t,
                        false,
                    );
                    Self::col2im(patches, &mut image_grads[s * I::LEN..(s + 1) * I::LEN]);
                }
            }
        });
    }

    /// The filters transformed with their input and output channels swapped, which Winograd's
    /// input gradient reads ([`winograd::InputGradient`]), from `cache` (recomputed when the
    /// weights change).
    fn transposed_filters<'c>(
        geometry: winograd::Geometry,
        weight: &ParamVec,
        cache: &'c mut TransformedFilters,
    ) -> &'c [f32] {
        cache.get(weight, geometry.filter_len(), |weight, u_t| {
            winograd::transform_filters_transposed(geometry, weight, u_t)
        })
    }

    /// Backward of one group of images by Winograd: their summed weight gradient into
    /// `weight_grad` (the transformed filters' gradient summed over the group's tiles, then
    /// turned back into 3x3 filters) and, given the transposed filters `u_t`, each image's
    /// input gradient. `geometry` has the tile the pass runs with.
    fn backward_group_winograd(
        (geometry, u_t): (winograd::Geometry, Option<&[f32]>),
        images: &[f32],
        output_grads: &[f32],
        weight_grad: &mut [f32],
        mut image_grads: Option<&mut [f32]>,
    ) {
        with_scratch(geometry.filter_len(), |transformed| {
            transformed.fill(0.0);
            let pairs = images.chunks(I::LEN).zip(output_grads.chunks(O::LEN));
            for (s, (image, dy)) in pairs.enumerate() {
                let input_gradient =
                    u_t.zip(image_grads.as_deref_mut())
                        .map(|(u_t, dxs)| winograd::InputGradient {
                            u_t,
                            grad_input: &mut dxs[s * I::LEN..(s + 1) * I::LEN],
                        });
                winograd::accumulate_gradients(geometry, image, dy, transformed, input_gradient);
            }
            winograd::filter_gradient(geometry, transformed, weight_grad);
        });
    }

    /// Adds each patch gradient back onto the image position it was copied from.
    fn col2im(patch_grads: &[f32], image_grad: &mut [f32]) {
        image_grad.fill(0.0);
        Self::for_each_patch_run(0..Self::PIXELS, |col, source, len| {
            if let Some(src) = source {
                for (dst, grad) in image_grad[src..src + len]
                    .iter_mut()
                    .zip(&patch_grads[col..col + len])
                {
                    *dst += grad;
                }
            }
        });
    }
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding> Layer
    for Conv2d<I, O, K, STRIDE, P>
{
    type Input = I;
    type Output = O;
    type Grads = WeightBias;
    type Cache = ConvCache;
    const PARAMS: usize = K * K * I::C * O::C + O::C;
    const MULS: usize = Self::PIXELS * Self::PATCH * O::C;
    /// The patch matrix of one image (im2col, in backward), one image's output (which a fused
    /// pooling op keeps in scratch), or one padded image.
    const SCRATCH: usize = max(
        max(Self::PIXELS * Self::PATCH, O::LEN),
        max(
            Self::PADDED[0] * Self::PADDED[1] * I::C,
            if Self::WINOGRAD_APPLIES {
                // The weights with their channels swapped for the input gradient, and one
                // call's tiles with either tile.
                max(
                    K * K * I::C * O::C,
                    max(
                        Self::winograd(Tile::F2x2).scratch_len(),
                        Self::winograd(Tile::F4x4).scratch_len(),
                    ),
                )
            } else {
                0
            },
        ),
    );

    fn kind(&self) -> LayerKind {
        LayerKind::Conv {
            filters: O::C,
            kernel: K,
            stride: STRIDE,
            padding: P::PADDING,
        }
    }

    fn forward(&self, input: &Batch<I>, output: &mut Batch<O>, cache: &mut ConvCache) {
        self.forward_activated(input, output, ActivationKind::Identity, cache);
    }

    fn backward(
        &self,
        input: &Batch<I>,
        _output: &Batch<O>,
        grad_output: &Batch<O>,
        cache: &mut ConvCache,
        grad_input: Option<&mut Batch<I>>,
        grads: &mut WeightBias,
    ) {
        let weight_len = Self::PATCH * O::C;
        let ConvCache {
            transposed_filters,
            weight_t,
            partial_weight_grads,
            ..
        } = cache;
        if let ConvAlgorithm::Winograd(tile) = Self::algorithm(input.len()) {
            let (geometry, weight) = (Self::winograd(tile), &self.params.weight);
            let u_t = grad_input
                .is_some()
                .then(|| Self::transposed_filters(geometry, weight, transposed_filters));
            return grouped_backward(
                input,
                grad_output,
                grad_input,
                partial_weight_grads,
                grads,
                |images, dy, dw, dx| {
                    Self::backward_group_winograd((geometry, u_t), images, dy, dw, dx)
                },
            );
        }
        // `Wᵀ` made contiguous once per call, rather than gathered from the transposed view by
        // each image's GEMM.
        weight_t.resize(weight_len, 0.0);
        MatRef::row_major(&self.params.weight, Self::PATCH, O::C)
            .t()
            .copy_to(weight_t);
        let weight_t = MatRef::row_major(weight_t, O::C, Self::PATCH);
        grouped_backward(
            input,
            grad_output,
            grad_input,
            partial_weight_grads,
            grads,
            |images, dy, dw, dx| Self::backward_group(images, dy, weight_t, dw, dx),
        );
    }

    params_in_field!(params);
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding> Linear
    for Conv2d<I, O, K, STRIDE, P>
{
    fn forward_activated(
        &self,
        input: &Batch<I>,
        output: &mut Batch<O>,
        activation: ActivationKind,
        cache: &mut ConvCache,
    ) {
        let weights = (&self.params).into();
        Self::forward_with(weights, input, output, activation, false, cache);
    }
}

impl<I: Image, O: Image, const K: usize, const STRIDE: usize, P: Padding>
    Conv2d<I, O, K, STRIDE, P>
{
    /// Inference with `weights` (this layer's, or with batch normalisation folded in) and
    /// `activation` in the epilogue; with `accumulate`, added to what `output` holds (which then
    /// must hold `input.len()` samples). Batches of at least one image per thread run one
    /// contiguous group of images per thread; smaller batches split each image's output rows
    /// between the threads (when the image has enough work to gain), so a batch of one uses
    /// every core.
    pub(crate) fn forward_with(
        weights: ConvWeights<'_>,
        input: &Batch<I>,
        output: &mut Batch<O>,
        activation: ActivationKind,
        accumulate: bool,
        cache: &mut ConvCache,
    ) {
        let () = Self::SHAPES_AGREE;
        let prepared = Self::prepare(weights, input.len(), cache);
        let split = prepared.row_split(Self::PATCH * O::W * O::C);
        for_each_output_rows(input, output, split, |image, rows, out| {
            Self::forward_rows(prepared, image, rows, out, activation, accumulate)
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::context::Settings;
    use crate::init::seeded_rng;
    use crate::layers::{Pads, Same};
    use crate::reference::{
        Geometry, assert_close, assert_gradients_close, conv2d_backward, conv2d_forward,
    };
    use crate::shape::Hwc;

    /// Forward, input, weight and bias gradients of one convolution against the reference.
    fn matches_reference<I: Image, O: Image, const K: usize, const S: usize, P: Padding>(
        samples: usize,
    ) {
        let mut rng = seeded_rng(K as u64 * 100 + S as u64);
        let mut conv = Conv2d::<I, O, K, S, P>::new(&mut rng);
        conv.params
            .bias
            .iter_mut()
            .for_each(|b| *b = rng.random_range(-1.0..1.0));
        let x = Batch::<I>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let dy = Batch::<O>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let geometry = Geometry {
            in_h: I::H,
            in_w: I::W,
            in_c: I::C,
            out_c: O::C,
            kernel: K,
            stride: S,
            padding: P::PADDING,
        };
        let what = format!(
            "conv {} -> {} k{K} s{S} padding {}",
            I::describe(),
            O::describe(),
            P::PADDING
        );

        let mut y = Batch::default();
        conv.forward_train(&x, &mut y, &mut ConvCache::default());
        let want = conv2d_forward(
            geometry,
            x.as_slice(),
            &conv.params.weight,
            &conv.params.bias,
            samples,
        );
        assert_close(&format!("{what}: forward"), y.as_slice(), &want, 1e-4);

        let mut dx = Batch::default();
        let mut grads = conv.new_grads();
        conv.backward(
            &x,
            &y,
            &dy,
            &mut ConvCache::default(),
            Some(&mut dx),
            &mut grads,
        );
        assert_gradients_close(
            &what,
            (dx.as_slice(), &grads.weight, &grads.bias),
            conv2d_backward(
                geometry,
                x.as_slice(),
                &conv.params.weight,
                dy.as_slice(),
                samples,
            ),
            1e-4,
        );

        let mut grads_without_input = conv.new_grads();
        conv.backward(
            &x,
            &y,
            &dy,
            &mut ConvCache::default(),
            None,
            &mut grads_without_input,
        );
        assert_eq!(
            grads_without_input, grads,
            "skipping the input gradient changes nothing else"
        );
    }

    #[test]
    fn odd_sizes_strides_and_padding_match_the_reference() {
        matches_reference::<Hwc<5, 7, 3>, Hwc<3, 4, 4>, 3, 2, Same>(3);
        matches_reference::<Hwc<5, 7, 3>, Hwc<3, 5, 4>, 3, 1, Valid>(3);
        matches_reference::<Hwc<5, 7, 3>, Hwc<2, 3, 5>, 3, 2, Valid>(2);
        matches_reference::<Hwc<5, 7, 3>, Hwc<5, 7, 2>, 2, 1, Same>(2);
        matches_reference::<Hwc<6, 6, 1>, Hwc<3, 3, 3>, 4, 2, Same>(2);
        matches_reference::<Hwc<9, 9, 2>, Hwc<9, 9, 17>, 5, 1, Same>(2);
        // Windows that never reach the last input row (a 1x1 kernel, stride 2).
        matches_reference::<Hwc<4, 5, 3>, Hwc<2, 3, 2>, 1, 2, Same>(2);
        // Valid padding at odd shapes.
        matches_reference::<Hwc<9, 8, 8>, Hwc<4, 3, 5>, 3, 2, Valid>(3);
        matches_reference::<Hwc<7, 6, 6>, Hwc<5, 4, 70>, 3, 1, Valid>(1);
        matches_reference::<Hwc<5, 5, 16>, Hwc<2, 2, 3>, 4, 1, Valid>(2);
    }

    #[test]
    fn mnist_shapes_match_the_reference() {
        matches_reference::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3, 1, Valid>(3);
        matches_reference::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3, 1, Valid>(2);
        // Winograd at batches of at least 32 tiles (by default): odd sizes, both paddings.
        matches_reference::<Hwc<10, 9, 12>, Hwc<10, 9, 20>, 3, 1, Same>(4);
        matches_reference::<Hwc<11, 13, 9>, Hwc<9, 11, 7>, 3, 1, Valid>(4);
    }

    #[test]
    fn explicit_pads_match_the_reference() {
        // PyTorch's stride-2 `padding=1`, which `same` does not match on even inputs.
        matches_reference::<Hwc<8, 8, 3>, Hwc<4, 4, 5>, 3, 2, Pads<1, 1, 1, 1>>(2);
        // Asymmetric pads, a stem-like 7x7 kernel, and pads whose last rows no window reads.
        matches_reference::<Hwc<6, 7, 2>, Hwc<6, 5, 4>, 3, 1, Pads<2, 0, 0, 0>>(2);
        matches_reference::<Hwc<9, 9, 3>, Hwc<5, 5, 8>, 7, 2, Pads<3, 3, 3, 3>>(2);
        matches_reference::<Hwc<5, 5, 2>, Hwc<3, 3, 3>, 3, 2, Pads<1, 2, 1, 2>>(2);
        // Winograd (3x3 stride 1, enough channels and tiles) with pads of 1.
        matches_reference::<Hwc<10, 9, 12>, Hwc<10, 9, 20>, 3, 1, Pads<1, 1, 1, 1>>(4);
        matches_reference::<Hwc<10, 9, 12>, Hwc<9, 8, 20>, 3, 1, Pads<1, 0, 0, 1>>(4);
        // All-zero pads behave as `Valid`.
        matches_reference::<Hwc<5, 7, 3>, Hwc<3, 5, 4>, 3, 1, Pads<0, 0, 0, 0>>(2);
    }

    /// The cache recomputes the filters exactly when the weights' version or the filters'
    /// length changed: after any write, even of the same values, and not after a clone.
    #[test]
    fn transformed_filters_follow_the_weights() {
        let mut cache = TransformedFilters::default();
        let mut computed = 0;
        let mut get = |weight: &ParamVec, len: usize| {
            let filters = cache.get(weight, len, |weight, filters| {
                computed += 1;
                filters.fill(weight.iter().sum());
            });
            filters.to_vec()
        };
        let mut weight = ParamVec::from(vec![1.0, 2.0]);
        assert_eq!(get(&weight, 3), [3.0; 3]);
        assert_eq!(get(&weight, 3), [3.0; 3]);
        assert_eq!(get(&weight.clone(), 3), [3.0; 3]);
        weight[1] = 2.5;
        assert_eq!(get(&weight, 3), [3.5; 3]);
        assert_eq!(get(&weight, 4), [3.5; 4]);
        weight.iter_mut().for_each(|value| *value -= 1.0);
        assert_eq!(get(&weight, 4), [1.5; 4]);
        weight[0] = 0.0;
        assert_eq!(get(&weight, 4), [1.5; 4]);
        let other = ParamVec::from(vec![0.0, 1.5]);
        assert_eq!(get(&other, 4), [1.5; 4]);
        assert_eq!(
            computed, 6,
            "recomputed only when the weights' version or the length changed"
        );
    }

    /// The rule of [`Conv2d::algorithm`], unless the default context forces an algorithm.
    #[test]
    fn winograd_runs_where_it_pays() {
        if Settings::current().conv != ConvPolicy::Auto {
            return;
        }
        const F4X4: ConvAlgorithm = ConvAlgorithm::Winograd(Tile::F4x4);
        type Conv2 = Conv2d<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>;
        assert_eq!(Conv2::algorithm(128), F4X4);
        // 36 tiles: enough for one image, whose tile rows split between threads.
        assert_eq!(Conv2::algorithm(1), F4X4);
        // One input channel, a stride, another kernel size, too few tiles.
        let gemm = [
            Conv2d::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>::algorithm(128),
            Conv2d::<Hwc<9, 9, 8>, Hwc<4, 4, 8>, 3, 2>::algorithm(128),
            Conv2d::<Hwc<9, 9, 8>, Hwc<5, 5, 8>, 5>::algorithm(128),
            Conv2d::<Hwc<7, 7, 64>, Hwc<7, 7, 64>, 3, 1, Same>::algorithm(1),
        ];
        assert_eq!(gemm, [ConvAlgorithm::Gemm; 4]);
        // 7x7: four 4x4 tiles (144 products per channel and filter) against sixteen 2x2 (256).
        assert_eq!(
            Conv2d::<Hwc<7, 7, 64>, Hwc<7, 7, 64>, 3, 1, Same>::algorithm(8),
            F4X4
        );
        // F(2x2, 3x3) where it needs no more products: 6x6 (144 each) and 5x5.
        let f2x2 = [
            Conv2d::<Hwc<8, 8, 16>, Hwc<6, 6, 16>, 3>::algorithm(32),
            Conv2d::<Hwc<5, 5, 8>, Hwc<5, 5, 8>, 3, 1, Same>::algorithm(32),
        ];
        assert_eq!(f2x2, [ConvAlgorithm::Winograd(Tile::F2x2); 2]);
    }
}
