//! Integer matrix multiplication for int8 inference: `C = A·B` with `A` unsigned 8-bit values
//! (quantized activations, row-major), `B` signed 8-bit weights packed once into
//! [`PackedWeights`], sums exact in `i32`, and an epilogue ([`Int8Output`]) that, as each
//! register tile is stored, either requantizes every sum to an unsigned 8-bit value (with its
//! column's fixed-point multiplier, the output's zero point and a lower clamp that is ReLU) or
//! scales it to `f32`.
//!
//! The packed layout is the same on every path: `B` in panels of [`LANES`] columns, each panel
//! in groups of [`GROUP`] consecutive rows, a group's 64 bytes holding the four values of
//! column 0, then column 1, and so on: exactly what one AVX-512 VNNI `vpdpbusd` multiplies by
//! four broadcast bytes of a row of `A`. Rows of `A` and `B` beyond `K` up to a whole group are
//! zero in `B`, so whatever `A` holds there adds nothing.
//!
//! A 2x2 max pooling after a convolution can run in the epilogue: with each pooling window's
//! four pixels consecutive rows of `A`, the output row of a window is the largest of its
//! rows, column by column ([`Int8Output::U8`]'s `max_of`). Requantization never decreases, so
//! the byte of the largest sum is the largest byte: the pooled bytes are exactly those a
//! pooling of the requantized bytes makes, without their writing and reading.
//!
//! Each path ([`Int8Isa`]) is one implementation of `DotPath` in its own file, and one
//! generic tile loop (`gemm_tiles`) compiled for each. Integer sums are exact, and the epilogue
//! is the same integer arithmetic ([`Requantizer::apply`]) on every path, so every path gives
//! bit-identical results; the tests check each against the plain reference ([`gemm_reference`]).

mod portable;
mod quantize;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_vnni;

use std::ops::Range;

use crate::context::Isa;

pub use quantize::{quantize, quantize_value, quantize_with};

/// Columns of a packed panel: one 512-bit vector of `i32` sums.
pub const LANES: usize = 16;
/// Rows of `B` (values of one row of `A`) that one step of a lane multiplies and adds.
pub const GROUP: usize = 4;
/// Bytes of one group of one panel.
const GROUP_BYTES: usize = LANES * GROUP;
/// Rows of the product a 2x2 max pooling in the epilogue makes one output row of.
pub const POOLED_ROWS: usize = 4;

/// The instruction-set path of the int8 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Isa {
    /// AVX-512 VNNI: `vpdpbusd` multiplies 64 byte pairs and adds them in fours to 16 sums.
    Avx512Vnni,
    /// AVX2: bytes widened to 16 bits and multiplied in pairs by `vpmaddwd`. (`vpmaddubsw`
    /// would take the bytes as they are, but its 16-bit pair sums saturate: 255·127·2 > 32,767.)
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Int8Isa {
    /// Every path, fastest first.
    pub const ALL: [Int8Isa; 3] = [Int8Isa::Avx512Vnni, Int8Isa::Avx2, Int8Isa::Portable];

    /// The path's name, for tables and test output.
    pub fn name(self) -> &'static str {
        match self {
            Int8Isa::Avx512Vnni => "avx512-vnni",
            Int8Isa::Avx2 => "avx2",
            Int8Isa::Portable => "portable",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            Int8Isa::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The path for the f32 kernels' path `isa`: the fastest int8 path that needs no more of
    /// the CPU than `isa` does (so `CONSTNET_ISA=avx2` runs the AVX2 int8 path).
    pub fn for_isa(isa: Isa) -> Int8Isa {
        let allowed: &[Int8Isa] = match isa {
            Isa::Avx512 => &Int8Isa::ALL,
            Isa::Avx2 => &[Int8Isa::Avx2, Int8Isa::Portable],
            Isa::Portable => &[Int8Isa::Portable],
        };
        let supported = allowed.iter().copied().find(|path| path.is_supported());
        supported.unwrap_or(Int8Isa::Portable)
    }

    /// The path int8 kernels take on this thread ([`Isa::active`]'s).
    pub fn active() -> Int8Isa {
        Int8Isa::for_isa(Isa::active())
    }
}

/// Signed 8-bit weights `K × N`, packed into panels of [`LANES`] columns and groups of
/// [`GROUP`] rows (the layout the module documentation describes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedWeights {
    data: Vec<i8>,
    k: usize,
    n: usize,
}

