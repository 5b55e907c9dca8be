//! Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2015), the forward pass of a 3x3,
//! stride-1 convolution with 4x fewer multiplications than the direct product.
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
//! Transforms run over channels (or filters) a vector at a time, through `VectorKernel`, so
//! each compiles for every instruction set. The interpolation points are 0, ±1, ±2 and ∞, the
//! choice that keeps F(4x4, 3x3)'s rounding error smallest; the tests bound it against the f64
//! direct convolution.

use std::ops::Range;

use super::gemm::{Epilogue, MatMut, MatRef, gemm};
use super::simd::{SimdF32, VectorKernel};
use super::{elementwise::ActivationKind, run_vectorized, with_scratch};

/// Output rows and columns of one tile.
pub const TILE: usize = 4;
/// Input rows and columns one tile reads.
const WINDOW: usize = TILE + 2;
/// Positions of a transformed tile: one product each.
const POSITIONS: usize = WINDOW * WINDOW;
/// Most tiles transformed and multiplied together: their transformed inputs and products
/// (`36 · tiles · (in_channels + filters)` values) stay in L2 between the three steps.
const TILES_PER_CHUNK: usize = 24;

/// `Bᵀ d` for one column `d` of a 6x6 window:
/// ```text
/// Bᵀ = [4  0 -5  0  1  0]
///      [0 -4 -4  1  1  0]
///      [0  4 -4 -1  1  0]
///      [0 -2 -1  2  1  0]
///      [0  2 -1 -2  1  0]
///      [0  4  0 -5  0  1]
/// ```
#[inline(always)]
unsafe fn input_1d<S: SimdF32>(d: [S; WINDOW]) -> [S; WINDOW] {
    // SAFETY: the caller's instruction set supports `S`.
    unsafe {
        let (four, five, two) = (S::splat(4.0), S::splat(5.0), S::splat(2.0));
        let (d1_plus_d2, d1_minus_d2) = (d[1].add(d[2]), d[1].sub(d[2]));
        let (d3_minus_d1, d4_minus_d2) = (d[3].sub(d[1]), d[4].sub(d[2]));
        [
            d[0].mul_add(four, d[4]).sub(d[2].mul(five)),
            d[3].add(d[4]).sub(d1_plus_d2.mul(four)),
            d1_minus_d2.mul_add(four, d[4].sub(d[3])),
            d3_minus_d1.mul_add(two, d4_minus_d2),
            d4_minus_d2.sub(d3_minus_d1.mul(two)),
            d[1].mul_add(four, d[5]).sub(d[3].mul(five)),
        ]
    }
}

/// `G g` for one column `g` of a 3x3 kernel:
/// ```text
/// G = [ 1/4     0     0 ]
///     [-1/6  -1/6  -1/6 ]
///     [-1/6   1/6  -1/6 ]
///     [1/24  1/12   1/6 ]
///     [1/24 -1/12   1/6 ]
///     [   0     0     1 ]
/// ```
#[inline(always)]
unsafe fn filter_1d<S: SimdF32>(g: [S; 3]) -> [S; WINDOW] {
    // SAFETY: the caller's instruction set supports `S`.
    unsafe {
        let outer = g[0].add(g[2]);
        let g0_24 = g[0].mul(S::splat(1.0 / 24.0));
        let g1_12 = g[1].mul(S::splat(1.0 / 12.0));
        let g2_6 = g[2].mul(S::splat(1.0 / 6.0));
        let minus_sixth = S::splat(-1.0 / 6.0);
        [
            g[0].mul(S::splat(0.25)),
            outer.add(g[1]).mul(minus_sixth),
            outer.sub(g[1]).mul(minus_sixth),
            g0_24.add(g1_12).add(g2_6),
            g0_24.sub(g1_12).add(g2_6),
            g[2],
        ]
    }
}

