//! Winograd's minimal filterings F(4x4, 3x3) and F(2x2, 3x3) (Lavin & Gray 2015): the forward
//! pass and both gradients of a 3x3, stride-1 convolution with 4x or 2.25x fewer
//! multiplications than the direct product. [`Geometry::tile`] says which ([`Tile`]); the text
//! below speaks of F(4x4, 3x3), and F(2x2, 3x3) is the same with 2x2 tiles, 4x4 windows and 16
//! positions.
//!
//! Each 4x4 tile of the output is computed from the 6x6 input window over it:
//! `Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A`, for every filter, with `g_c` the filter's 3x3
//! kernel on input channel `c` and `d_c` the window on that channel. The element-wise products
//! summed over channels are, at each of the 36 positions of the 6x6 transformed tile, one
//! product of a `tiles × in_channels` matrix by an `in_channels × filters` matrix, run by the
//! GEMM. Around it:
//! - the filter transform ([`transform_filters`]) turns HWIO weights into the 36 matrices
//!   `U[in_channel][position][filter]`, once per call of a layer;
//! - the input transform turns each tile's window into `V[tile][position][in_channel]`;
//! - the output transform turns `M[tile][position][filter]` back into the output tile, with the
//!   GEMM's [`Epilogue`] (scale, bias, accumulation, activation) applied as it is stored.
//!
//! The position is the middle index of all three, so each transform reads or writes one
//! contiguous block per tile (or input channel), and each position's product is a GEMM over
//! strided views.
//!
//! The weight gradient follows from `Y = Aᵀ (U ⊙ V) A` and `U = G g Gᵀ`: with `Ŷ = A dY Aᵀ` the
//! output gradient of a tile transformed, the gradient of `U` is `Σ_tiles Ŷ ⊙ V` (at each
//! position a `channels × tiles` by `tiles × filters` product), and that of `g` is `Gᵀ (·) G`
//! ([`filter_gradient`]). The input gradient is the adjoint of the forward pass over the same
//! tiles: `B (Ŷ · Uᵀ) Bᵀ` added onto each tile's input window. One pass over an image's tiles
//! computes both ([`accumulate_gradients`]), transforming its output gradient once.
//!
//! Transforms run over channels (or filters) a vector at a time, through `VectorKernel`, so
//! each compiles for every instruction set; each kernel is written once for both filterings
//! (`TiledKernel`), whose constant transforms live in the `transforms` module. The tests bound the
//! rounding error against the f64 direct convolution.

mod transforms;

use std::ops::Range;

use super::gemm::{Epilogue, MatMut, MatRef, gemm};
use super::simd::{SimdF32, VectorKernel};
use super::{elementwise::ActivationKind, run_vectorized, with_scratch};
use transforms::{F2x2, F4x4, Filtering, transform_2d};

/// Which of Winograd's minimal filterings for 3x3 kernels a convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2x2, 3x3): 2x2 output tiles from 4x4 input windows, 2.25x fewer multiplications than
    /// the direct product; its transforms' constants are 0, ±1 and ±1/2, so it rounds less
    /// than F(4x4, 3x3).
    F2x2,
    /// F(4x4, 3x3): 4x4 output tiles from 6x6 input windows, 4x fewer multiplications.
    F4x4,
}

impl Tile {
    /// Output rows and columns of one tile.
    pub const fn size(self) -> usize {
        match self {
            Tile::F2x2 => 2,
            Tile::F4x4 => 4,
        }
    }

    /// Positions of a transformed tile (its input window's values): one product each.
    pub const fn positions(self) -> usize {
        (self.size() + 2) * (self.size() + 2)
    }

    /// Element-wise products per input channel and filter of an `out_h × out_w` output: its
    /// tiles (the last ones overhanging the edge) times their positions.
    pub const fn products(self, out_h: usize, out_w: usize) -> usize {
        out_h.div_ceil(self.size()) * out_w.div_ceil(self.size()) * self.positions()
    }
}

impl std::fmt::Display for Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Tile::F2x2 => "F(2x2, 3x3)",
            Tile::F4x4 => "F(4x4, 3x3)",
        })
    }
}

/// Most tile positions transformed and multiplied together (unless one band of tiles across the
/// image has more): their transformed inputs and products (`positions · (in_channels +
/// filters)` values) stay in L2 between the three steps. 24 tiles of F(4x4, 3x3), 54 of F(2x2,
/// 3x3).
const POSITIONS_PER_CHUNK: usize = 24 * 36;

/// The shapes of one convolution (3x3, stride 1) as the Winograd kernels see them: an
/// `in_h × in_w × in_channels` image (HWC) whose output is `out_h × out_w × filters`, the
/// window of output pixel `(y, x)` starting at input pixel `(y − pad_top, x − pad_left)`
/// (pixels outside the image read as zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output rows.
    pub out_h: usize,
    /// Output columns.
    pub out_w: usize,
    /// Filters (output channels).
    pub filters: usize,
    /// Zero rows above the image.
    pub pad_top: usize,
    /// Zero columns left of the image.
    pub pad_left: usize,
    /// The filtering.
    pub tile: Tile,
}

impl Geometry {
    /// Values of the transformed filters ([`transform_filters`]).
    pub const fn filter_len(&self) -> usize {
        self.tile.positions() * self.in_channels * self.filters
    }

    /// Values of scratch one [`forward_rows`] or [`accumulate_gradients`] call borrows.
    pub const fn scratch_len(&self) -> usize {
        let tiles = self.bands_per_chunk() * self.tiles_across();
        self.tile.positions() * tiles * (self.in_channels + self.filters)
    }