impl PackedWeights {
    /// Packs `weights`, row-major `k × n`.
    ///
    /// # Panics
    /// If `weights` does not hold `k · n` values.
    pub fn pack(weights: &[i8], k: usize, n: usize) -> Self {
        assert_eq!(weights.len(), k * n, "a {k}x{n} weight matrix");
        let mut packed = PackedWeights {
            data: Vec::new(),
            k,
            n,
        };
        packed.data = vec![0; packed.panels() * packed.panel_bytes()];
        for (row, values) in weights.chunks(n.max(1)).enumerate() {
            for (col, &value) in values.iter().enumerate() {
                let at = packed.index(row, col);
                packed.data[at] = value;
            }
        }
        packed
    }

    /// Rows (`K`).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns (`N`).
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Panels of [`LANES`] columns, the last zero-padded.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(LANES)
    }

    /// Groups of [`GROUP`] rows, the last zero-padded: `A`'s rows hold at least this many
    /// groups of values.
    pub fn groups(&self) -> usize {
        self.k.div_ceil(GROUP)
    }

    /// `K` rounded up to a whole group: the least row stride of `A`.
    pub fn padded_rows(&self) -> usize {
        self.groups() * GROUP
    }

    /// Bytes of one panel.
    fn panel_bytes(&self) -> usize {
        self.groups() * GROUP_BYTES
    }

    /// Where `(row, col)` is kept.
    fn index(&self, row: usize, col: usize) -> usize {
        let (panel, lane) = (col / LANES, col % LANES);
        let (group, step) = (row / GROUP, row % GROUP);
        panel * self.panel_bytes() + group * GROUP_BYTES + lane * GROUP + step
    }

    /// The weight at `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> i8 {
        self.data[self.index(row, col)]
    }

    /// The sum of each column, padded with zeros to whole panels (what a zero point of `A`
    /// takes off each sum).
    pub fn column_sums(&self) -> Vec<i32> {
        let mut sums = vec![0i32; self.panels() * LANES];
        for (col, sum) in sums.iter_mut().enumerate().take(self.n) {
            *sum = (0..self.k).map(|row| i32::from(self.get(row, col))).sum();
        }
        sums
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[i8] {
        &self.data
    }
}

/// A fixed-point multiplier: `x ↦ round(x · multiplier / 2^shift)`, halves rounded up, in exact
/// integer arithmetic. It stands for a real scale in (0, 2^30), to about 31 significant bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requantizer {
    /// In [2^30, 2^31) for scales above 2^−32; smaller for the rest.
    pub multiplier: i32,
    /// Between 1 and 62.
    pub shift: u32,
}

impl Requantizer {
    /// The multiplier nearest `scale`.
    ///
    /// # Panics
    /// If `scale` is not a positive number below 2^30 (the caller's range check).
    pub fn from_scale(scale: f64) -> Self {
        assert!(
            scale > 0.0 && scale < (1u64 << 30) as f64,
            "a requantization scale of {scale}"
        );
        // scale = mantissa · 2^exponent with mantissa in [0.5, 1).
        let exponent = scale.log2().floor() as i32 + 1;
        let shift = (31 - exponent).clamp(1, 62) as u32;
        let multiplier = (scale * (1u64 << shift) as f64).round();
        let (multiplier, shift) = if multiplier >= (1u64 << 31) as f64 {
            // A mantissa that rounded up to 1.
            ((multiplier / 2.0).round(), shift - 1)
        } else {
            (multiplier, shift)
        };
        Requantizer {
            multiplier: multiplier as i32,
            shift,
        }
    }

    /// The real scale it stands for.
    pub fn scale(self) -> f64 {
        f64::from(self.multiplier) / (1u64 << self.shift) as f64
    }

    /// `round(x · scale)`, halves rounded up. `|x| < 2^31` and `multiplier < 2^31` keep the
    /// product and its rounding inside `i64`.
    #[inline(always)]
    pub fn apply(self, x: i64) -> i64 {
        (x * i64::from(self.multiplier) + (1i64 << (self.shift - 1))) >> self.shift
    }
}

