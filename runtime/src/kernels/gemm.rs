//! Single-precision matrix multiplication, `C = A·B` or `C += A·B`: the one kernel that
//! convolutions (through im2col) and dense layers spend their time in, forward and backward.
//! Its [`Epilogue`] adds a bias per column and applies an activation as each register tile is
//! stored, so a fused convolution or dense layer writes its activated output in one pass.
//!
//! `A` and `B` are strided views ([`MatRef`]), so a transposed operand costs nothing to describe:
//! the weight gradients read `Xᵀ` and the input gradients read `Wᵀ` straight from the stored
//! tensors. `A` may also be a convolution's patches read straight from the image ([`Patches`],
//! [`gemm_patches`]), whose columns the microkernel finds through a per-block offset table.
//! `B` is read in `NR`-column panels, at most `KC_MAX` rows at a time, while every row tile of
//! `A` streams past it. A row-major `B` whose width is a whole number of panels
//! (conv and dense weights, output gradients) is read in place; any other `B` is first copied
//! ("packed") into zero-padded contiguous panels. `A` is read in place and broadcast one element
//! at a time. The register tile (`MR` rows × `NV` vectors) is a const
//! parameter, chosen per instruction set in its own file, so one generic body compiles to a fully
//! unrolled microkernel for each.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::Isa;
use super::elementwise::{ActivationKind, relu};
use super::simd::SimdF32;
use crate::aligned::CACHE_LINE;
use crate::schedule;

/// Most rows of `B` per block: K is split into equal blocks no deeper than this, and each block
/// adds into `C` once. A 256-row block of a 64-wide panel is 64 KiB, more than L1 holds (the
/// L2 streams it well), but it halves the passes over `C` of the deep products of weight
/// gradients and dense layers (`K` = 576 to 9216).
const KC_MAX: usize = 256;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows × cols` row-major matrix.
    ///
    /// # Panics
    /// If `data` holds fewer than `rows * cols` values.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A matrix with arbitrary strides.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
            assert!(
                last < data.len(),
                "a {rows}x{cols} view with strides ({row_stride}, {col_stride}) needs {} values, \
                 the slice has {}",
                last + 1,
                data.len()
            );
        }
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Writes the matrix into `out` row-major (`rows × cols` contiguous values), e.g. to turn
    /// a transposed view into a matrix that many GEMMs then read without gathering it each
    /// time.
    ///
    /// ```
    /// use constnet_runtime::kernels::gemm::MatRef;
    /// let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [[1, 2, 3], [4, 5, 6]]
    /// let mut w_t = [0.0; 6];
    /// MatRef::row_major(&w, 2, 3).t().copy_to(&mut w_t);
    /// assert_eq!(w_t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// ```
    ///
    /// # Panics
    /// If `out` does not hold exactly `rows * cols` values.
    pub fn copy_to(&self, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.rows * self.cols,
            "copying a {}x{} matrix into {} values",
            self.rows,
            self.cols,
            out.len()
        );
        self.copy_rows_into(out, self.cols);
    }

    /// Writes row `i` of the matrix to `out[i * out_row_stride..][..cols]`, leaving the values
    /// between rows untouched: the one copy behind [`MatRef::copy_to`] and the GEMM's packing
    /// of `B`. Rows are copied whole when they are contiguous; a transposed matrix (contiguous
    /// columns) goes through 16 x 16 blocks in a local array, so both the reads and the writes
    /// are runs.
    #[inline(always)]
    fn copy_rows_into(&self, out: &mut [f32], out_row_stride: usize) {
        const BLOCK: usize = 16;
        let (rows, cols) = (self.rows, self.cols);
        if self.col_stride == 1 {
            for i in 0..rows {
                let src = i * self.row_stride;
                out[i * out_row_stride..][..cols].copy_from_slice(&self.data[src..src + cols]);
            }
        } else if self.row_stride == 1 {
            for j0 in (0..cols).step_by(BLOCK) {
                let span = BLOCK.min(cols - j0);
                for i0 in (0..rows).step_by(BLOCK) {
                    let depth = BLOCK.min(rows - i0);
                    let mut block = [[0.0f32; BLOCK]; BLOCK];
                    for (t, column) in block.iter_mut().enumerate().take(span) {
                        let src = (j0 + t) * self.col_stride + i0;
                        column[..depth].copy_from_slice(&self.data[src..src + depth]);
                    }
                    for i in 0..depth {
                        let row = &mut out[(i0 + i) * out_row_stride + j0..][..span];
                        for (value, column) in row.iter_mut().zip(&block) {
                            *value = column[i];
                        }
                    }
                }
            }
        } else {
            for i in 0..rows {
                for (j, value) in out[i * out_row_stride..][..cols].iter_mut().enumerate() {
                    *value = self.at(i, j);
                }
            }
        }
    }

    /// The view of rows `i0..i0 + rows`, columns `j0..j0 + cols`.
    fn block(self, i0: usize, rows: usize, j0: usize, cols: usize) -> Self {
        Self {
            data: &self.data[i0 * self.row_stride + j0 * self.col_stride..],
            rows,
            cols,
            ..self
        }
    }
}

/// The patch matrix of a convolution without padding, read straight from the image: row `r`
/// holds the `K × K × C` input values under the window of output pixel `first + r` (in the
/// order kernel row, kernel column, channel, as HWIO weights are), so `patches · W` is the
/// convolution without copying the patches out (im2col). Each row is `K` runs of `K · C`
/// contiguous values, one image row apart.
///
/// ```
/// use constnet_runtime::kernels::gemm::Patches;
/// // A 3x3 one-channel image, 2x2 windows, stride 1: the window of output pixel 3 is the
/// // bottom-right one.
/// let image = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
/// let patches = Patches::new(&image, [3, 3, 1], 2, 1, 0..4);
/// assert_eq!((patches.rows(), patches.cols()), (4, 4));
/// assert_eq!((0..4).map(|k| patches.at(3, k)).collect::<Vec<_>>(), [5.0, 6.0, 8.0, 9.0]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Patches<'a> {
    image: &'a [f32],
    width: usize,
    channels: usize,
    kernel: usize,
    stride: usize,
    out_width: usize,
    first: usize,
    rows: usize,
}