    /// Tiles across one band of output rows (a tile high).
    const fn tiles_across(&self) -> usize {
        self.out_w.div_ceil(self.tile.size())
    }

    /// Bands of tiles transformed and multiplied together: as many as fit in
    /// [`POSITIONS_PER_CHUNK`] positions, and at least one.
    const fn bands_per_chunk(&self) -> usize {
        let bands = POSITIONS_PER_CHUNK / self.tile.positions() / self.tiles_across();
        if bands > 0 { bands } else { 1 }
    }

    /// Runs `f(tiles, v, other)` for each chunk of the tiles of output rows `rows`, with
    /// scratch for the chunk's transformed inputs `v` (`count × positions × in_channels`
    /// values) and its transformed outputs or output gradients (`count × positions ×
    /// filters`).
    fn for_each_chunk(&self, rows: Range<usize>, mut f: impl FnMut(Tiles, &mut [f32], &mut [f32])) {
        let (across, bands_per_chunk) = (self.tiles_across(), self.bands_per_chunk());
        let (size, positions) = (self.tile.size(), self.tile.positions());
        let bands = rows.len().div_ceil(size);
        with_scratch(self.scratch_len(), |scratch| {
            for first_band in (0..bands).step_by(bands_per_chunk) {
                let count = bands_per_chunk.min(bands - first_band) * across;
                let tiles = Tiles {
                    first_row: rows.start + first_band * size,
                    end_row: rows.end,
                    across,
                    count,
                    size,
                };
                let (v, other) = scratch.split_at_mut(positions * count * self.in_channels);
                f(tiles, v, &mut other[..positions * count * self.filters]);
            }
        });
    }
}

/// Transforms HWIO 3x3 weights (`[3, 3, in_channels, filters]`) into `u`, the 36 matrices (16 for
/// F(2x2, 3x3))
/// `U[in_channel][position][filter]` ([`Geometry::filter_len`] values).
///
/// # Panics
/// If `weight` or `u` do not hold the sizes above.
pub fn transform_filters(geometry: Geometry, weight: &[f32], u: &mut [f32]) {
    assert_eq!(
        weight.len(),
        9 * geometry.in_channels * geometry.filters,
        "3x3 HWIO weights"
    );
    assert_eq!(u.len(), geometry.filter_len(), "transformed filters");
    run_tiled(FilterTransform {
        geometry,
        weight,
        u,
    });
}

/// Transforms HWIO 3x3 weights (`[3, 3, in_channels, filters]`) into `u_t`, the filters with
/// their input and output channels swapped that [`InputGradient`] reads
/// (`Uᵀ[filter][position][in_channel]`, [`Geometry::filter_len`] values). Borrows the weights'
/// length of scratch.
///
/// # Panics
/// If `weight` or `u_t` do not hold the sizes above.
pub fn transform_filters_transposed(geometry: Geometry, weight: &[f32], u_t: &mut [f32]) {
    let (c, f) = (geometry.in_channels, geometry.filters);
    assert_eq!(weight.len(), 9 * c * f, "3x3 HWIO weights");
    let swapped = Geometry {
        in_channels: f,
        filters: c,
        ..geometry
    };
    with_scratch(weight.len(), |swapped_weight| {
        for (tap, out) in weight
            .chunks_exact(c * f)
            .zip(swapped_weight.chunks_exact_mut(c * f))
        {
            MatRef::row_major(tap, c, f).t().copy_to(out);
        }
        transform_filters(swapped, swapped_weight, u_t);
    });
}

/// Output rows `rows` of one image's convolution into `out` (exactly those rows, HWC), from
/// the filters `u` transformed by [`transform_filters`] and with `epilogue` (whose `scale` and
/// `bias` have a value per filter) applied as each value is stored. Borrows
/// [`Geometry::scratch_len`] values of scratch.
///
/// # Panics
/// If the slices do not hold the sizes of `geometry`, or `rows` lies outside the output.
pub fn forward_rows(
    geometry: Geometry,
    u: &[f32],
    image: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
) {
    let g = geometry;
    assert_eq!(out.len(), rows.len() * g.out_w * g.filters, "output rows");
    forward_tiles(g, u, image, rows, out, epilogue, false);
}

/// [`forward_rows`] with 2x2 max pooling of stride 2 applied as each tile is stored: `pooled`
/// receives the pooled rows `rows.start / 2..rows.end / 2` (HWC, `out_w / 2` columns; a last
/// odd column of the convolution is dropped, as the pool drops it), and the convolution's own
/// output is never written. `rows` starts and ends on even rows, so each tile holds whole
/// windows. Equals [`forward_rows`] followed by the pool, bit for bit (the same epilogue, then
/// the pool's maximum taken over each window row by row, a NaN kept). The epilogue may not
/// accumulate, and its activation is the identity or ReLU (the ones the tile applies in
/// registers). Borrows [`Geometry::scratch_len`] values of scratch.
///
/// # Panics
/// If the slices do not hold the sizes above, or `rows` or `epilogue` are not as described.
pub fn forward_rows_max_pooled(
    geometry: Geometry,
    u: &[f32],
    image: &[f32],
    rows: Range<usize>,
    pooled: &mut [f32],
    epilogue: Epilogue<'_>,
) {
    let g = geometry;
    assert!(
        rows.start.is_multiple_of(2) && rows.end.is_multiple_of(2),
        "pooled rows start and end on even rows"
    );
    assert_eq!(
        pooled.len(),
        rows.len() / 2 * (g.out_w / 2 * g.filters),
        "pooled rows"
    );
    assert!(
        !epilogue.accumulate
            && matches!(
                epilogue.activation,
                ActivationKind::Identity | ActivationKind::Relu
            ),
        "a pooled tile applies the identity or ReLU, and does not accumulate"
    );
    forward_tiles(g, u, image, rows, pooled, epilogue, true);
}