/// How an op's sums become its `u8` output: `q = clamp(z + R_j(sum + offset_j), low, 255)`,
/// `R_j` column `j`'s [`Requantizer`]. `low` is `z` for a fused ReLU (`q ≥ z` is a value of at
/// least 0), else 0. The per-column vectors are padded to whole panels, and kept apart (not as
/// a vector of [`Requantizer`]s) so the epilogue reads each as a vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Requantization {
    /// Added to each column's sum first: the bias in sum units, less the input zero point times
    /// the column's weight sum. `|sum + offset| < 2^31` is the caller's to keep.
    offset: Vec<i32>,
    /// Each column's [`Requantizer::multiplier`], widened to the 64 bits it is multiplied in.
    multiplier: Vec<i64>,
    /// Each column's [`Requantizer::shift`], as a 64-bit shift count.
    shift: Vec<u64>,
    /// Each column's rounding term, `2^(shift − 1)`.
    rounding: Vec<i64>,
    /// The output's zero point.
    zero_point: i32,
    /// The lowest output value.
    low: i32,
    /// Whether `low` is the zero point for a fused ReLU.
    relu: bool,
}

impl Requantization {
    /// The requantization of columns with `offset`s and `requantizer`s (as many, a whole
    /// number of panels), to an output of zero point `zero_point`, clamped below at it when
    /// `relu`.
    ///
    /// # Panics
    /// If the lengths differ or are not whole panels.
    pub fn new(offset: Vec<i32>, requantizer: &[Requantizer], zero_point: u8, relu: bool) -> Self {
        assert!(
            offset.len() == requantizer.len() && offset.len().is_multiple_of(LANES),
            "whole panels of columns"
        );
        let zero_point = i32::from(zero_point);
        Requantization {
            offset,
            multiplier: requantizer
                .iter()
                .map(|r| i64::from(r.multiplier))
                .collect(),
            shift: requantizer.iter().map(|r| u64::from(r.shift)).collect(),
            rounding: requantizer.iter().map(|r| 1i64 << (r.shift - 1)).collect(),
            zero_point,
            low: if relu { zero_point } else { 0 },
            relu,
        }
    }

    /// Whether the output is clamped at its zero point: a fused ReLU.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Column `col`'s output for the sum `sum`: the definition every path's epilogue keeps.
    pub fn output(&self, col: usize, sum: i32) -> u8 {
        let requantizer = Requantizer {
            multiplier: self.multiplier[col] as i32,
            shift: self.shift[col] as u32,
        };
        let q = requantizer.apply(i64::from(sum) + i64::from(self.offset[col]));
        (q + i64::from(self.zero_point)).clamp(i64::from(self.low), 255) as u8
    }

    /// The per-column values of the panel starting at column `col0`, and the output's
    /// bounds less its zero point.
    #[inline(always)]
    fn panel(&self, col0: usize) -> RequantizationPanel<'_> {
        let columns = col0..col0 + LANES;
        RequantizationPanel {
            offset: self.offset[columns.clone()].try_into().expect("a panel"),
            multiplier: self.multiplier[columns.clone()]
                .try_into()
                .expect("a panel"),
            shift: self.shift[columns.clone()].try_into().expect("a panel"),
            rounding: self.rounding[columns].try_into().expect("a panel"),
            zero_point: self.zero_point,
            low: self.low - self.zero_point,
            high: 255 - self.zero_point,
        }
    }

    /// Columns it covers.
    fn columns(&self) -> usize {
        self.offset.len()
    }
}

/// One panel's columns of a [`Requantization`], as an epilogue reads them.
pub(crate) struct RequantizationPanel<'a> {
    pub offset: &'a [i32; LANES],
    pub multiplier: &'a [i64; LANES],
    pub shift: &'a [u64; LANES],
    pub rounding: &'a [i64; LANES],
    pub zero_point: i32,
    /// The lowest output less the zero point.
    pub low: i32,
    /// The highest output (255) less the zero point.
    pub high: i32,
}

impl RequantizationPanel<'_> {
    /// [`Requantization::output`] of one row of the panel's sums, lane by lane, in a loop the
    /// compiler vectorises: the value is clamped before the zero point is added, so it is a
    /// byte when it is narrowed.
    #[inline(always)]
    pub fn apply(&self, sums: &[i32; LANES]) -> [u8; LANES] {
        let mut out = [0u8; LANES];
        for lane in 0..LANES {
            let x = i64::from(sums[lane].wrapping_add(self.offset[lane]));
            let q = (x * self.multiplier[lane] + self.rounding[lane]) >> self.shift[lane];
            let q = q.clamp(i64::from(self.low), i64::from(self.high)) as i32;
            out[lane] = (q + self.zero_point) as u8;
        }
        out
    }
}