impl<'a> Patches<'a> {
    /// The patches of output pixels `pixels` (numbered row by row) of a `kernel × kernel`
    /// convolution with `stride` and no padding over `image`, of shape `[height, width,
    /// channels]` (HWC).
    ///
    /// # Panics
    /// If `image` does not hold `height × width × channels` values, the window does not fit
    /// the image, or a pixel lies outside the output.
    pub fn new(
        image: &'a [f32],
        [height, width, channels]: [usize; 3],
        kernel: usize,
        stride: usize,
        pixels: Range<usize>,
    ) -> Self {
        assert_eq!(
            image.len(),
            height * width * channels,
            "a {height}x{width}x{channels} image holds {} values, the slice {}",
            height * width * channels,
            image.len()
        );
        assert!(
            kernel >= 1 && stride >= 1 && kernel <= height && kernel <= width,
            "a {kernel}x{kernel} window with stride {stride} does not fit a {height}x{width} image"
        );
        let out_height = (height - kernel) / stride + 1;
        let out_width = (width - kernel) / stride + 1;
        assert!(
            pixels.start <= pixels.end && pixels.end <= out_height * out_width,
            "pixels {pixels:?} of a {out_height}x{out_width} output"
        );
        Self {
            image,
            width,
            channels,
            kernel,
            stride,
            out_width,
            first: pixels.start,
            rows: pixels.len(),
        }
    }

    /// Rows: one per output pixel.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns: `K × K × C`.
    pub fn cols(&self) -> usize {
        self.kernel * self.run_len()
    }

    /// Element `(i, j)`: input value `j` of the window of output pixel `first + i`.
    ///
    /// # Panics
    /// If `(i, j)` lies outside the matrix.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols(),
            "({i}, {j}) outside the patches"
        );
        self.image[self.row_offset(i) + self.col_offset(j)]
    }

    /// Contiguous values of a window: one kernel row.
    fn run_len(&self) -> usize {
        self.kernel * self.channels
    }

    /// Distance between the runs of a window: one image row.
    fn run_step(&self) -> usize {
        self.width * self.channels
    }

    /// Offset in the image of the first value of row `i`'s window.
    fn row_offset(&self, i: usize) -> usize {
        let pixel = self.first + i;
        let (oh, ow) = (pixel / self.out_width, pixel % self.out_width);
        (oh * self.width + ow) * self.stride * self.channels
    }

    /// Offset of column `j` from the first value of a window.
    fn col_offset(&self, j: usize) -> usize {
        (j / self.run_len()) * self.run_step() + j % self.run_len()
    }
}

/// The left operand of a product: a strided matrix or a convolution's patches.
#[derive(Clone, Copy, Debug)]
enum Lhs<'a> {
    Matrix(MatRef<'a>),
    Patches(Patches<'a>),
}

impl Lhs<'_> {
    fn rows(&self) -> usize {
        match self {
            Lhs::Matrix(a) => a.rows,
            Lhs::Patches(p) => p.rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            Lhs::Matrix(a) => a.cols,
            Lhs::Patches(p) => p.cols(),
        }
    }
}

/// A writable row-major matrix view whose rows may be further apart than its width.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// A `rows × cols` row-major matrix.
    ///
    /// # Panics
    /// If `data` holds fewer than `rows * cols` values.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "a {rows}x{cols} matrix needs {} values, the slice has {}",
            rows * cols,
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
        }
    }

    /// A `rows × cols` matrix whose rows start `row_stride` values apart.
    ///
    /// # Panics
    /// If `row_stride` is less than `cols`, or the last row ends past `data`.
    pub fn strided(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            row_stride >= cols,
            "rows of {cols} values {row_stride} apart overlap"
        );
        if rows > 0 {
            let end = (rows - 1) * row_stride + cols;
            assert!(
                end <= data.len(),
                "a {rows}x{cols} view with row stride {row_stride} needs {end} values, the \
                 slice has {}",
                data.len()
            );
        }
        Self {
            data,
            rows,
            cols,
            row_stride,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// How the GEMM writes `C`: `C = A·B` (or `C += A·B` with `accumulate`), each column `j` of the
/// product times `scale[j]` if given, plus `bias[j]` on every row's column `j`, then
/// `activation` on every value. The bias is added as the first block of `K` is stored and the
/// activation applied as the last one is, so without a scale the result equals filling `C` with
/// the bias, accumulating `A·B` and applying the activation afterwards, bit for bit. With a
/// scale, each block's product is scaled as it is stored (one fused multiply-add onto `C`), which
/// equals scaling the whole product up to rounding. A `bool` converts to the plain product
/// (`true`: accumulate).
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Add the product to `C` instead of overwriting it.
    pub accumulate: bool,
    /// One factor per column of `C`, multiplying the product `A·B` (not what `C` held, nor the
    /// bias): batch normalisation's scale when it is folded into a convolution.
    pub scale: Option<&'a [f32]>,
    /// One value per column of `C`.
    pub bias: Option<&'a [f32]>,
    /// Applied to every value of `C` after the product and the bias.
    pub activation: ActivationKind,
}

impl<'a> Epilogue<'a> {
    /// The same epilogue for columns `start..start + cols` of `C`.
    fn columns(self, start: usize, cols: usize) -> Self {
        let part = |values: &'a [f32]| &values[start..start + cols];
        Self {
            scale: self.scale.map(part),
            bias: self.bias.map(part),
            ..self
        }
    }
}

impl From<bool> for Epilogue<'_> {
    fn from(accumulate: bool) -> Self {
        Self {
            accumulate,
            ..Self::default()
        }
    }
}

/// One GEMM call as the instruction-set entry points receive it.
pub(super) struct GemmArgs<'a> {
    c: MatMut<'a>,
    a: Lhs<'a>,
    b: MatRef<'a>,
    epilogue: Epilogue<'a>,
}

impl GemmArgs<'_> {
    /// Rows of the output, from which each instruction set picks its tile.
    pub(super) fn m(&self) -> usize {
        self.c.rows
    }

    /// Columns of the output, from which each instruction set picks its tile.
    pub(super) fn n(&self) -> usize {
        self.c.cols
    }

    /// The same product restricted to output columns `start..start + cols` (and the same
    /// columns of `B`), so one call can be split between tiles of different widths.
    pub(super) fn columns(&mut self, start: usize, cols: usize) -> GemmArgs<'_> {
        assert!(start + cols <= self.c.cols, "columns outside the output");
        GemmArgs {
            c: MatMut {
                data: &mut self.c.data[start..],
                rows: self.c.rows,
                cols,
                row_stride: self.c.row_stride,
            },
            a: self.a,
            b: self.b.block(0, self.b.rows, start, cols),
            epilogue: self.epilogue.columns(start, cols),
        }
    }
}

/// `C = A·B`, or `C += A·B` with `accumulate`, then the rest of the [`Epilogue`], on this thread
/// with the active instruction set.
///
/// # Panics
/// If the shapes do not agree (`A` is m×k, `B` k×n, `C` m×n, the scale and bias n values).
///
/// # Example
/// ```
/// use constnet_runtime::kernels::gemm::{gemm, MatMut, MatRef};
/// let a = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let b = [5.0, 6.0, 7.0, 8.0]; // [[5, 6], [7, 8]]
/// let mut c = [0.0; 4];
/// gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), false);
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// ```
pub fn gemm<'e>(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, epilogue: impl Into<Epilogue<'e>>) {
    gemm_with(Isa::active(), c, a, b, epilogue.into());
}