/// The body of [`forward_rows`] and [`forward_rows_max_pooled`]: each chunk of tiles of rows
/// `rows` transformed, multiplied and transformed back into `out`, its windows max-pooled when
/// `max_pooled` (a row of `out` then stands for two output rows).
fn forward_tiles(
    g: Geometry,
    u: &[f32],
    image: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
    max_pooled: bool,
) {
    assert_eq!(u.len(), g.filter_len(), "transformed filters");
    assert_eq!(image.len(), g.in_h * g.in_w * g.in_channels, "input image");
    assert!(rows.end <= g.out_h, "rows outside the output");
    for values in [epilogue.scale, epilogue.bias].into_iter().flatten() {
        assert_eq!(values.len(), g.filters, "one scale and bias per filter");
    }
    let (output_rows_per_row, row_len) = if max_pooled {
        (2, g.out_w / 2 * g.filters)
    } else {
        (1, g.out_w * g.filters)
    };
    let first_row = rows.start;
    g.for_each_chunk(rows, |tiles, v, m| {
        run_tiled(InputTransform { g, image, tiles, v });
        multiply_positions(
            g.tile.positions(),
            (g.in_channels, g.filters),
            u,
            v,
            m,
            tiles.count,
        );
        let out = &mut out[(tiles.first_row - first_row) / output_rows_per_row * row_len..];
        run_tiled(OutputTransform {
            g,
            m,
            tiles,
            out,
            epilogue,
            max_pooled,
        });
    });
}

/// Where [`accumulate_gradients`] writes an image's input gradient, and the filters it reads.
#[derive(Debug)]
pub struct InputGradient<'a> {
    /// The filters transformed with their input and output channels swapped
    /// ([`transform_filters_transposed`]).
    pub u_t: &'a [f32],
    /// The image's input gradient (HWC), overwritten.
    pub grad_input: &'a mut [f32],
}

/// One image's share of the gradients of [`forward_rows`]' convolution, from the image and the
/// gradient of its output, which is transformed once for both (`Ŷ = A dY Aᵀ` per tile):
/// - adds `Σ_tiles Ŷ ⊙ (Bᵀ d B)` to `m`, the gradient of the transformed filters (laid out as
///   [`transform_filters`]' `U`, [`Geometry::filter_len`] values; see [`filter_gradient`]);
/// - with `input_gradient`, writes the image's input gradient as the adjoint of the forward
///   pass: `B (Ŷ · Uᵀ) Bᵀ` for each tile, added onto its input window (windows overlap by
///   two rows and columns; the parts over the padding are dropped). It multiplies over the
///   forward pass's tiles, where computing the input gradient as a convolution of the output
///   gradient would tile the larger, padded input.
///
/// Borrows [`Geometry::scratch_len`] values of scratch.
///
/// # Panics
/// If the slices do not hold the sizes of `geometry`.
pub fn accumulate_gradients(
    geometry: Geometry,
    image: &[f32],
    grad_output: &[f32],
    m: &mut [f32],
    mut input_gradient: Option<InputGradient<'_>>,
) {
    let g = geometry;
    let in_len = g.in_h * g.in_w * g.in_channels;
    assert_eq!(image.len(), in_len, "input image");
    let out_len = g.out_h * g.out_w * g.filters;
    assert_eq!(grad_output.len(), out_len, "output gradient");
    assert_eq!(m.len(), g.filter_len(), "transformed filters' gradient");
    if let Some(InputGradient { u_t, grad_input }) = input_gradient.as_mut() {
        assert_eq!(u_t.len(), g.filter_len(), "transformed filters");
        assert_eq!(grad_input.len(), in_len, "input gradient");
        grad_input.fill(0.0);
    }
    let (c, f) = (g.in_channels, g.filters);
    g.for_each_chunk(0..g.out_h, |tiles, v, y| {
        run_tiled(InputTransform { g, image, tiles, v });
        run_tiled(OutputGradientTransform {
            g,
            grad_output,
            tiles,
            y,
        });
        let positions = g.tile.positions();
        for p in 0..positions {
            gemm(
                MatMut::strided(&mut m[p * f..], c, f, positions * f),
                MatRef::strided(&v[p * c..], c, tiles.count, 1, positions * c),
                MatRef::strided(&y[p * f..], tiles.count, f, positions * f, 1),
                true,
            );
        }
        let Some(InputGradient { u_t, grad_input }) = input_gradient.as_mut() else {
            return;
        };
        // The transformed inputs are spent: their scratch takes the gradient of them, the
        // forward product with the channels and filters swapped.
        multiply_positions(g.tile.positions(), (f, c), u_t, y, v, tiles.count);
        run_tiled(InputGradientTransform {
            g,
            v,
            tiles,
            grad_input,
        });
    });
}

/// The gradient of the 3x3 HWIO weights (`[3, 3, in_channels, filters]`) from that of the
/// transformed filters `m` ([`accumulate_gradients`]): `Gᵀ m G`, written to
/// `weight_grad`.
///
/// # Panics
/// If the slices do not hold the sizes of `geometry`.
pub fn filter_gradient(geometry: Geometry, m: &[f32], weight_grad: &mut [f32]) {
    assert_eq!(
        m.len(),
        geometry.filter_len(),
        "transformed filters' gradient"
    );
    let weights = 9 * geometry.in_channels * geometry.filters;
    assert_eq!(weight_grad.len(), weights, "3x3 HWIO weights");
    run_tiled(FilterGradientTransform {
        geometry,
        m,
        weight_grad,
    });
}