/// `Aᵀ m` for one column `m` of a transformed tile:
/// ```text
/// Aᵀ = [1  1  1  1  1  0]
///      [0  1 -1  2 -2  0]
///      [0  1  1  4  4  0]
///      [0  1 -1  8 -8  1]
/// ```
#[inline(always)]
unsafe fn output_1d<S: SimdF32>(m: [S; WINDOW]) -> [S; TILE] {
    // SAFETY: the caller's instruction set supports `S`.
    unsafe {
        let (m1_plus_m2, m1_minus_m2) = (m[1].add(m[2]), m[1].sub(m[2]));
        let (m3_plus_m4, m3_minus_m4) = (m[3].add(m[4]), m[3].sub(m[4]));
        [
            m[0].add(m1_plus_m2).add(m3_plus_m4),
            m3_minus_m4.mul_add(S::splat(2.0), m1_minus_m2),
            m3_plus_m4.mul_add(S::splat(4.0), m1_plus_m2),
            m3_minus_m4.mul_add(S::splat(8.0), m1_minus_m2).add(m[5]),
        ]
    }
}

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
}

impl Geometry {
    /// Values of the transformed filters ([`transform_filters`]).
    pub const fn filter_len(&self) -> usize {
        POSITIONS * self.in_channels * self.filters
    }

    /// Values of scratch one [`forward_rows`] call borrows.
    pub const fn scratch_len(&self) -> usize {
        POSITIONS * TILES_PER_CHUNK * (self.in_channels + self.filters)
    }

    /// Tiles across one band of 4 output rows.
    const fn tiles_across(&self) -> usize {
        self.out_w.div_ceil(TILE)
    }
}