/// [`gemm`] on a chosen instruction-set path.
///
/// # Panics
/// If the shapes do not agree, or the CPU does not support `isa`.
pub fn gemm_with(isa: Isa, c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, epilogue: Epilogue<'_>) {
    gemm_lhs(isa, c, Lhs::Matrix(a), b, epilogue);
}

/// `C = patches·B` (or `C +=`), then the rest of the [`Epilogue`]: a convolution without
/// padding, `B` its HWIO weights as a `K·K·C × filters` matrix, without copying the patches out
/// of the image.
///
/// # Panics
/// If the shapes do not agree (`patches` m×k, `B` k×n, `C` m×n, the scale and bias n values).
pub fn gemm_patches<'e>(
    c: MatMut<'_>,
    patches: Patches<'_>,
    b: MatRef<'_>,
    epilogue: impl Into<Epilogue<'e>>,
) {
    gemm_lhs(Isa::active(), c, Lhs::Patches(patches), b, epilogue.into());
}

/// Checks the shapes, then runs the product on `isa`'s path.
fn gemm_lhs(isa: Isa, c: MatMut<'_>, a: Lhs<'_>, b: MatRef<'_>, epilogue: Epilogue<'_>) {
    assert!(
        a.rows() == c.rows && b.cols == c.cols && a.cols() == b.rows,
        "gemm shapes disagree: A is {}x{}, B {}x{}, C {}x{}",
        a.rows(),
        a.cols(),
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    for (what, values) in [("scale", epilogue.scale), ("bias", epilogue.bias)] {
        if let Some(values) = values {
            assert_eq!(
                values.len(),
                c.cols,
                "gemm {what} has {} values for {} columns",
                values.len(),
                c.cols
            );
        }
    }
    assert!(isa.is_supported(), "this CPU cannot run the {isa:?} path");
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    if a.cols() == 0 {
        empty_product(c, epilogue);
        return;
    }
    let args = GemmArgs { c, a, b, epilogue };
    match isa {
        // SAFETY: `is_supported` confirmed the CPU features each path needs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { super::x86_avx512::gemm(args) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { super::x86_avx2::gemm(args) },
        Isa::Portable => super::portable::gemm(args),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("non-x86 paths are never supported"),
    }
}

/// The epilogue alone, for a product with `k = 0`.
fn empty_product(c: MatMut<'_>, epilogue: Epilogue<'_>) {
    for row in c.data.chunks_mut(c.row_stride).take(c.rows) {
        for (j, value) in row[..c.cols].iter_mut().enumerate() {
            let product = if epilogue.accumulate { *value } else { 0.0 };
            let biased = product + epilogue.bias.map_or(0.0, |bias| bias[j]);
            *value = epilogue.activation.apply(biased);
        }
    }
}

/// [`gemm`] split across the rayon pool: along `K` into a fixed number of parts when `K`
/// dominates (see `k_parts`), else by rows of `C` when the product is large enough to gain (at
/// least the context's `gemm_min_muls_per_part` (2^22 by default) multiply-adds, or
/// `gemm_min_muls_per_awake_part` (2^16) with the pool awake, and 16 rows per part), or, for a single row, by 64-column panels.
///
/// # Panics
/// As [`gemm`].
pub fn gemm_parallel<'e>(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    epilogue: impl Into<Epilogue<'e>>,
) {
    const PANEL: usize = 64;
    let splits = schedule::splits();
    let min_muls_per_part = schedule::min_muls_per_part(splits.gemm_min_muls_per_awake_part);
    let epilogue = epilogue.into();
    let threads = schedule::pass_threads();
    let muls = c.rows * c.cols * a.cols;
    assert_eq!(
        a.rows, c.rows,
        "gemm shapes disagree: A has {} rows, C {}",
        a.rows, c.rows
    );
    if let Some(parts) = k_parts(c.rows, a.cols, epilogue) {
        return split_along_k(c, a, b, epilogue, parts);
    }
    if c.rows == 1 && threads >= 2 {
        let parts = threads
            .min(muls / schedule::min_muls_per_part(splits.gemm_min_muls_per_column_part))
            .min(c.cols / PANEL);
        if parts >= 2 {
            let cols_per_part = c.cols.div_ceil(parts).next_multiple_of(PANEL);
            let (k, n) = (a.cols, c.cols);
            return c.data[..n]
                .par_chunks_mut(cols_per_part)
                .enumerate()
                .for_each(|(part, row)| {
                    let (start, cols) = (part * cols_per_part, row.len());
                    let c = MatMut::row_major(row, 1, cols);
                    gemm(
                        c,
                        a,
                        b.block(0, k, start, cols),
                        epilogue.columns(start, cols),
                    );
                });
        }
    }
    let parts = threads.min(muls / min_muls_per_part).min(c.rows / 16);
    if parts < 2 {
        return gemm(c, a, b, epilogue);
    }
    let rows_per_part = c.rows.div_ceil(parts);
    let (rows, cols, row_stride) = (c.rows, c.cols, c.row_stride);
    c.data
        .par_chunks_mut(rows_per_part * row_stride)
        .enumerate()
        .for_each(|(part, data)| {
            let start = part * rows_per_part;
            if start < rows {
                let part_rows = rows_per_part.min(rows - start);
                let c = MatMut {
                    data,
                    rows: part_rows,
                    cols,
                    row_stride,
                };
                gemm(c, a.block(start, part_rows, 0, a.cols), b, epilogue)
            }
        });
}

/// Parts a product split along `K` has, at most, and the fewest rows of `B` each part takes.
const K_PARTS: usize = 64;
const MIN_K_PART: usize = 256;

/// How many parts to split an `m × k` by `k × n` product into along `K`, if at all: when `A`
/// has too few rows to split (a dense layer at batches under 32) and `K` dominates, so each
/// part streams its own rows of `B` (the weight matrix) once. The count depends on the shape
/// alone, never on the thread count, so results do not either.
fn k_parts(m: usize, k: usize, epilogue: Epilogue<'_>) -> Option<usize> {
    let dominated = m < 32 && k >= 4 * MIN_K_PART && k >= 16 * m;
    (dominated && !epilogue.accumulate).then(|| K_PARTS.min(k / MIN_K_PART))
}