/// The tiles of a chunk: `count` tiles of `size x size` outputs, `across` to a band of `size`
/// rows, the first band's top output row `first_row`; rows from `end_row` on are not computed.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    first_row: usize,
    end_row: usize,
    across: usize,
    count: usize,
    size: usize,
}

impl Tiles {
    /// The top-left output pixel of tile `t`, and how many of its rows and columns lie inside
    /// the output (`out_w` columns, rows up to `end_row`).
    fn place(&self, t: usize, out_w: usize) -> ((usize, usize), usize, usize) {
        let (y0, x0) = (
            self.first_row + t / self.across * self.size,
            t % self.across * self.size,
        );
        let size = self.size;
        ((y0, x0), size.min(self.end_row - y0), size.min(out_w - x0))
    }
}

/// `M[.., p, ..] = V[.., p, ..] · U[.., p, ..]` for each of a tile's `positions` `p`.
fn multiply_positions(
    positions: usize,
    (c, f): (usize, usize),
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    tiles: usize,
) {
    for p in 0..positions {
        gemm(
            MatMut::strided(&mut m[p * f..], tiles, f, positions * f),
            MatRef::strided(&v[p * c..], tiles, c, positions * c, 1),
            MatRef::strided(&u[p * f..], c, f, positions * f, 1),
            false,
        );
    }
}

/// Stores the maximum of each of a tile's 2x2 `windows` (rows, columns of them), after ReLU
/// when `relu`, as `len` values at `dst`, windows `row_len` apart down and `filters` across:
/// each window's values taken row by row, a NaN kept, as max pooling takes them.
///
/// # Safety
/// `dst` must be valid for those writes; the CPU must support `S`.
#[inline(always)]
unsafe fn store_max_pooled<S: SimdF32, const TILE: usize>(
    tile: &[[S; TILE]; TILE],
    (window_rows, window_columns): (usize, usize),
    relu: bool,
    dst: *mut f32,
    row_len: usize,
    filters: usize,
    len: usize,
) {
    // Plain loops, no closures: see `kernels::simd` on what stands between a target-feature
    // entry point and its vector code.
    for (pi, tile_rows) in tile.chunks_exact(2).enumerate().take(window_rows) {
        for pj in 0..window_columns {
            // SAFETY: the caller's instruction set supports `S`, and `dst` covers the window.
            unsafe {
                let mut max = S::splat(f32::NEG_INFINITY);
                for row in tile_rows {
                    for &value in &row[2 * pj..2 * pj + 2] {
                        max = max.max_keep_nan(if relu { value.relu() } else { value });
                    }
                }
                store_part(max, dst.add(pi * row_len + pj * filters), len);
            }
        }
    }
}

/// A Winograd kernel written once for both filterings, run by [`run_tiled`] with the
/// transforms of its geometry's [`Tile`].
trait TiledKernel {
    /// The filtering the kernel runs.
    fn tile(&self) -> Tile;

    /// Runs the kernel with vectors `S` and the transforms `F` of tiles of `TILE` outputs from
    /// windows of `WINDOW` inputs. `#[inline(always)]` with no closure around vector work, as
    /// [`VectorKernel::run`].
    ///
    /// # Safety
    /// The CPU must support `S`'s instruction set.
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>;
}

/// A [`TiledKernel`] as the [`VectorKernel`] of its filtering.
struct Tiled<K>(K);

impl<K: TiledKernel> VectorKernel for Tiled<K> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        // SAFETY: the caller's instruction set supports `S`.
        unsafe {
            match self.0.tile() {
                Tile::F2x2 => self.0.run_tiled::<S, 2, 4, F2x2>(),
                Tile::F4x4 => self.0.run_tiled::<S, 4, 6, F4x4>(),
            }
        }
    }
}

/// Runs `kernel` on the active instruction-set path with its filtering's transforms.
fn run_tiled(kernel: impl TiledKernel) {
    run_vectorized(Tiled(kernel))
}

/// Loads `len` values (at most `S::LANES`) from `src`, the lanes past them zero.
///
/// # Safety
/// `src` must be valid for `len` reads; the CPU must support `S`.
#[inline(always)]
unsafe fn load_part<S: SimdF32>(src: *const f32, len: usize) -> S {
    unsafe {
        if len == S::LANES {
            return S::load(src);
        }
        let mut lanes = [0.0f32; 16];
        std::ptr::copy_nonoverlapping(src, lanes.as_mut_ptr(), len);
        S::load(lanes.as_ptr())
    }
}

/// Stores the first `len` lanes (at most `S::LANES`) of `x` to `dst`.
///
/// # Safety
/// `dst` must be valid for `len` writes; the CPU must support `S`.
#[inline(always)]
unsafe fn store_part<S: SimdF32>(x: S, dst: *mut f32, len: usize) {
    unsafe {
        if len == S::LANES {
            return x.store(dst);
        }
        let mut lanes = [0.0f32; 16];
        x.store(lanes.as_mut_ptr());
        std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, len);
    }
}

/// Loads an `N × N` block whose element `(i, j)` is `len` values at `base + (i·N + j)·stride`
/// (one tile's or filter's positions, or a filter's 9 taps).
///
/// # Safety
/// Every element must be readable; the CPU must support `S`.
#[inline(always)]
unsafe fn load_block<S: SimdF32, const N: usize>(
    base: *const f32,
    stride: usize,
    len: usize,
) -> [[S; N]; N] {
    unsafe {
        let mut block = [[S::zero(); N]; N];
        for (i, row) in block.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = load_part(base.add((i * N + j) * stride), len);
            }
        }
        block
    }
}

