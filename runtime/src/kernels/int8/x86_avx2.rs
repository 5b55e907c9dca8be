//! The AVX2 int8 path. A panel's group (16 columns × 4 bytes) is widened to 16-bit values in
//! four 256-bit registers of 4 columns each, and `vpmaddwd` multiplies them by the row's four
//! bytes (widened, repeated) and adds pairs: each column keeps two partial sums, of its first
//! and its last two products, which are added when the tile is stored. A pair of products is
//! at most 2 · 255 · 127, far inside `i32`, so nothing saturates. A tile is 2 rows by 1 panel.

use std::arch::x86_64::*;

use super::{DotPath, LANES, TileArgs, dot_chains, gemm_tiles, quantize_value};

/// A panel's sums as four registers of 4 columns × 2 partial sums.
#[derive(Clone, Copy)]
struct Avx2;

// SAFETY: only reached through `gemm`, which the dispatcher calls when the CPU has AVX2.
unsafe impl DotPath for Avx2 {
    type Sums = [__m256i; 4];
    type Lhs = __m256i;
    type Rhs = [__m256i; 4];

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn zero() -> Self::Sums {
        [_mm256_setzero_si256(); 4]
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn lhs(a: *const u8) -> Self::Lhs {
        // SAFETY: the caller's: four readable bytes.
        let bytes = unsafe { a.cast::<i32>().read_unaligned() };
        // The four bytes as 16-bit values, repeated in every 64-bit lane.
        let widened = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(bytes));
        _mm256_set1_epi64x(_mm_cvtsi128_si64(widened))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rhs(b: *const i8) -> Self::Rhs {
        // SAFETY: the caller's: 64 readable bytes, read 16 at a time.
        std::array::from_fn(|quarter| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16 * quarter).cast()))
        })
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(sums: Self::Sums, a: Self::Lhs, b: Self::Rhs) -> Self::Sums {
        std::array::from_fn(|q| _mm256_add_epi32(sums[q], _mm256_madd_epi16(a, b[q])))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn to_array(sums: Self::Sums) -> [i32; LANES] {
        // SAFETY: two 256-bit vectors are 16 `i32`s.
        unsafe { std::mem::transmute::<[__m256i; 2], [i32; LANES]>(totals(sums)) }
    }
    /// The larger totals, kept as sums whose second partial sums are zero.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn max(a: Self::Sums, b: Self::Sums) -> Self::Sums {
        let (a, b) = (totals(a), totals(b));
        let larger = [_mm256_max_epi32(a[0], b[0]), _mm256_max_epi32(a[1], b[1])];
        // Each column's total as its first partial sum, zero-extended to 64 bits: a
        // second partial sum of 0.
        let quarters = [
            _mm256_castsi256_si128(larger[0]),
            _mm256_extracti128_si256::<1>(larger[0]),
            _mm256_castsi256_si128(larger[1]),
            _mm256_extracti128_si256::<1>(larger[1]),
        ];
        quarters.map(|quarter| _mm256_cvtepu32_epi64(quarter))
    }
}

/// Each column's two partial sums added: columns 0..8 and 8..16 in order. Register `q` holds
/// columns 4q..4q+4 as [c0 c0' c1 c1' | c2 c2' c3 c3']; adding neighbours of two registers
/// gives [c0 c1 c4 c5 | c2 c3 c6 c7] of their 8 columns, which a lane permutation puts in
/// order.
#[inline]
#[target_feature(enable = "avx2")]
fn totals(sums: [__m256i; 4]) -> [__m256i; 2] {
    let order = |x: __m256i| _mm256_permute4x64_epi64::<0b11_01_10_00>(x);
    [
        order(_mm256_hadd_epi32(sums[0], sums[1])),
        order(_mm256_hadd_epi32(sums[2], sums[3])),
    ]
}

/// The product on the AVX2 path.
///
/// # Safety
/// The CPU supports AVX2; `args` was checked.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm(args: TileArgs<'_>) {
    // SAFETY: the caller's.
    unsafe { gemm_tiles::<Avx2, 2, 1>(args) }
}

/// [`super::dot_loop`] on this path.
///
/// # Safety
/// The CPU supports the path.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_loop(iterations: u64) -> i32 {
    // SAFETY: the caller's.
    unsafe { dot_chains::<Avx2>(iterations) }
}

/// [`super::quantize`] on this path: 8 values a step, the rest one at a time.
///
/// # Safety
/// The CPU supports AVX2; `out` is as long as `values`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize(values: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let (scale_v, zero_v) = (_mm256_set1_ps(scale), _mm256_set1_ps(f32::from(zero_point)));
    let (high, half) = (_mm256_set1_ps(255.0), _mm256_set1_ps(0.5));
    let mut chunks = values.chunks_exact(8);
    for (x, q) in chunks.by_ref().zip(out.chunks_exact_mut(8)) {
        // SAFETY: `x` holds 8 values and `q` 8 bytes.
        unsafe {
            let x = _mm256_loadu_ps(x.as_ptr());
            let steps = _mm256_add_ps(_mm256_div_ps(x, scale_v), zero_v);
            let clamped = _mm256_min_ps(_mm256_max_ps(steps, _mm256_setzero_ps()), high);
            let words = _mm256_cvttps_epi32(_mm256_add_ps(clamped, half));
            let (first, last) = (
                _mm256_castsi256_si128(words),
                _mm256_extracti128_si256(words, 1),
            );
            let bytes = _mm_packus_epi16(_mm_packus_epi32(first, last), _mm_setzero_si128());
            _mm_storel_epi64(q.as_mut_ptr().cast(), bytes);
        }
    }
    let done = values.len() - chunks.remainder().len();
    for (q, &x) in out[done..].iter_mut().zip(chunks.remainder()) {
        *q = quantize_value(x, scale, zero_point);
    }
}