/// Scratch values [`gemm_parallel`] borrows for a `1 × k` by `k × n` product (as many again per
/// further row of `A`, up to 31 rows).
pub const fn split_k_scratch(k: usize, n: usize) -> usize {
    if k >= 4 * MIN_K_PART {
        let parts = if K_PARTS < k / MIN_K_PART {
            K_PARTS
        } else {
            k / MIN_K_PART
        };
        parts * n
    } else {
        0
    }
}

/// The product split along `K` into `parts` equal runs of rows of `B`: each task multiplies its
/// columns of `A` by its rows of `B` into its own partial `C`, and the partial products are
/// added in order (so the result does not depend on which thread made which), then the
/// epilogue. Each thread takes one contiguous range of parts, so it streams the same rows of
/// `B` on every pass, in the order [`schedule::reverse_k_part_order`] last set.
fn split_along_k(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    epilogue: Epilogue<'_>,
    parts: usize,
) {
    let (m, k, n) = (c.rows, a.cols, c.cols);
    let part_len = k.div_ceil(parts);
    let parts_per_task = parts.div_ceil(schedule::pass_threads());
    let reversed = schedule::k_parts_reversed();
    super::with_scratch(parts * m * n, |partials| {
        partials
            .par_chunks_mut(parts_per_task * m * n)
            .enumerate()
            .for_each(|(task, task_partials)| {
                let mut multiply = |(index, partial): (usize, &mut [f32])| {
                    let k0 = (task * parts_per_task + index) * part_len;
                    let kc = part_len.min(k - k0);
                    let partial = MatMut::row_major(partial, m, n);
                    gemm(partial, a.block(0, m, k0, kc), b.block(k0, kc, 0, n), false);
                };
                let task_parts = task_partials.chunks_mut(m * n).enumerate();
                if reversed {
                    task_parts.rev().for_each(&mut multiply);
                } else {
                    task_parts.for_each(&mut multiply);
                }
            });
        let (first, rest) = partials.split_at(m * n);
        for (i, row) in c.data.chunks_mut(c.row_stride).take(m).enumerate() {
            let sums = &mut row[..n];
            sums.copy_from_slice(&first[i * n..][..n]);
            for partial in rest.chunks(m * n) {
                for (sum, value) in sums.iter_mut().zip(&partial[i * n..][..n]) {
                    *sum += value;
                }
            }
            for (j, value) in sums.iter_mut().enumerate() {
                let scaled = epilogue.scale.map_or(*value, |scale| *value * scale[j]);
                let biased = epilogue.bias.map_or(0.0, |bias| bias[j]) + scaled;
                *value = epilogue.activation.apply(biased);
            }
        }
    });
}

/// Values the packing buffer holds beyond a panel, so the panel can start on a cache line (the
/// buffer is a plain `Vec`: held in an `AlignedVec`, the in-place path's empty stand-in made
/// the whole GEMM 2.5 times slower).
const PACKING_PAD: usize = CACHE_LINE / size_of::<f32>() - 1;

/// Gives a thread's packing buffer room for the widest panel any instruction set packs.
pub(super) fn reserve_packing(packed: &mut Vec<f32>) {
    const WIDEST_PANEL: usize = 64;
    packed.reserve(KC_MAX * WIDEST_PANEL + PACKING_PAD);
}

/// The GEMM with `MR × (NV · LANES)` register tiles of vector type `V`.
///
/// # Safety
/// The CPU must support `V`'s instruction set; shapes were checked by [`gemm_with`].
#[inline(always)]
pub(super) unsafe fn gemm_with_tiles<V: SimdF32, const MR: usize, const NV: usize>(
    args: GemmArgs<'_>,
) {
    let GemmArgs { c, a, b, epilogue } = args;
    // One instantiation per kind of A, so each tile loop knows how it addresses A.
    unsafe {
        match a {
            Lhs::Matrix(a) => tile_loops::<V, MR, NV, _>(c, a, b, epilogue),
            Lhs::Patches(a) => tile_loops::<V, MR, NV, _>(c, a, b, epilogue),
        }
    }
}

/// [`gemm_with_tiles`] for one kind of A.
///
/// # Safety
/// As [`gemm_with_tiles`].
#[inline(always)]
unsafe fn tile_loops<V: SimdF32, const MR: usize, const NV: usize, A: TiledLhs>(
    c: MatMut<'_>,
    a: A,
    b: MatRef<'_>,
    epilogue: Epilogue<'_>,
) {
    let nr = NV * V::LANES;
    let (m, n, k) = (c.rows, c.cols, a.cols());
    let panels = n.div_ceil(nr);
    let blocks = k.div_ceil(KC_MAX);
    let kc_max = k.div_ceil(blocks);
    let in_place = b.col_stride == 1 && n.is_multiple_of(nr);
    // The buffer is taken out of the thread-local rather than borrowed in a `with` closure: a
    // closure is a function without this instruction set's target features, and left
    // un-inlined (as it is with several codegen units, Cargo's default) it would keep every
    // vector operation inside it from inlining: the kernels ran 60 times slower. An in-place B
    // leaves the thread-local alone, which matters to the many small products of Winograd.
    let mut packed = if in_place {
        Vec::new()
    } else {
        super::take_packing()
    };
    // The block's column offsets, for an A that is not strided. Left uninitialised otherwise:
    // zeroing 2 KiB on every call cost small products (a dense layer's, per row at batch 1)
    // more than it was worth, and a strided A never reads it.
    let mut col_offsets = [MaybeUninit::<usize>::uninit(); KC_MAX];
    {
        let packed = &mut packed;
        if !in_place {
            packed.resize(kc_max * nr + PACKING_PAD, 0.0);
        }
        for block in 0..blocks {
            let k0 = block * kc_max;
            let kc = kc_max.min(k - k0);
            if !A::STRIDED {
                for (j, offset) in col_offsets[..kc].iter_mut().enumerate() {
                    offset.write(a.col_offset(k0 + j));
                }
            }
            let add_to_c = epilogue.accumulate || block > 0;
            // The bias joins the first block's store, the activation the last one's.
            let bias = epilogue.bias.filter(|_| block == 0);
            let activation = if block + 1 == blocks {
                epilogue.activation
            } else {
                ActivationKind::Identity
            };
            for panel in 0..panels {
                let j0 = panel * nr;
                // Each panel is packed just before its row tiles use it, into one L1-sized
                // buffer: packing all of B up front wrote (and read back) a copy as large as B,
                // which for a 9216 x 128 weight doubled the time of the GEMM.
                let (b_panel, b_row_stride): (&[f32], usize) = if in_place {
                    (&b.data[k0 * b.row_stride + j0..], b.row_stride)
                } else {
                    let start = packed.as_ptr().align_offset(CACHE_LINE).min(PACKING_PAD);
                    let panel = &mut packed[start..];
                    pack_b_panel(b, k0, kc, j0, nr, panel);
                    (&panel[..], nr)
                };
                for i0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - i0);
                    // A strided A's last, partial tile is computed as the whole tile ending at
                    // row `m` (its first rows those of the tile before, again), so its rows stay
                    // evenly spaced, and only its last `rows` rows are stored.
                    let skipped_rows = if rows < MR && A::STRIDED && m >= MR {
                        MR - rows
                    } else {
                        0
                    };
                    let first_row = i0 - skipped_rows;
                    let a_tile = a.tile(first_row, k0);
                    let c_tile = &mut c.data[i0 * c.row_stride + j0..];
                    // Only full tiles: an edge tile's rows past the end repeat its last row
                    // (see `microkernel`), which a step cannot express.
                    let row_step = a
                        .row_step(first_row, rows + skipped_rows)
                        .filter(|_| rows + skipped_rows == MR);
                    let tile = TileArgs {
                        a: a_tile.as_ptr(),
                        a_len: a_tile.len(),
                        a_row_step: row_step.unwrap_or(0),
                        skipped_rows,
                        a_col_stride: a.strides().1,
                        a_col_offsets: col_offsets.as_ptr().cast(),
                        b: b_panel.as_ptr(),
                        b_len: b_panel.len(),
                        b_row_stride,
                        kc,
                        c_len: c_tile.len(),
                        c: c_tile.as_mut_ptr(),
                        c_row_stride: c.row_stride,
                        rows,
                        cols: nr.min(n - j0),
                        add_to_c,
                        scale: epilogue
                            .scale
                            .map_or(std::ptr::null(), |scale| scale[j0..].as_ptr()),
                        bias: bias.map_or(std::ptr::null(), |bias| bias[j0..].as_ptr()),
                        activation,
                    };
                    // SAFETY: the tile's rows and columns lie inside A, B (or its packed panel)
                    // and C; an in-place B has only full panels; `a_row_step` is the rows'
                    // distance when the kernel is told they are evenly spaced.
                    unsafe {
                        match row_step {
                            Some(_) => microkernel::<V, MR, NV, A, true>(tile, a, first_row),
                            None => microkernel::<V, MR, NV, A, false>(tile, a, first_row),
                        }
                    }
                }
            }
        }
    }
    if !in_place {
        super::give_packing(packed);
    }
}