/// How an op's `f32` output is made from its sums: `y_j = (sum + offset_j) · scale_j`. The
/// vectors are padded to whole panels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dequantization {
    /// Added to each column's sum first, as in a [`Requantization`].
    pub offset: Vec<i32>,
    /// Input scale × weight scale, per column.
    pub scale: Vec<f32>,
}

impl Dequantization {
    /// Column `col`'s output for the sum `sum`.
    pub fn output(&self, col: usize, sum: i32) -> f32 {
        sum.wrapping_add(self.offset[col]) as f32 * self.scale[col]
    }

    /// [`Dequantization::output`] of one panel's row of sums, starting at column `col0`.
    #[inline(always)]
    fn panel(&self, col0: usize, sums: &[i32; LANES]) -> [f32; LANES] {
        let offset: &[i32; LANES] = self.offset[col0..col0 + LANES].try_into().expect("a panel");
        let scale: &[f32; LANES] = self.scale[col0..col0 + LANES].try_into().expect("a panel");
        let mut out = [0.0; LANES];
        for lane in 0..LANES {
            out[lane] = sums[lane].wrapping_add(offset[lane]) as f32 * scale[lane];
        }
        out
    }
}

/// Where a product's rows go, and how.
pub enum Int8Output<'a> {
    /// Requantized to `u8`: row `i` of the product at `out[i · row_stride..]`, `out` starting at
    /// the first column of the product's panels.
    U8 {
        /// The output rows.
        out: &'a mut [u8],
        /// Values between the starts of two rows.
        row_stride: usize,
        /// How sums become values.
        requantization: &'a Requantization,
        /// Consecutive rows of the product each output row is the largest of, column by
        /// column: 1, or [`POOLED_ROWS`] for a 2x2 max pooling in the epilogue (the product's
        /// rows a whole number of windows).
        max_of: usize,
    },
    /// Scaled to `f32`, laid out as [`Int8Output::U8`].
    F32 {
        /// The output rows.
        out: &'a mut [f32],
        /// Values between the starts of two rows.
        row_stride: usize,
        /// How sums become values.
        dequantization: &'a Dequantization,
    },
}

impl Int8Output<'_> {
    /// Rows of the product each output row is the largest of.
    fn max_of(&self) -> usize {
        match self {
            Int8Output::U8 { max_of, .. } => *max_of,
            Int8Output::F32 { .. } => 1,
        }
    }

    /// Checks that the output holds the rows a product of `rows` rows makes, of `cols` values
    /// at its row stride, and its epilogue values for all `padded_cols` columns of the
    /// weights' panels.
    ///
    /// # Panics
    /// If it does not.
    fn check(&self, rows: usize, cols: usize, padded_cols: usize) {
        let max_of = self.max_of();
        assert!(
            (max_of == 1 || max_of == POOLED_ROWS) && rows.is_multiple_of(max_of),
            "{rows} rows pooled in {max_of}s"
        );
        let rows = rows / max_of;
        let (len, stride, columns) = match self {
            Int8Output::U8 {
                out,
                row_stride,
                requantization,
                ..
            } => (out.len(), *row_stride, requantization.columns()),
            Int8Output::F32 {
                out,
                row_stride,
                dequantization,
            } => (out.len(), *row_stride, dequantization.offset.len()),
        };
        assert!(columns >= padded_cols, "per-column values for every panel");
        if rows > 0 {
            assert!(
                (rows - 1) * stride + cols <= len && cols <= stride,
                "{rows} output rows of stride {stride} need {} values, the output has {len}",
                (rows - 1) * stride + cols
            );
        }
    }
}

/// `A` as the product reads it: a matrix whose rows are [`PackedWeights::padded_rows`] bytes
/// each, or a convolution's windows read in place from the image ([`Int8Lhs::windows`]).
#[derive(Clone, Copy)]
pub struct Int8Lhs<'a> {
    data: &'a [u8],
    rows: usize,
    starts: RowStarts<'a>,
    /// Runs of bytes each row is made of: 1 for a matrix, a kernel's rows for windows.
    segments: usize,
    /// Bytes between the starts of two runs of a row.
    segment_stride: usize,
}

/// Where each row of an [`Int8Lhs`] starts.
#[derive(Clone, Copy)]
enum RowStarts<'a> {
    /// Row `i` at `i · stride`.
    Strided(usize),
    /// Row `i` at `starts[i]`.
    Listed(&'a [usize]),
}