/// Transforms HWIO 3x3 weights (`[3, 3, in_channels, filters]`) into `u`, the 36 matrices
/// `U[in_channel][position][filter]` ([`Geometry::filter_len`] values).
///
/// # Panics
/// If `weight` or `u` do not hold the sizes above.
pub fn transform_filters(geometry: Geometry, weight: &[f32], u: &mut [f32]) {
    let (in_channels, filters) = (geometry.in_channels, geometry.filters);
    assert_eq!(weight.len(), 9 * in_channels * filters, "3x3 HWIO weights");
    assert_eq!(u.len(), geometry.filter_len(), "transformed filters");
    run_vectorized(FilterTransform {
        weight,
        in_channels,
        filters,
        u,
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
    assert_eq!(u.len(), g.filter_len(), "transformed filters");
    assert_eq!(image.len(), g.in_h * g.in_w * g.in_channels, "input image");
    assert!(rows.end <= g.out_h, "rows outside the output");
    assert_eq!(out.len(), rows.len() * g.out_w * g.filters, "output rows");
    for values in [epilogue.scale, epilogue.bias].into_iter().flatten() {
        assert_eq!(values.len(), g.filters, "one scale and bias per filter");
    }
    let tiles_across = g.tiles_across();
    let bands_per_chunk = (TILES_PER_CHUNK / tiles_across).max(1);
    let bands = rows.len().div_ceil(TILE);
    with_scratch(g.scratch_len(), |scratch| {
        for first_band in (0..bands).step_by(bands_per_chunk) {
            let chunk_bands = first_band..(first_band + bands_per_chunk).min(bands);
            let tiles = Tiles {
                first_row: rows.start + first_band * TILE,
                end_row: rows.end,
                across: tiles_across,
                count: chunk_bands.len() * tiles_across,
            };
            let (v, m) = scratch.split_at_mut(POSITIONS * tiles.count * g.in_channels);
            let m = &mut m[..POSITIONS * tiles.count * g.filters];
            run_vectorized(InputTransform { g, image, tiles, v });
            multiply_positions(g, u, v, m, tiles.count);
            let out_rows = &mut out[(tiles.first_row - rows.start) * g.out_w * g.filters..];
            run_vectorized(OutputTransform {
                g,
                m,
                tiles,
                out: out_rows,
                epilogue,
            });
        }
    });
}

/// The tiles of a chunk: `count` tiles, `across` to a band of 4 rows, the first band's top
/// output row `first_row`; rows from `end_row` on are not computed.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    first_row: usize,
    end_row: usize,
    across: usize,
    count: usize,
}

impl Tiles {
    /// The top-left output pixel of tile `t`.
    fn origin(&self, t: usize) -> (usize, usize) {
        (
            self.first_row + t / self.across * TILE,
            t % self.across * TILE,
        )
    }
}

/// `M[.., p, ..] = V[.., p, ..] · U[.., p, ..]` for each of the 36 positions `p`.
fn multiply_positions(g: Geometry, u: &[f32], v: &[f32], m: &mut [f32], tiles: usize) {
    let (c, f) = (g.in_channels, g.filters);
    for p in 0..POSITIONS {
        gemm(
            MatMut::strided(&mut m[p * f..], tiles, f, POSITIONS * f),
            MatRef::strided(&v[p * c..], tiles, c, POSITIONS * c, 1),
            MatRef::strided(&u[p * f..], c, f, POSITIONS * f, 1),
            false,
        );
    }
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
    weight: &'a [f32],
    in_channels: usize,
    filters: usize,
    u: &'a mut [f32],
}

impl VectorKernel for FilterTransform<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        const {
            assert!(
                S::LANES <= 16,
                "partial vectors go through 16-value buffers"
            )
        };
        let Self {
            weight,
            in_channels,
            filters,
            u,
        } = self;
        for c in 0..in_channels {
            for_each_vector(filters, S::LANES, |f, len| {
                // SAFETY: `transform_filters` checked the lengths: every index below lies
                // inside `weight` (3x3 HWIO) and `u` (`in_channels × 36 × filters`).
                unsafe {
                    let mut g = [[S::zero(); 3]; 3];
                    for (kh, row) in g.iter_mut().enumerate() {
                        for (kw, x) in row.iter_mut().enumerate() {
                            let at = ((kh * 3 + kw) * in_channels + c) * filters + f;
                            *x = load_part(weight.as_ptr().add(at), len);
                        }
                    }
                    // `t = G g` (6x3), then each row of `t` times `Gᵀ`.
                    let mut t = [[S::zero(); 3]; WINDOW];
                    for kw in 0..3 {
                        let column = filter_1d([g[0][kw], g[1][kw], g[2][kw]]);
                        for (t_row, x) in t.iter_mut().zip(column) {
                            t_row[kw] = x;
                        }
                    }
                    for (i, &t_row) in t.iter().enumerate() {
                        for (j, x) in filter_1d(t_row).into_iter().enumerate() {
                            let at = (c * POSITIONS + i * WINDOW + j) * filters + f;
                            store_part(x, u.as_mut_ptr().add(at), len);
                        }
                    }
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

impl VectorKernel for InputTransform<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        let Self { g, image, tiles, v } = self;
        let channels = g.in_channels;
        for t in 0..tiles.count {
            let (y0, x0) = tiles.origin(t);
            // The window's input rows and columns, `None` outside the image (zero padding).
            let row = |i: usize| (y0 + i).checked_sub(g.pad_top).filter(|&y| y < g.in_h);
            let column = |j: usize| (x0 + j).checked_sub(g.pad_left).filter(|&x| x < g.in_w);
            for_each_vector(channels, S::LANES, |c, len| {
                // SAFETY: `forward_rows` checked the image's length; reads stay inside it (rows
                // and columns are checked above), writes inside `v` (`count × 36 × channels`).
                unsafe {
                    // `t = Bᵀ d`, a column of the window at a time, then each row times `B`.
                    let mut bt_d = [[S::zero(); WINDOW]; WINDOW];
                    for j in 0..WINDOW {
                        let mut d = [S::zero(); WINDOW];
                        if let Some(x) = column(j) {
                            for (i, d) in d.iter_mut().enumerate() {
                                if let Some(y) = row(i) {
                                    let at = (y * g.in_w + x) * channels + c;
                                    *d = load_part(image.as_ptr().add(at), len);
                                }
                            }
                        }
                        for (bt_d_row, x) in bt_d.iter_mut().zip(input_1d(d)) {
                            bt_d_row[j] = x;
                        }
                    }
                    for (i, &bt_d_row) in bt_d.iter().enumerate() {
                        for (j, x) in input_1d(bt_d_row).into_iter().enumerate() {
                            let at = (t * POSITIONS + i * WINDOW + j) * channels + c;
                            store_part(x, v.as_mut_ptr().add(at), len);
                        }
                    }
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
}

impl VectorKernel for OutputTransform<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        let Self {
            g,
            m,
            tiles,
            out,
            epilogue,
        } = self;
        let filters = g.filters;
        let relu_in_register = epilogue.activation == ActivationKind::Relu;
        for t in 0..tiles.count {
            let (y0, x0) = tiles.origin(t);
            let rows = TILE.min(tiles.end_row - y0);
            let columns = TILE.min(g.out_w - x0);
            for_each_vector(filters, S::LANES, |f, len| {
                // SAFETY: reads stay inside `m` (`count × 36 × filters`), the scale
                // and bias hold a value per filter (checked by `forward_rows`), and writes go
                // to rows `y0..y0 + rows` (below `end_row`) and columns below `out_w` of the
                // chunk's output.
                unsafe {
                    // `s = Aᵀ m`, a column at a time, then each row of `s` times `A`.
                    let mut at_m = [[S::zero(); WINDOW]; TILE];
                    for j in 0..WINDOW {
                        let mut column = [S::zero(); WINDOW];
                        for (i, x) in column.iter_mut().enumerate() {
                            let at = (t * POSITIONS + i * WINDOW + j) * filters + f;
                            *x = load_part(m.as_ptr().add(at), len);
                        }
                        for (at_m_row, x) in at_m.iter_mut().zip(output_1d(column)) {
                            at_m_row[j] = x;
                        }
                    }
                    let scale = epilogue
                        .scale
                        .map(|s| load_part::<S>(s.as_ptr().add(f), len));
                    let bias = epilogue
                        .bias
                        .map(|b| load_part::<S>(b.as_ptr().add(f), len));
                    for (i, &at_m_row) in at_m.iter().enumerate().take(rows) {
                        for (j, y) in output_1d(at_m_row).into_iter().enumerate().take(columns) {
                            let dst = out.as_mut_ptr().add(
                                (((y0 - tiles.first_row) + i) * g.out_w + x0 + j) * filters + f,
                            );
                            let mut value = match scale {
                                Some(scale) => y.mul(scale),
                                None => y,
                            };
                            if let Some(bias) = bias {
                                value = value.add(bias);
                            }
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

    /// Worst error Winograd may make, relative to `1 + |value|` of the f64 direct convolution,
    /// on inputs in [-1, 1) and Glorot-uniform weights.
    const TOLERANCE: f32 = 5e-5;

    /// A convolution of `in_h × in_w × in_channels` into `filters` filters, `same` or valid.
    fn geometries(
        [in_h, in_w, in_channels]: [usize; 3],
        filters: usize,
        same: bool,
    ) -> (Geometry, reference::Geometry) {
        let reference = reference::Geometry {
            in_h,
            in_w,
            in_c: in_channels,
            out_c: filters,
            kernel: 3,
            stride: 1,
            same,
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
            ([26, 26, 32], 64, false),
            ([14, 14, 32], 32, true),
            ([7, 7, 64], 64, true),
        ];
        let mut worst: f32 = 0.0;
        for (input, filters, same) in cases {
            let (g, reference) = geometries(input, filters, same);
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
                assert!(error <= TOLERANCE, "{g:?}, rows {rows:?}: error {error}");
                worst = worst.max(error);
            }
        }
        println!("worst relative error of F(4x4, 3x3): {worst:e}");
    }

    /// The epilogue as the GEMM's: `activation(old + scale · product + bias)`, each part on its
    /// own and together.
    #[test]
    fn applies_the_epilogue() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
        let (g, reference) = geometries([9, 7, 10], 19, true);
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
                    error <= TOLERANCE,
                    "{activation:?}, accumulate {accumulate}: error {error}"
                );
            }
        }
    }
}