/// How the tile loops read a kind of A.
trait TiledLhs: Copy {
    /// Whether rows and columns lie a fixed stride apart (a matrix view), or at irregular
    /// offsets that the microkernel takes from tables (a convolution's patches: `K` runs of
    /// `K · C` values, one image row apart).
    const STRIDED: bool;
    /// Columns (`K`).
    fn cols(&self) -> usize;
    /// A from row `i0`, column `k0` on; without strides, from row `i0`'s column 0.
    fn tile(&self, i0: usize, k0: usize) -> &[f32];
    /// Distance between rows and between columns, when strided.
    fn strides(&self) -> (usize, usize);
    /// Offset of row `i0 + i` from row `i0`, without strides.
    fn row_offset(&self, i0: usize, i: usize) -> usize;
    /// The distance between consecutive rows of rows `i0..i0 + rows`, if it is the same
    /// throughout (always for a matrix; for patches, when the rows' pixels lie on one output
    /// row), so the microkernel computes the rows' offsets instead of reading them from a table.
    fn row_step(&self, i0: usize, rows: usize) -> Option<usize>;
    /// Offset of column `k` from column 0 of any row, without strides.
    fn col_offset(&self, k: usize) -> usize;
}

impl TiledLhs for MatRef<'_> {
    const STRIDED: bool = true;

    #[inline(always)]
    fn cols(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    fn tile(&self, i0: usize, k0: usize) -> &[f32] {
        &self.data[i0 * self.row_stride + k0 * self.col_stride..]
    }

    #[inline(always)]
    fn strides(&self) -> (usize, usize) {
        (self.row_stride, self.col_stride)
    }

    #[inline(always)]
    fn row_offset(&self, _i0: usize, i: usize) -> usize {
        i * self.row_stride
    }

    #[inline(always)]
    fn row_step(&self, _i0: usize, _rows: usize) -> Option<usize> {
        Some(self.row_stride)
    }

    #[inline(always)]
    fn col_offset(&self, k: usize) -> usize {
        k * self.col_stride
    }
}

impl TiledLhs for Patches<'_> {
    const STRIDED: bool = false;

    #[inline(always)]
    fn cols(&self) -> usize {
        Patches::cols(self)
    }

    #[inline(always)]
    fn tile(&self, i0: usize, _k0: usize) -> &[f32] {
        &self.image[Patches::row_offset(self, i0)..]
    }

    #[inline(always)]
    fn strides(&self) -> (usize, usize) {
        (0, 1)
    }

    #[inline(always)]
    fn row_offset(&self, i0: usize, i: usize) -> usize {
        Patches::row_offset(self, i0 + i) - Patches::row_offset(self, i0)
    }

    #[inline(always)]
    fn row_step(&self, i0: usize, rows: usize) -> Option<usize> {
        let column = (self.first + i0) % self.out_width;
        (column + rows <= self.out_width).then_some(self.stride * self.channels)
    }

    #[inline(always)]
    fn col_offset(&self, k: usize) -> usize {
        Patches::col_offset(self, k)
    }
}

/// Copies rows `k0..k0 + kc`, columns `j0..j0 + nr` of `B` into `packed` as `kc` rows of `nr`
/// contiguous values, zero-padding columns past the end of `B`.
#[inline(always)]
fn pack_b_panel(b: MatRef<'_>, k0: usize, kc: usize, j0: usize, nr: usize, packed: &mut [f32]) {
    let cols = nr.min(b.cols - j0);
    let packed = &mut packed[..kc * nr];
    b.block(k0, kc, j0, cols).copy_rows_into(packed, nr);
    if cols < nr {
        for row in packed.chunks_mut(nr) {
            row[cols..].fill(0.0);
        }
    }
}

/// One register tile: raw pointers into A, the panel of B and C, each with the number of values
/// readable (writable) from it, which the microkernel's debug assertions check its reach against;
/// and the tile's part of the epilogue (`scale` and `bias` are null or point at the values of
/// column `j0`, with at least `cols` of them). For an A that is not strided, `a_col_offsets` points at the
/// block's `kc` column offsets, all written; for a strided one it is never read. The tile's first
/// `skipped_rows` rows are computed but not stored: `c` points at the row after them.
struct TileArgs {
    a: *const f32,
    a_len: usize,
    a_row_step: usize,
    a_col_stride: usize,
    a_col_offsets: *const usize,
    b: *const f32,
    b_len: usize,
    b_row_stride: usize,
    kc: usize,
    c: *mut f32,
    c_len: usize,
    c_row_stride: usize,
    skipped_rows: usize,
    rows: usize,
    cols: usize,
    add_to_c: bool,
    scale: *const f32,
    bias: *const f32,
    activation: ActivationKind,
}