impl<'a> Int8Lhs<'a> {
    /// `rows` rows of `data`, `row_stride` bytes apart.
    pub fn strided(data: &'a [u8], rows: usize, row_stride: usize) -> Self {
        Int8Lhs {
            data,
            rows,
            starts: RowStarts::Strided(row_stride),
            segments: 1,
            segment_stride: 0,
        }
    }

    /// A convolution's windows read in place from `image`, one row per window: row `i` is
    /// `segments` runs (the kernel's rows) of `K / segments` bytes, `segment_stride` bytes
    /// apart (an image row), the first at `starts[i]`. Each run must be whole groups.
    pub fn windows(
        image: &'a [u8],
        starts: &'a [usize],
        segments: usize,
        segment_stride: usize,
    ) -> Self {
        Int8Lhs {
            data: image,
            rows: starts.len(),
            starts: RowStarts::Listed(starts),
            segments,
            segment_stride,
        }
    }

    /// Rows to multiply.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Where row `row` starts in the data.
    #[inline(always)]
    fn start(&self, row: usize) -> usize {
        match self.starts {
            RowStarts::Strided(stride) => row * stride,
            RowStarts::Listed(starts) => starts[row],
        }
    }

    /// Checks that every row holds the `k` bytes (whole groups) of `B`'s padded rows.
    ///
    /// # Panics
    /// If one does not.
    fn check(&self, k: usize) {
        let segments = self.segments;
        assert!(
            segments > 0 && k.is_multiple_of(segments * GROUP),
            "rows of {segments} runs of whole groups, {k} bytes in all"
        );
        let run = k / segments;
        let extent = (segments - 1) * self.segment_stride + run;
        let len = self.data.len();
        match self.starts {
            RowStarts::Strided(stride) => {
                assert!(segments > 1 || stride >= k, "rows of A hold {k} values");
                if self.rows > 0 {
                    assert!((self.rows - 1) * stride + extent <= len, "A holds its rows");
                }
            }
            RowStarts::Listed(starts) => assert!(
                starts.iter().all(|&start| start + extent <= len),
                "A holds its rows"
            ),
        }
    }
}

/// `C = A·B` for the columns of panels `panels` of `b`, through `output`'s epilogue (whose rows
/// start at the first of those columns), on this thread's path ([`Int8Isa::active`]).
///
/// # Panics
/// If the shapes do not agree.
pub fn gemm_u8i8(a: Int8Lhs<'_>, b: &PackedWeights, panels: Range<usize>, output: Int8Output<'_>) {
    gemm_u8i8_with(Int8Isa::active(), a, b, panels, output);
}

/// [`gemm_u8i8`] on the path `isa`.
///
/// # Panics
/// If the shapes do not agree, or the CPU does not support `isa`.
pub fn gemm_u8i8_with(
    isa: Int8Isa,
    a: Int8Lhs<'_>,
    b: &PackedWeights,
    panels: Range<usize>,
    output: Int8Output<'_>,
) {
    assert!(isa.is_supported(), "this CPU has no {} path", isa.name());
    assert!(
        panels.end <= b.panels(),
        "panels {panels:?} of {}",
        b.panels()
    );
    a.check(b.padded_rows());
    let cols = (panels.end * LANES)
        .min(b.n)
        .saturating_sub(panels.start * LANES);
    output.check(a.rows, cols, b.panels() * LANES);
    let args = TileArgs {
        a,
        b,
        panels,
        output,
    };
    match isa {
        // SAFETY: the path is supported, and the arguments were checked above.
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx512Vnni => unsafe { x86_avx512_vnni::gemm(args) },
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx2 => unsafe { x86_avx2::gemm(args) },
        Int8Isa::Portable => portable::gemm(args),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("non-x86 paths are never supported"),
    }
}

/// A checked product, for a path's tile loop.
struct TileArgs<'a> {
    a: Int8Lhs<'a>,
    b: &'a PackedWeights,
    panels: Range<usize>,
    output: Int8Output<'a>,
}

/// One instruction set's multiply-add of bytes into `i32` sums: the vectors [`gemm_tiles`]
/// works with.
///
/// # Safety
/// Its functions may be called only when the CPU supports the path, and with pointers to as
/// many readable bytes as they read.
unsafe trait DotPath {
    /// The sums of one panel's [`LANES`] columns, in whatever form the path keeps them.
    type Sums: Copy;
    /// One group of a row of `A`, made ready to multiply a panel's group.
    type Lhs: Copy;
    /// One group of a panel of `B`, made ready to multiply.
    type Rhs: Copy;