/// Stores an `N × N` block as [`load_block`] reads one.
///
/// # Safety
/// Every element must be writable; the CPU must support `S`.
#[inline(always)]
unsafe fn store_block<S: SimdF32, const N: usize>(
    block: [[S; N]; N],
    base: *mut f32,
    stride: usize,
    len: usize,
) {
    unsafe {
        for (i, row) in block.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                store_part(x, base.add((i * N + j) * stride), len);
            }
        }
    }
}

/// Runs `f(start, len)` over `count` values a vector of `lanes` at a time, the last run short.
#[inline(always)]
fn for_each_vector(count: usize, lanes: usize, mut f: impl FnMut(usize, usize)) {
    let mut start = 0;
    while start < count {
        f(start, lanes.min(count - start));
        start += lanes;
    }
}

/// The kernel of [`transform_filters`]: `U = G g Gᵀ` for each input channel, a vector of
/// filters at a time.
struct FilterTransform<'a> {
    geometry: Geometry,
    weight: &'a [f32],
    u: &'a mut [f32],
}

impl TiledKernel for FilterTransform<'_> {
    fn tile(&self) -> Tile {
        self.geometry.tile
    }

    #[inline(always)]
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>,
    {
        const {
            assert!(
                S::LANES <= 16,
                "partial vectors go through 16-value buffers"
            )
        };
        let Self {
            geometry,
            weight,
            u,
        } = self;
        let (channels, filters) = (geometry.in_channels, geometry.filters);
        for c in 0..channels {
            for_each_vector(filters, S::LANES, |f, len| {
                // SAFETY: `transform_filters` checked the lengths: the 9 taps lie inside
                // `weight` (3x3 HWIO), the positions inside `u` (`channels × positions × filters`).
                unsafe {
                    let taps = weight.as_ptr().add(c * filters + f);
                    let g = load_block::<S, 3>(taps, channels * filters, len);
                    let at = u.as_mut_ptr().add(c * WINDOW * WINDOW * filters + f);
                    store_block(transform_2d::<S, F::G, 3, WINDOW>(g), at, filters, len);
                }
            });
        }
    }
}

/// The input transform of a chunk: `V = Bᵀ d B` for each tile, a vector of channels at a time.
struct InputTransform<'a> {
    g: Geometry,
    image: &'a [f32],
    tiles: Tiles,
    v: &'a mut [f32],
}

impl TiledKernel for InputTransform<'_> {
    fn tile(&self) -> Tile {
        self.g.tile
    }

    #[inline(always)]
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>,
    {
        let Self { g, image, tiles, v } = self;
        let channels = g.in_channels;
        for t in 0..tiles.count {
            let ((y0, x0), _, _) = tiles.place(t, g.out_w);
            // The window's input rows and columns, `None` outside the image (zero padding),
            // checked apart: a helper giving each pixel's offset as an `Option` kept the
            // block out of registers (4x slower).
            let row = |i: usize| (y0 + i).checked_sub(g.pad_top).filter(|&y| y < g.in_h);
            let column = |j: usize| (x0 + j).checked_sub(g.pad_left).filter(|&x| x < g.in_w);
            for_each_vector(channels, S::LANES, |c, len| {
                // SAFETY: `forward_rows` checked the image's length; reads stay inside it (rows
                // and columns are checked above), writes inside `v` (`count × positions ×
                // channels`).
                unsafe {
                    let mut d = [[S::zero(); WINDOW]; WINDOW];
                    for (i, d_row) in d.iter_mut().enumerate() {
                        let Some(y) = row(i) else { continue };
                        for (j, d) in d_row.iter_mut().enumerate() {
                            if let Some(x) = column(j) {
                                let at = (y * g.in_w + x) * channels + c;
                                *d = load_part(image.as_ptr().add(at), len);
                            }
                        }
                    }
                    let at = v.as_mut_ptr().add(t * WINDOW * WINDOW * channels + c);
                    store_block(
                        transform_2d::<S, F::Bt, WINDOW, WINDOW>(d),
                        at,
                        channels,
                        len,
                    );
                }
            });
        }
    }
}

/// The input-gradient transform of a chunk: `B dV Bᵀ` for each tile, a vector of channels at a
/// time, added onto the tile's input window (the adjoint of [`InputTransform`]).
struct InputGradientTransform<'a> {
    g: Geometry,
    v: &'a [f32],
    tiles: Tiles,
    grad_input: &'a mut [f32],
}

impl TiledKernel for InputGradientTransform<'_> {
    fn tile(&self) -> Tile {
        self.g.tile
    }

    #[inline(always)]
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>,
    {
        let Self {
            g,
            v,
            tiles,
            grad_input,
        } = self;
        let channels = g.in_channels;
        for t in 0..tiles.count {
            let ((y0, x0), _, _) = tiles.place(t, g.out_w);
            // The window's input rows and columns, `None` outside the image (zero padding).
            let row = |i: usize| (y0 + i).checked_sub(g.pad_top).filter(|&y| y < g.in_h);
            let column = |j: usize| (x0 + j).checked_sub(g.pad_left).filter(|&x| x < g.in_w);
            for_each_vector(channels, S::LANES, |c, len| {
                // SAFETY: `accumulate_gradients` checked the lengths; reads stay inside `v`
                // (`count × positions × channels`), writes inside the input gradient (rows and
                // columns are checked above).
                unsafe {
                    let at = v.as_ptr().add(t * WINDOW * WINDOW * channels + c);
                    let block = load_block::<S, WINDOW>(at, channels, len);
                    let d = transform_2d::<S, F::B, WINDOW, WINDOW>(block);
                    for (i, d_row) in d.iter().enumerate() {
                        let Some(y) = row(i) else { continue };
                        for (j, &d) in d_row.iter().enumerate() {
                            if let Some(x) = column(j) {
                                let dst =
                                    grad_input.as_mut_ptr().add((y * g.in_w + x) * channels + c);
                                store_part(load_part::<S>(dst, len).add(d), dst, len);
                            }
                        }
                    }
                }
            });
        }
    }
}