/// Computes one `MR × NV·LANES` tile of `A·B` in registers, then stores (or adds) the `rows ×
/// cols` part of it that lies inside C, after the first `skipped_rows` rows: rows `i0..` of A,
/// read from `t.a`, `t.a_row_step` apart when `EVEN_ROWS`.
///
/// # Safety
/// `V`'s instruction set must be available; the pointers must cover the tile as described.
#[inline(always)]
unsafe fn microkernel<
    V: SimdF32,
    const MR: usize,
    const NV: usize,
    A: TiledLhs,
    const EVEN_ROWS: bool,
>(
    t: TileArgs,
    a: A,
    i0: usize,
) {
    const { assert!(NV * V::LANES <= 64, "edge tiles spill into 64-wide rows") };
    let nr = NV * V::LANES;
    // Rows past `rows` read the last valid row again: a full tile's loads stay inside A and
    // the extra sums are never stored. Evenly spaced rows' offsets are computed here, from
    // their step, where the compiler sees them: passed in as a table, they made it keep the
    // 12-row tiles' accumulators in memory (40% slower).
    let row_offsets: [usize; MR] = if EVEN_ROWS {
        std::array::from_fn(|i| i * t.a_row_step)
    } else {
        std::array::from_fn(|i| a.row_offset(i0, i.min(t.rows - 1)))
    };
    debug_assert!(
        (1..=MR).contains(&(t.rows + t.skipped_rows)) && (1..=nr).contains(&t.cols) && t.kc > 0
    );
    debug_assert!(
        {
            let reach = if !A::STRIDED {
                // SAFETY: the table holds an offset for each of the block's `kc` columns.
                unsafe { *t.a_col_offsets.add(t.kc - 1) }
            } else {
                (t.kc - 1) * t.a_col_stride
            };
            row_offsets.iter().all(|&offset| offset + reach < t.a_len)
        },
        "the tile reads past the end of A"
    );
    debug_assert!(
        (t.kc - 1) * t.b_row_stride + nr <= t.b_len,
        "the tile reads past the end of B's panel"
    );
    debug_assert!(
        (t.rows - 1) * t.c_row_stride + t.cols <= t.c_len,
        "the tile writes past the end of C"
    );
    unsafe {
        let mut acc = [[V::zero(); NV]; MR];
        let mut a_k = t.a;
        let mut b_k = t.b;
        for k in 0..t.kc {
            if !A::STRIDED {
                a_k = t.a.add(*t.a_col_offsets.add(k));
            }
            // A plain loop, not `array::from_fn`: a closure is a function without this
            // instruction set's target features, and one left un-inlined (as happens with
            // several codegen units) turns every vector load into a call.
            let mut b_vec = [V::zero(); NV];
            for (j, b) in b_vec.iter_mut().enumerate() {
                *b = V::load(b_k.add(j * V::LANES));
            }
            for i in 0..MR {
                let a_val = V::splat(*a_k.add(row_offsets[i]));
                for j in 0..NV {
                    acc[i][j] = a_val.mul_add(b_vec[j], acc[i][j]);
                }
            }
            // `wrapping_add`: after the last step the pointers point one step past their
            // buffers and are never read; `add` would make computing them undefined behaviour.
            a_k = a_k.wrapping_add(t.a_col_stride);
            b_k = b_k.wrapping_add(t.b_row_stride);
        }
        if t.rows == MR && t.cols == nr {
            for (i, acc_row) in acc.iter().enumerate() {
                let c_row = t.c.add(i * t.c_row_stride);
                for (j, &value) in acc_row.iter().enumerate() {
                    finish_vector(value, &t, c_row, j * V::LANES);
                }
            }
        } else {
            // Edge tile: spill the registers to a stack buffer (indexing `acc` by a run-time
            // count would move it out of registers for the whole kernel, 3x slower), then copy
            // the part inside C, whole vectors at a time and the column tail value by value.
            let mut spill = [[0.0f32; 64]; MR];
            for (i, acc_row) in acc.iter().enumerate() {
                for (j, value) in acc_row.iter().enumerate() {
                    value.store(spill[i][j * V::LANES..].as_mut_ptr());
                }
            }
            let whole = t.cols - t.cols % V::LANES;
            let stored = spill.iter().skip(t.skipped_rows).take(t.rows);
            for (i, spilled) in stored.enumerate() {
                let c_row = t.c.add(i * t.c_row_stride);
                for j in (0..whole).step_by(V::LANES) {
                    finish_vector(V::load(spilled[j..].as_ptr()), &t, c_row, j);
                }
                for (j, &value) in spilled.iter().enumerate().take(t.cols).skip(whole) {
                    let dst = c_row.add(j);
                    let mut out = match (t.scale.is_null(), t.add_to_c) {
                        (true, true) => *dst + value,
                        (true, false) => value,
                        (false, true) => value * *t.scale.add(j) + *dst,
                        (false, false) => value * *t.scale.add(j),
                    };
                    if !t.bias.is_null() {
                        out += *t.bias.add(j);
                    }
                    *dst = if t.activation == ActivationKind::Relu {
                        relu(out)
                    } else {
                        out
                    };
                }
            }
        }
        if !matches!(
            t.activation,
            ActivationKind::Identity | ActivationKind::Relu
        ) {
            // Functions without a vector form run over the tile just stored, still in L1.
            for i in 0..t.rows {
                let c_row = t.c.add(i * t.c_row_stride);
                for j in 0..t.cols {
                    *c_row.add(j) = t.activation.apply(*c_row.add(j));
                }
            }
        }
    }
}