    /// Zero sums.
    unsafe fn zero() -> Self::Sums;
    /// The [`GROUP`] bytes of `A` at `a`.
    unsafe fn lhs(a: *const u8) -> Self::Lhs;
    /// The [`GROUP_BYTES`] bytes of `B` at `b`.
    unsafe fn rhs(b: *const i8) -> Self::Rhs;
    /// `sums + a·b`, lane by lane over the group.
    unsafe fn dot(sums: Self::Sums, a: Self::Lhs, b: Self::Rhs) -> Self::Sums;
    /// The sums as 16 integers, column by column.
    unsafe fn to_array(sums: Self::Sums) -> [i32; LANES];
    /// The larger of two rows' sums, column by column.
    unsafe fn max(a: Self::Sums, b: Self::Sums) -> Self::Sums;

    /// One row of a panel's sums requantized to bytes: [`RequantizationPanel::apply`], which a
    /// path may do in its own instructions, giving the same bytes.
    #[inline(always)]
    unsafe fn requantize(sums: Self::Sums, panel: &RequantizationPanel<'_>) -> [u8; LANES] {
        // SAFETY: the caller's.
        panel.apply(&unsafe { Self::to_array(sums) })
    }
}

/// The product of `args` with register tiles of `MR` rows by `NV` panels on path `P`.
///
/// # Safety
/// The CPU supports `P`, and `args` was checked by [`gemm_u8i8_with`].
#[inline(always)]
unsafe fn gemm_tiles<P: DotPath, const MR: usize, const NV: usize>(args: TileArgs<'_>) {
    // SAFETY: the caller's.
    unsafe {
        match args.output.max_of() {
            1 => pooled_tiles::<P, MR, NV, 1>(args),
            _ => pooled_tiles::<P, MR, NV, POOLED_ROWS>(args),
        }
    }
}

/// Rows of the tile that takes the rows left below a path's full tile when that tile is
/// taller: one window of a pooling in the epilogue, and a batch's last rows of a dense layer
/// in four times fewer passes over its weights than rows one at a time.
const SHORT_TILE_ROWS: usize = POOLED_ROWS;

/// [`gemm_tiles`] with each output row the largest of `POOL` rows of the product. Rows go in
/// tiles of `MR`, then of [`SHORT_TILE_ROWS`] (when shorter than `MR`), then one at a time.
///
/// # Safety
/// As [`gemm_tiles`]; `args.output`'s rows are pooled in `POOL`s.
#[inline(always)]
unsafe fn pooled_tiles<P: DotPath, const MR: usize, const NV: usize, const POOL: usize>(
    args: TileArgs<'_>,
) {
    let TileArgs {
        a,
        b,
        panels,
        mut output,
    } = args;
    let mut panel = panels.start;
    while panel < panels.end {
        let wide = panels.end - panel >= NV;
        let mut row = 0;
        while row < a.rows {
            let rest = a.rows - row;
            let rows = if rest >= MR {
                MR
            } else if MR > SHORT_TILE_ROWS && rest >= SHORT_TILE_ROWS {
                SHORT_TILE_ROWS
            } else {
                1
            };
            let at = [row, panel, panels.start];
            // SAFETY: the rows and panels are inside the checked shapes.
            unsafe {
                if rows == MR {
                    tile_panels::<P, MR, NV, POOL>(wide, &a, b, at, &mut output);
                } else if rows == SHORT_TILE_ROWS {
                    tile_panels::<P, SHORT_TILE_ROWS, NV, POOL>(wide, &a, b, at, &mut output);
                } else {
                    tile_panels::<P, 1, NV, POOL>(wide, &a, b, at, &mut output);
                }
            }
            row += rows;
        }
        panel += if wide { NV } else { 1 };
    }
}

/// A tile of `R` rows by `NV` panels when `wide`, by one panel otherwise ([`tile`]).
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn tile_panels<P: DotPath, const R: usize, const NV: usize, const POOL: usize>(
    wide: bool,
    a: &Int8Lhs<'_>,
    b: &PackedWeights,
    at: [usize; 3],
    output: &mut Int8Output<'_>,
) {
    // SAFETY: the caller's.
    unsafe {
        if wide {
            tile::<P, R, NV, POOL>(a, b, at, output);
        } else {
            tile::<P, R, 1, POOL>(a, b, at, output);
        }
    }
}