/// The output-gradient transform of a chunk: `Ŷ = A dY Aᵀ` for each tile, a vector of filters
/// at a time; the tile's pixels outside the output count as zero.
struct OutputGradientTransform<'a> {
    g: Geometry,
    grad_output: &'a [f32],
    tiles: Tiles,
    y: &'a mut [f32],
}

impl TiledKernel for OutputGradientTransform<'_> {
    fn tile(&self) -> Tile {
        self.g.tile
    }

    #[inline(always)]
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>,
    {
        let Self {
            g,
            grad_output,
            tiles,
            y,
        } = self;
        let filters = g.filters;
        for t in 0..tiles.count {
            let ((y0, x0), rows, columns) = tiles.place(t, g.out_w);
            for_each_vector(filters, S::LANES, |f, len| {
                // SAFETY: `accumulate_gradients` checked the lengths; reads stay inside
                // the output gradient (rows below `end_row`, columns below `out_w`), writes
                // inside `y` (`count × positions × filters`).
                unsafe {
                    let mut dy = [[S::zero(); TILE]; TILE];
                    for (i, dy_row) in dy.iter_mut().enumerate().take(rows) {
                        for (j, dy) in dy_row.iter_mut().enumerate().take(columns) {
                            let at = ((y0 + i) * g.out_w + x0 + j) * filters + f;
                            *dy = load_part(grad_output.as_ptr().add(at), len);
                        }
                    }
                    let at = y.as_mut_ptr().add(t * WINDOW * WINDOW * filters + f);
                    store_block(transform_2d::<S, F::A, TILE, WINDOW>(dy), at, filters, len);
                }
            });
        }
    }
}

/// The kernel of [`filter_gradient`]: `Gᵀ m G` for each input channel, a vector of filters at
/// a time.
struct FilterGradientTransform<'a> {
    geometry: Geometry,
    m: &'a [f32],
    weight_grad: &'a mut [f32],
}

impl TiledKernel for FilterGradientTransform<'_> {
    fn tile(&self) -> Tile {
        self.geometry.tile
    }

    #[inline(always)]
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>,
    {
        let Self {
            geometry,
            m,
            weight_grad,
        } = self;
        let (channels, filters) = (geometry.in_channels, geometry.filters);
        for c in 0..channels {
            for_each_vector(filters, S::LANES, |f, len| {
                // SAFETY: `filter_gradient` checked the lengths: the positions lie inside `m`
                // (`channels × positions × filters`), the 9 taps inside `weight_grad` (3x3
                // HWIO).
                unsafe {
                    let at = m.as_ptr().add(c * WINDOW * WINDOW * filters + f);
                    let block = load_block::<S, WINDOW>(at, filters, len);
                    let taps = weight_grad.as_mut_ptr().add(c * filters + f);
                    let gradient = transform_2d::<S, F::Gt, WINDOW, 3>(block);
                    store_block(gradient, taps, channels * filters, len);
                }
            });
        }
    }
}

/// The output transform of a chunk: `Y = Aᵀ m A` for each tile, a vector of filters at a time,
/// stored with the epilogue. `out` starts at the chunk's first output row.
struct OutputTransform<'a> {
    g: Geometry,
    m: &'a [f32],
    tiles: Tiles,
    out: &'a mut [f32],
    epilogue: Epilogue<'a>,
    /// Whether `out` receives each tile's 2x2 windows max-pooled ([`forward_rows_max_pooled`])
    /// rather than the tile itself.
    max_pooled: bool,
}