/// Stores one vector of the tile at column `j` of `c_row`: the product (times the scale, if
/// any), plus C's old value when adding, plus the bias, then ReLU when the epilogue asks for it
/// (other activations follow over the stored tile).
///
/// # Safety
/// As [`microkernel`]; columns `j..j + LANES` lie inside the tile.
#[inline(always)]
unsafe fn finish_vector<V: SimdF32>(value: V, t: &TileArgs, c_row: *mut f32, j: usize) {
    unsafe {
        let dst = c_row.add(j);
        let mut out = match (t.scale.is_null(), t.add_to_c) {
            (true, true) => value.add(V::load(dst)),
            (true, false) => value,
            (false, true) => value.mul_add(V::load(t.scale.add(j)), V::load(dst)),
            (false, false) => value.mul(V::load(t.scale.add(j))),
        };
        if !t.bias.is_null() {
            out = out.add(V::load(t.bias.add(j)));
        }
        if t.activation == ActivationKind::Relu {
            out = out.relu();
        }
        out.store(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn random(len: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Random `m × k` and `k × n` matrices and an `n`-long bias.
    fn random_operands(
        m: usize,
        k: usize,
        n: usize,
        rng: &mut Xoshiro256PlusPlus,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (random(m * k, rng), random(k * n, rng), random(n, rng))
    }

    /// The obviously-correct triple loop, in f64.
    fn reference(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| a.at(i, p) as f64 * b.at(p, j) as f64)
                    .sum();
            }
        }
        c
    }

    /// Every path against the reference, for row-major and transposed operands, odd sizes that
    /// leave edge tiles in both directions, K spanning several packed blocks, and accumulation.
    #[test]
    fn every_path_matches_the_reference() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let sizes = [
            (1, 1, 1),
            (5, 7, 3),
            (13, 10, 9),
            (37, 65, 300),
            (64, 128, 17),
            (7, 33, 200),
            (1, 128, 300),
            (1, 20, 7),
            (9, 64, 257),
            // Edge panels of whole vectors with no column tail (the conv2 input gradient).
            (13, 288, 64),
            (8, 48, 5),
        ];
        for isa in Isa::supported() {
            for &(m, n, k) in &sizes {
                for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a_data = random(m * k, &mut rng);
                    let b_data = random(k * n, &mut rng);
                    let a = if a_t {
                        MatRef::row_major(&a_data, k, m).t()
                    } else {
                        MatRef::row_major(&a_data, m, k)
                    };
                    let b = if b_t {
                        MatRef::row_major(&b_data, n, k).t()
                    } else {
                        MatRef::row_major(&b_data, k, n)
                    };
                    let expected = reference(a, b);
                    let initial = random(m * n, &mut rng);
                    for accumulate in [false, true] {
                        let mut c = initial.clone();
                        let c_view = MatMut::row_major(&mut c, m, n);
                        gemm_with(isa, c_view, a, b, accumulate.into());
                        for (idx, (&got, &want)) in c.iter().zip(&expected).enumerate() {
                            let want = want + if accumulate { initial[idx] as f64 } else { 0.0 };
                            assert!(
                                (got as f64 - want).abs()
                                    <= 1e-4 * (1.0 + want.abs()) * (k as f64).sqrt(),
                                "{isa:?} m={m} n={n} k={k} a_t={a_t} b_t={b_t} acc={accumulate} \
                                 at {idx}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A convolution's patches read straight from the image give the same product, bit for
    /// bit, as the same patches copied into a matrix, on every path: strides, pixel ranges that
    /// start and end mid-row, single rows, `K · K · C` over one block (a block starting inside
    /// a kernel row), and every tile width.
    #[test]
    fn patches_equal_the_copied_patch_matrix() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
        // (height, width, channels, kernel, stride, pixels, filters)
        let cases = [
            (7, 9, 3, 3, 2, 1..11, 17),
            (12, 11, 12, 5, 1, 0..56, 70),
            (12, 11, 12, 5, 1, 9..30, 5),
            (26, 26, 32, 3, 1, 120..312, 64),
            (5, 5, 1, 2, 1, 3..4, 33),
            (6, 6, 2, 6, 1, 0..1, 16),
        ];
        for isa in Isa::supported() {
            for (h, w, channels, kernel, stride, pixels, n) in cases.clone() {
                let image = random(h * w * channels, &mut rng);
                let (b_data, bias) = (
                    random(kernel * kernel * channels * n, &mut rng),
                    random(n, &mut rng),
                );
                let out_w = (w - kernel) / stride + 1;
                let mut copied = Vec::new();
                for pixel in pixels.clone() {
                    let (oh, ow) = (pixel / out_w, pixel % out_w);
                    for kh in 0..kernel {
                        for kw in 0..kernel {
                            let at = ((oh * stride + kh) * w + ow * stride + kw) * channels;
                            copied.extend_from_slice(&image[at..at + channels]);
                        }
                    }
                }
                let (m, k) = (pixels.len(), kernel * kernel * channels);
                let patches = Patches::new(&image, [h, w, channels], kernel, stride, pixels);
                assert_eq!((patches.rows(), patches.cols()), (m, k));
                let b = MatRef::row_major(&b_data, k, n);
                let epilogue = Epilogue {
                    accumulate: false,
                    scale: None,
                    bias: Some(&bias),
                    activation: ActivationKind::Relu,
                };
                let mut want = vec![0.0; m * n];
                gemm_with(
                    isa,
                    MatMut::row_major(&mut want, m, n),
                    MatRef::row_major(&copied, m, k),
                    b,
                    epilogue,
                );
                let mut got = vec![f32::NAN; m * n];
                gemm_lhs(
                    isa,
                    MatMut::row_major(&mut got, m, n),
                    Lhs::Patches(patches),
                    b,
                    epilogue,
                );
                assert_eq!(
                    got, want,
                    "{isa:?} {h}x{w}x{channels} k{kernel} s{stride} n{n}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn patches_refuse_a_window_larger_than_the_image() {
        Patches::new(&[0.0; 12], [2, 2, 3], 3, 1, 0..1);
    }

    #[test]
    #[should_panic(expected = "of a 2x2 output")]
    fn patches_refuse_pixels_outside_the_output() {
        Patches::new(&[0.0; 27], [3, 3, 3], 2, 1, 2..5);
    }

    /// The epilogue on every path equals the plain product followed by the bias and the
    /// activation, bit for bit, at sizes with edge tiles, several blocks of K and k = 0.
    #[test]
    fn epilogue_equals_bias_then_activation() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let activations = [
            ActivationKind::Identity,
            ActivationKind::Relu,
            ActivationKind::LeakyRelu(0.2),
            ActivationKind::Sigmoid,
            ActivationKind::Tanh,
        ];
        for isa in Isa::supported() {
            for &(m, n, k) in &[
                (5, 7, 3),
                (13, 70, 300),
                (1, 128, 9),
                (12, 32, 0),
                (7, 64, 129),
            ] {
                let (a_data, b_data, bias) = random_operands(m, k, n, &mut rng);
                let (a, b) = (
                    MatRef::row_major(&a_data, m, k),
                    MatRef::row_major(&b_data, k, n),
                );
                for activation in activations {
                    for accumulate in [false, true] {
                        let initial = random(m * n, &mut rng);
                        let mut want = initial.clone();
                        if !accumulate {
                            for row in want.chunks_mut(n) {
                                row.copy_from_slice(&bias);
                            }
                        }
                        let c_view = MatMut::row_major(&mut want, m, n);
                        gemm_with(isa, c_view, a, b, true.into());
                        if accumulate {
                            for row in want.chunks_mut(n) {
                                for (value, bias) in row.iter_mut().zip(&bias) {
                                    *value += bias;
                                }
                            }
                        }
                        want.iter_mut().for_each(|v| *v = activation.apply(*v));
                        let mut got = initial.clone();
                        let epilogue = Epilogue {
                            accumulate,
                            scale: None,
                            bias: Some(&bias),
                            activation,
                        };
                        gemm_with(isa, MatMut::row_major(&mut got, m, n), a, b, epilogue);
                        let what = format!("{isa:?} {m}x{n}x{k} {activation:?} acc={accumulate}");
                        if accumulate {
                            // `C + AB + bias` is summed in another order than the reference.
                            crate::reference::assert_close(&what, &got, &want, 1e-5);
                        } else {
                            assert_eq!(got, want, "{what}");
                        }
                    }
                }
            }
        }
    }

    /// A scale in the epilogue multiplies the product's columns, not `C`'s old values nor the
    /// bias, on every path: edge tiles, several blocks of `K`, `k = 0`, a product split along
    /// `K` or by column panels.
    #[test]
    fn epilogue_scales_the_product() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(17);
        for isa in Isa::supported() {
            for &(m, n, k) in &[
                (5, 7, 3),
                (13, 70, 300),
                (12, 32, 0),
                (7, 64, 2100),
                (1, 1024, 600),
            ] {
                let (a_data, b_data, bias) = random_operands(m, k, n, &mut rng);
                let scale = random(n, &mut rng);
                let (a, b) = (
                    MatRef::row_major(&a_data, m, k),
                    MatRef::row_major(&b_data, k, n),
                );
                for accumulate in [false, true] {
                    let initial = random(m * n, &mut rng);
                    let mut product = vec![0.0; m * n];
                    gemm_with(
                        isa,
                        MatMut::row_major(&mut product, m, n),
                        a,
                        b,
                        false.into(),
                    );
                    let want: Vec<f32> = product
                        .iter()
                        .zip(&initial)
                        .enumerate()
                        .map(|(at, (&product, &old))| {
                            let j = at % n;
                            let old = if accumulate { old } else { 0.0 };
                            (old + product * scale[j] + bias[j]).max(0.0)
                        })
                        .collect();
                    let epilogue = Epilogue {
                        accumulate,
                        scale: Some(&scale),
                        bias: Some(&bias),
                        activation: ActivationKind::Relu,
                    };
                    let what = format!("{isa:?} {m}x{n}x{k} acc={accumulate}");
                    let mut got = initial.clone();
                    gemm_with(isa, MatMut::row_major(&mut got, m, n), a, b, epilogue);
                    crate::reference::assert_close(&what, &got, &want, 1e-5);
                    if isa == Isa::active() {
                        let mut parallel = initial.clone();
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build();
                        pool.expect("a pool").install(|| {
                            gemm_parallel(MatMut::row_major(&mut parallel, m, n), a, b, epilogue)
                        });
                        crate::reference::assert_close(&what, &parallel, &want, 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn copy_to_writes_any_view_row_major() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let data = random(37 * 19, &mut rng);
        for view in [
            MatRef::row_major(&data, 37, 19),
            MatRef::row_major(&data, 37, 19).t(),
        ] {
            let mut out = vec![f32::NAN; view.rows() * view.cols()];
            view.copy_to(&mut out);
            for i in 0..view.rows() {
                for j in 0..view.cols() {
                    assert_eq!(out[i * view.cols() + j], view.at(i, j), "({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn paths_agree_with_each_other() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
        let (m, n, k) = (50, 64, 288);
        let a_data = random(m * k, &mut rng);
        let b_data = random(k * n, &mut rng);
        let run = |isa| {
            let mut c = vec![0.0; m * n];
            gemm_with(
                isa,
                MatMut::row_major(&mut c, m, n),
                MatRef::row_major(&a_data, m, k),
                MatRef::row_major(&b_data, k, n),
                Epilogue::default(),
            );
            c
        };
        let portable = run(Isa::Portable);
        for isa in Isa::supported() {
            for (x, y) in run(isa).iter().zip(&portable) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{isa:?}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn parallel_split_matches_single_thread() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let (m, n, k) = (300, 128, 2000);
        let a_data = random(m * k, &mut rng);
        let b_data = random(k * n, &mut rng);
        let a = MatRef::row_major(&a_data, m, k);
        let b = MatRef::row_major(&b_data, k, n);
        let mut single = vec![0.0; m * n];
        let mut parallel = vec![0.0; m * n];
        gemm(MatMut::row_major(&mut single, m, n), a, b, false);
        gemm_parallel(MatMut::row_major(&mut parallel, m, n), a, b, false);
        assert_eq!(single, parallel);
    }

    /// Few rows and a deep `K`: split along `K`, the same bits on one thread and on three, and
    /// the reference's values, bias and activation included.
    #[test]
    fn split_along_k_is_thread_count_and_part_order_independent() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(10);
        for (m, k, n) in [(1, 9216, 128), (5, 3000, 70), (31, 1100, 10)] {
            assert!(k_parts(m, k, Epilogue::default()).is_some());
            let (a_data, b_data, bias) = random_operands(m, k, n, &mut rng);
            let (a, b) = (
                MatRef::row_major(&a_data, m, k),
                MatRef::row_major(&b_data, k, n),
            );
            let epilogue = Epilogue {
                bias: Some(&bias),
                activation: ActivationKind::Tanh,
                ..Epilogue::default()
            };
            let on_threads = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a pool");
                let mut c = vec![0.0; m * n];
                let mut reversed = vec![0.0; m * n];
                pool.install(|| {
                    gemm_parallel(MatMut::row_major(&mut c, m, n), a, b, epilogue);
                    crate::schedule::reverse_k_part_order();
                    gemm_parallel(MatMut::row_major(&mut reversed, m, n), a, b, epilogue);
                });
                assert_eq!(
                    c, reversed,
                    "{m}x{k}x{n}: the parts' order changed the sums"
                );
                c
            };
            let one = on_threads(1);
            assert_eq!(one, on_threads(3), "{m}x{k}x{n}");
            let product = reference(a, b);
            for (idx, (&got, &want)) in one.iter().zip(&product).enumerate() {
                let want = (want + f64::from(bias[idx % n])).tanh();
                assert!(
                    (f64::from(got) - want).abs() <= 1e-4,
                    "{m}x{k}x{n} at {idx}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "gemm shapes disagree")]
    fn mismatched_shapes_are_rejected() {
        let data = [0.0; 12];
        let mut c = [0.0; 4];
        gemm(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&data, 2, 3),
            MatRef::row_major(&data, 2, 2),
            false,
        );
    }
}