/// Rows `row..row + R` of the product, panels `panel..panel + V` (`at` is `[row, panel,
/// first_panel]`), summed in registers, then stored through the epilogue (whose rows start at
/// panel `first_panel`), each output row the largest of `POOL` rows.
///
/// # Safety
/// As [`gemm_tiles`]; the rows and panels exist, and a tile of whole windows starts at one.
#[inline(always)]
unsafe fn tile<P: DotPath, const R: usize, const V: usize, const POOL: usize>(
    a: &Int8Lhs<'_>,
    b: &PackedWeights,
    [row, panel, first_panel]: [usize; 3],
    output: &mut Int8Output<'_>,
) {
    // SAFETY: the caller's.
    let sums = unsafe { tile_sums::<P, R, V>(a, b, row, panel) };
    for v in 0..V {
        let col0 = (panel + v) * LANES;
        let (at, cols) = (col0 - first_panel * LANES, (b.n - col0).min(LANES));
        match output {
            Int8Output::U8 {
                out,
                row_stride,
                requantization,
                ..
            } => {
                let panel = requantization.panel(col0);
                let rows: [P::Sums; R] = std::array::from_fn(|r| sums[r][v]);
                let out = &mut out[at..];
                // SAFETY: the caller's.
                unsafe {
                    store_requantized::<P, R, POOL>(&rows, row, &panel, out, *row_stride, cols)
                };
            }
            Int8Output::F32 {
                out,
                row_stride,
                dequantization,
            } => {
                for (r, sums) in sums.iter().enumerate() {
                    // SAFETY: the CPU supports `P`.
                    let values = dequantization.panel(col0, &unsafe { P::to_array(sums[v]) });
                    copy_panel(&mut out[(row + r) * *row_stride + at..], &values, cols);
                }
            }
        }
    }
}

/// The sums of rows `row..row + R` and panels `panel..panel + V` of the product, in registers.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn tile_sums<P: DotPath, const R: usize, const V: usize>(
    a: &Int8Lhs<'_>,
    b: &PackedWeights,
    row: usize,
    panel: usize,
) -> [[P::Sums; V]; R] {
    let panel_bytes = b.panel_bytes();
    let a_rows: [*const u8; R] =
        std::array::from_fn(|r| a.data.as_ptr().wrapping_add(a.start(row + r)));
    let b_panels = b.data.as_ptr().wrapping_add(panel * panel_bytes);
    let segment_groups = b.groups() / a.segments;
    // SAFETY (every pointer below): group `g` of run `s` of rows `row..row + R` lies inside
    // `A` and group `s · segment_groups + g` of panels `panel..panel + V` inside `B`, as the
    // caller checked.
    let mut sums = [[unsafe { P::zero() }; V]; R];
    for segment in 0..a.segments {
        let a_runs = a_rows.map(|row| row.wrapping_add(segment * a.segment_stride));
        let b_groups = b_panels.wrapping_add(segment * segment_groups * GROUP_BYTES);
        for group in 0..segment_groups {
            let rhs: [P::Rhs; V] = std::array::from_fn(|v| unsafe {
                P::rhs(b_groups.add(v * panel_bytes + group * GROUP_BYTES))
            });
            for (sums, run) in sums.iter_mut().zip(a_runs) {
                let lhs = unsafe { P::lhs(run.add(group * GROUP)) };
                for (sum, rhs) in sums.iter_mut().zip(rhs) {
                    *sum = unsafe { P::dot(*sum, lhs, rhs) };
                }
            }
        }
    }
    sums
}

/// Stores one panel's sums of product rows `row..row + R` requantized, `cols` of its columns,
/// each output row (`stride` apart in `out`) the largest of `POOL` rows. A tile of whole
/// pooling windows takes their largest sums in registers and requantizes those; a tile of
/// fewer rows stores a window's first row and takes the largest byte of the others.
///
/// # Safety
/// The CPU supports `P`; a tile of whole windows starts at one.
#[inline(always)]
unsafe fn store_requantized<P: DotPath, const R: usize, const POOL: usize>(
    sums: &[P::Sums; R],
    row: usize,
    panel: &RequantizationPanel<'_>,
    out: &mut [u8],
    stride: usize,
    cols: usize,
) {
    if R.is_multiple_of(POOL) {
        for (window, rows) in sums.chunks_exact(POOL).enumerate() {
            // SAFETY (both): the CPU supports `P`.
            let largest = rows[1..]
                .iter()
                .fold(rows[0], |m, &sums| unsafe { P::max(m, sums) });
            let values = unsafe { P::requantize(largest, panel) };
            copy_panel(&mut out[(row / POOL + window) * stride..], &values, cols);
        }
        return;
    }
    for (r, &sums) in sums.iter().enumerate() {
        // SAFETY: the CPU supports `P`.
        let values = unsafe { P::requantize(sums, panel) };
        let out = &mut out[(row + r) / POOL * stride..];
        if (row + r).is_multiple_of(POOL) {
            copy_panel(out, &values, cols);
        } else {
            max_into_panel(out, &values, cols);
        }
    }
}