impl TiledKernel for OutputTransform<'_> {
    fn tile(&self) -> Tile {
        self.g.tile
    }

    #[inline(always)]
    unsafe fn run_tiled<S, const TILE: usize, const WINDOW: usize, F>(self)
    where
        S: SimdF32,
        F: Filtering<TILE, WINDOW>,
    {
        let Self {
            g,
            m,
            tiles,
            out,
            epilogue,
            max_pooled,
        } = self;
        let filters = g.filters;
        let relu_in_register = epilogue.activation == ActivationKind::Relu;
        for t in 0..tiles.count {
            let ((y0, x0), rows, columns) = tiles.place(t, g.out_w);
            for_each_vector(filters, S::LANES, |f, len| {
                // SAFETY: reads stay inside `m` (`count × positions × filters`), the scale and bias
                // hold a value per filter (checked by `forward_tiles`), and writes go to rows
                // `y0..y0 + rows` (below `end_row`) and columns below `out_w` of the chunk's
                // output, or, pooled, to the windows that lie wholly inside those rows and
                // columns (`forward_rows_max_pooled` checked that `out` holds them).
                unsafe {
                    let at = m.as_ptr().add(t * WINDOW * WINDOW * filters + f);
                    let block = load_block::<S, WINDOW>(at, filters, len);
                    let mut y = transform_2d::<S, F::At, WINDOW, TILE>(block);
                    let scale = epilogue
                        .scale
                        .map(|s| load_part::<S>(s.as_ptr().add(f), len));
                    let bias = epilogue
                        .bias
                        .map(|b| load_part::<S>(b.as_ptr().add(f), len));
                    for value in y.iter_mut().flatten() {
                        if let Some(scale) = scale {
                            *value = value.mul(scale);
                        }
                        if let Some(bias) = bias {
                            *value = value.add(bias);
                        }
                    }
                    if max_pooled {
                        let row_len = g.out_w / 2 * filters;
                        let first = (y0 - tiles.first_row) / 2 * row_len + x0 / 2 * filters + f;
                        let windows = (rows / 2, columns / 2);
                        let dst = out.as_mut_ptr().add(first);
                        store_max_pooled(&y, windows, relu_in_register, dst, row_len, filters, len);
                        return;
                    }
                    for (i, y_row) in y.iter().enumerate().take(rows) {
                        let row = (y0 - tiles.first_row + i) * g.out_w;
                        for (j, &y) in y_row.iter().enumerate().take(columns) {
                            let dst = out.as_mut_ptr().add((row + x0 + j) * filters + f);
                            let mut value = y;
                            if epilogue.accumulate {
                                value = value.add(load_part(dst, len));
                            }
                            if relu_in_register {
                                value = value.relu();
                            }
                            store_part(value, dst, len);
                        }
                    }
                }
            });
        }
        if !matches!(
            epilogue.activation,
            ActivationKind::Identity | ActivationKind::Relu
        ) {
            let last_row = tiles
                .end_row
                .min(tiles.first_row + tiles.count / tiles.across * TILE);
            let len = (last_row - tiles.first_row) * g.out_w * filters;
            for value in &mut out[..len] {
                *value = epilogue.activation.apply(*value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;
    use crate::reference;

    /// Both filterings, each with the worst error it may make, relative to `1 + |value|` of the
    /// f64 direct convolution, on inputs in [-1, 1) and Glorot-uniform weights.
    const TILES: [(Tile, f32); 2] = [(Tile::F2x2, 3e-6), (Tile::F4x4, 5e-5)];

    /// A convolution of `in_h × in_w × in_channels` into `filters` filters, `same` or valid,
    /// with `tile`.
    fn geometries(
        [in_h, in_w, in_channels]: [usize; 3],
        filters: usize,
        same: bool,
        tile: Tile,
    ) -> (Geometry, reference::Geometry) {
        let reference = reference::Geometry {
            in_h,
            in_w,
            in_c: in_channels,
            out_c: filters,
            kernel: 3,
            stride: 1,
            padding: if same {
                crate::catalogue::Padding::Same
            } else {
                crate::catalogue::Padding::Valid
            },
        };
        let pad = usize::from(same);
        let geometry = Geometry {
            in_h,
            in_w,
            in_channels,
            out_h: reference.out_h(),
            out_w: reference.out_w(),
            filters,
            pad_top: pad,
            pad_left: pad,
            tile,
        };
        (geometry, reference)
    }

    fn random(len: usize, scale: f32, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-scale..scale)).collect()
    }

    /// 3x3 weights drawn as a layer initialises them (Glorot uniform).
    fn glorot(g: Geometry, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        let limit = (6.0 / (9 * (g.in_channels + g.filters)) as f32).sqrt();
        random(9 * g.in_channels * g.filters, limit, rng)
    }

    /// The worst `|got − want| / (1 + |want|)`.
    fn worst_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f32::max)
    }

    /// Every row range of the output (whole, one row, bands starting mid-tile, the last rows
    /// alone), at sizes whose rows, columns, channels and filters are not multiples of the
    /// tile or the vector, with and without padding, and at the MNIST networks' shapes, against
    /// the f64 direct convolution.
    #[test]
    fn matches_the_direct_convolution() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let cases = [
            ([9, 11, 8], 5, false),
            ([10, 10, 16], 20, true),
            ([5, 5, 3], 17, true),
            ([3, 3, 1], 1, false),
            ([6, 13, 33], 40, true),
            ([3, 120, 2], 3, false),
            ([26, 26, 32], 64, false),
            ([14, 14, 32], 32, true),
            ([7, 7, 64], 64, true),
        ];
        for (tile, tolerance) in TILES {
            let mut worst: f32 = 0.0;
            for (input, filters, same) in cases {
                let (g, reference) = geometries(input, filters, same, tile);
                let image = random(g.in_h * g.in_w * g.in_channels, 1.0, &mut rng);
                let weight = glorot(g, &mut rng);
                let bias = random(filters, 0.5, &mut rng);
                let want = reference::conv2d_forward(reference, &image, &weight, &bias, 1);
                let mut u = vec![0.0; g.filter_len()];
                transform_filters(g, &weight, &mut u);
                let row_len = g.out_w * filters;
                let ranges = [
                    0..g.out_h,
                    0..1,
                    g.out_h / 2..g.out_h,
                    1..g.out_h.max(2) - 1,
                    g.out_h - 1..g.out_h,
                ];
                for rows in ranges {
                    let mut got = vec![f32::NAN; rows.len() * row_len];
                    let epilogue = Epilogue {
                        bias: Some(&bias),
                        ..Epilogue::default()
                    };
                    forward_rows(g, &u, &image, rows.clone(), &mut got, epilogue);
                    let want = &want[rows.start * row_len..rows.end * row_len];
                    let error = worst_error(&got, want);
                    assert!(error <= tolerance, "{g:?}, rows {rows:?}: error {error}");
                    worst = worst.max(error);
                }
            }
            println!("worst relative error of {tile}: {worst:e}");
        }
    }

    /// The epilogue as the GEMM's: `activation(old + scale · product + bias)`, each part on its
    /// own and together.
    #[test]
    fn applies_the_epilogue() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
        for (tile, tolerance) in TILES {
            let (g, reference) = geometries([9, 7, 10], 19, true, tile);
            let image = random(g.in_h * g.in_w * g.in_channels, 1.0, &mut rng);
            let weight = glorot(g, &mut rng);
            let (scale, bias) = (
                random(g.filters, 2.0, &mut rng),
                random(g.filters, 1.0, &mut rng),
            );
            let zeros = vec![0.0; g.filters];
            let product = reference::conv2d_forward(reference, &image, &weight, &zeros, 1);
            let mut u = vec![0.0; g.filter_len()];
            transform_filters(g, &weight, &mut u);
            let activations = [
                ActivationKind::Identity,
                ActivationKind::Relu,
                ActivationKind::LeakyRelu(0.1),
                ActivationKind::Tanh,
            ];
            for activation in activations {
                for accumulate in [false, true] {
                    let old = random(product.len(), 1.0, &mut rng);
                    let want: Vec<f32> = product
                        .iter()
                        .zip(&old)
                        .enumerate()
                        .map(|(at, (&p, &old))| {
                            let f = at % g.filters;
                            let old = if accumulate { old } else { 0.0 };
                            activation.apply(old + p * scale[f] + bias[f])
                        })
                        .collect();
                    let mut got = old.clone();
                    let epilogue = Epilogue {
                        accumulate,
                        scale: Some(&scale),
                        bias: Some(&bias),
                        activation,
                    };
                    forward_rows(g, &u, &image, 0..g.out_h, &mut got, epilogue);
                    let error = worst_error(&got, &want);
                    assert!(
                        error <= tolerance,
                        "{tile}, {activation:?}, accumulate {accumulate}: error {error}"
                    );
                }
            }
        }
    }

    /// The input gradient with partial tiles, both paddings and channel and filter counts off
    /// the vector width, against the f64 reference; computing it beside the weight gradient
    /// leaves that bit for bit the same.
    #[test]
    fn input_gradient_matches_the_reference() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
        let cases = [
            ([9, 11, 8], 5, false),
            ([10, 10, 16], 20, true),
            ([5, 5, 3], 17, true),
            ([3, 3, 1], 1, false),
            ([6, 13, 33], 40, true),
            ([14, 14, 32], 32, true),
            ([26, 26, 32], 64, false),
        ];
        for (tile, tolerance) in TILES {
            let mut worst: f32 = 0.0;
            for (input, filters, same) in cases {
                let (g, reference) = geometries(input, filters, same, tile);
                let x = random(g.in_h * g.in_w * g.in_channels, 1.0, &mut rng);
                let dy = random(g.out_h * g.out_w * filters, 1.0, &mut rng);
                let weight = glorot(g, &mut rng);
                let (want, _, _) = reference::conv2d_backward(reference, &x, &weight, &dy, 1);
                let mut u_t = vec![0.0; g.filter_len()];
                transform_filters_transposed(g, &weight, &mut u_t);
                let mut got = vec![f32::NAN; x.len()];
                let (mut m_both, mut m_alone) =
                    (vec![0.0; g.filter_len()], vec![0.0; g.filter_len()]);
                let input_gradient = InputGradient {
                    u_t: &u_t,
                    grad_input: &mut got,
                };
                accumulate_gradients(g, &x, &dy, &mut m_both, Some(input_gradient));
                accumulate_gradients(g, &x, &dy, &mut m_alone, None);
                assert_eq!(
                    m_both, m_alone,
                    "{g:?}: the input gradient moved the weights'"
                );
                let error = worst_error(&got, &want);
                assert!(error <= tolerance, "{g:?}: error {error}");
                worst = worst.max(error);
            }
            println!("worst relative error of the {tile} input gradient: {worst:e}");
        }
    }

    /// The weight gradient summed over images with partial tiles, both paddings and channel
    /// and filter counts off the vector width, against the f64 reference.
    #[test]
    fn weight_gradient_matches_the_reference() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let cases = [
            ([9, 11, 8], 5, false, 2),
            ([10, 10, 16], 20, true, 3),
            ([5, 5, 3], 17, true, 1),
            ([14, 14, 32], 32, true, 2),
            ([26, 26, 32], 64, false, 2),
        ];
        for (tile, tolerance) in TILES {
            let mut worst: f32 = 0.0;
            for (input, filters, same, images) in cases {
                let (g, reference) = geometries(input, filters, same, tile);
                let (in_len, out_len) =
                    (g.in_h * g.in_w * g.in_channels, g.out_h * g.out_w * filters);
                let x = random(images * in_len, 1.0, &mut rng);
                let dy = random(images * out_len, 1.0, &mut rng);
                let weight = glorot(g, &mut rng);
                let (_, want, _) = reference::conv2d_backward(reference, &x, &weight, &dy, images);
                let mut m = vec![0.0; g.filter_len()];
                for (x, dy) in x.chunks(in_len).zip(dy.chunks(out_len)) {
                    accumulate_gradients(g, x, dy, &mut m, None);
                }
                let mut got = vec![f32::NAN; weight.len()];
                filter_gradient(g, &m, &mut got);
                // The weight gradient sums over every pixel: compare relative to its scale.
                let scale = want.iter().fold(1.0f32, |a, w| a.max(w.abs()));
                let error = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / scale)
                    .fold(0.0, f32::max);
                assert!(error <= tolerance, "{g:?}: error {error}");
                worst = worst.max(error);
            }
            println!(
                "worst error of the {tile} weight gradient, relative to its largest: {worst:e}"
            );
        }
    }
}