/// Copies the first `cols` of a panel's values to the start of `out`: a whole panel as one
/// fixed-size copy (a few vector moves), a last partial one value by value (a copy of unknown
/// length is a call to `memcpy`, costing more than the panel's epilogue).
#[inline(always)]
fn copy_panel<T: Copy>(out: &mut [T], values: &[T; LANES], cols: usize) {
    if cols == LANES {
        out[..LANES].copy_from_slice(values);
    } else {
        out.iter_mut()
            .zip(&values[..cols])
            .for_each(|(o, v)| *o = *v);
    }
}

/// Takes the larger of each of the first `cols` bytes of `out` and of a panel's `values`.
#[inline(always)]
fn max_into_panel(out: &mut [u8], values: &[u8; LANES], cols: usize) {
    out.iter_mut()
        .zip(&values[..cols])
        .for_each(|(o, v)| *o = (*o).max(*v));
}

/// Independent sums [`dot_loop`] keeps in flight: more than `vpdpbusd`'s latency × issue width.
const PEAK_CHAINS: usize = 12;

/// Multiply-adds of bytes one [`dot_loop`] iteration performs (on every path: a panel's group
/// of 64 byte products per sum).
pub fn muls_per_iteration() -> u64 {
    (PEAK_CHAINS * GROUP_BYTES) as u64
}

/// The int8 ceiling of one core: `iterations` rounds of independent multiply-adds of a group
/// of bytes on path `isa`, nothing but their throughput limiting them. Returns a value that
/// depends on every sum, so nothing is optimised away.
///
/// # Panics
/// If the CPU does not support `isa`.
pub fn dot_loop(isa: Int8Isa, iterations: u64) -> i32 {
    assert!(isa.is_supported(), "this CPU has no {} path", isa.name());
    match isa {
        // SAFETY: support was just checked.
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx512Vnni => unsafe { x86_avx512_vnni::dot_loop(iterations) },
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx2 => unsafe { x86_avx2::dot_loop(iterations) },
        Int8Isa::Portable => unsafe { dot_chains::<portable::Portable>(iterations) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("non-x86 paths are never supported"),
    }
}

/// [`dot_loop`] on path `P`.
///
/// # Safety
/// The CPU supports `P`.
#[inline(always)]
unsafe fn dot_chains<P: DotPath>(iterations: u64) -> i32 {
    let bytes: [u8; GROUP_BYTES] = std::array::from_fn(|i| (i % 3) as u8);
    let bytes = std::hint::black_box(bytes);
    // SAFETY (every call): the caller's, and the pointers read within `bytes`.
    unsafe {
        // A different group of `A` for each sum, and `B` read again each round (one load
        // for all the sums), so every product is computed: none can be hoisted or shared.
        let lhs: [P::Lhs; PEAK_CHAINS] = std::array::from_fn(|i| P::lhs(bytes.as_ptr().add(4 * i)));
        let mut sums = [P::zero(); PEAK_CHAINS];
        for _ in 0..iterations {
            let rhs = P::rhs(std::hint::black_box(&bytes).as_ptr().cast());
            for (sum, lhs) in sums.iter_mut().zip(lhs) {
                *sum = P::dot(*sum, lhs, rhs);
            }
        }
        sums.iter()
            .map(|sum| P::to_array(*sum)[0])
            .fold(0, i32::wrapping_add)
    }
}

/// The plain reference: each sum `Σ_k a[i][k] · b[k][j]` in `i32`, for `a` row-major
/// `rows × k` (stride `k`) and `b` row-major `k × n`.
pub fn gemm_reference(a: &[u8], b: &[i8], rows: usize, k: usize, n: usize) -> Vec<i32> {
    let mut sums = vec![0i32; rows * n];
    for i in 0..rows {
        for j in 0..n {
            sums[i * n + j] = (0..k)
                .map(|l| i32::from(a[i * k + l]) * i32::from(b[l * n + j]))
                .sum();
        }
    }
    sums
}

#[cfg(test)]
mod tests;
