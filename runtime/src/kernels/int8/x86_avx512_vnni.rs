//! The AVX-512 VNNI int8 path: one `vpdpbusd` multiplies a group of four bytes of a row of `A`
//! (broadcast to every lane) by a panel's group of `B` and adds each lane's four products to
//! its sum. A tile is 8 rows by 2 panels: 16 sums, 2 panel loads and 8 broadcasts per group.

use std::arch::x86_64::*;

use super::{DotPath, LANES, RequantizationPanel, TileArgs, dot_chains, gemm_tiles};

/// Sixteen `i32` sums in a 512-bit register.
#[derive(Clone, Copy)]
struct Vnni512;

// SAFETY: only reached through `gemm`, which the dispatcher calls when the CPU has AVX-512F,
// AVX-512BW and AVX-512 VNNI.
unsafe impl DotPath for Vnni512 {
    type Sums = __m512i;
    type Lhs = __m512i;
    type Rhs = __m512i;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn zero() -> Self::Sums {
        _mm512_setzero_si512()
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn lhs(a: *const u8) -> Self::Lhs {
        // SAFETY: the caller's: four readable bytes.
        _mm512_set1_epi32(unsafe { a.cast::<i32>().read_unaligned() })
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rhs(b: *const i8) -> Self::Rhs {
        // SAFETY: the caller's: 64 readable bytes.
        unsafe { _mm512_loadu_si512(b.cast()) }
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot(sums: Self::Sums, a: Self::Lhs, b: Self::Rhs) -> Self::Sums {
        _mm512_dpbusd_epi32(sums, a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn to_array(sums: Self::Sums) -> [i32; LANES] {
        // SAFETY: a 512-bit vector is 16 `i32`s.
        unsafe { std::mem::transmute::<__m512i, [i32; LANES]>(sums) }
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn max(a: Self::Sums, b: Self::Sums) -> Self::Sums {
        _mm512_max_epi32(a, b)
    }
    /// [`RequantizationPanel::apply`] in sixteen lanes: each half of the sums widened to
    /// 64 bits, multiplied (`vpmuldq`), rounded and shifted (`vpsravq`), narrowed with
    /// saturation (which the clamp to a byte's range then makes exact), clamped, shifted by the
    /// zero point and packed to bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn requantize(sums: Self::Sums, panel: &RequantizationPanel<'_>) -> [u8; LANES] {
        // SAFETY: every pointer reads a whole array of the panel.
        unsafe {
            let x = _mm512_add_epi32(sums, _mm512_loadu_si512(panel.offset.as_ptr().cast()));
            let half = |x: __m256i, at: usize| {
                let wide = _mm512_cvtepi32_epi64(x);
                let multiplier = _mm512_loadu_si512(panel.multiplier.as_ptr().add(at).cast());
                let rounding = _mm512_loadu_si512(panel.rounding.as_ptr().add(at).cast());
                let shift = _mm512_loadu_si512(panel.shift.as_ptr().add(at).cast());
                let product = _mm512_add_epi64(_mm512_mul_epi32(wide, multiplier), rounding);
                _mm512_cvtsepi64_epi32(_mm512_srav_epi64(product, shift))
            };
            let low = half(_mm512_castsi512_si256(x), 0);
            let high = half(_mm512_extracti64x4_epi64::<1>(x), 8);
            let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high);
            let q = _mm512_max_epi32(q, _mm512_set1_epi32(panel.low));
            let q = _mm512_min_epi32(q, _mm512_set1_epi32(panel.high));
            let q = _mm512_add_epi32(q, _mm512_set1_epi32(panel.zero_point));
            std::mem::transmute::<__m128i, [u8; LANES]>(_mm512_cvtepi32_epi8(q))
        }
    }
}

/// The product on the AVX-512 VNNI path.
///
/// # Safety
/// The CPU supports AVX-512F, AVX-512BW and AVX-512 VNNI; `args` was checked.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm(args: TileArgs<'_>) {
    // SAFETY: the caller's.
    unsafe { gemm_tiles::<Vnni512, 8, 2>(args) }
}

/// [`super::dot_loop`] on this path.
///
/// # Safety
/// The CPU supports the path.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_loop(iterations: u64) -> i32 {
    // SAFETY: the caller's.
    unsafe { dot_chains::<Vnni512>(iterations) }
}

/// [`super::quantize`] on this path: 16 values a step, the last step masked.
///
/// # Safety
/// The CPU supports AVX-512F and AVX-512BW; `out` is as long as `values`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize(values: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let scale = _mm512_set1_ps(scale);
    let zero_point = _mm512_set1_ps(f32::from(zero_point));
    let (high, half) = (_mm512_set1_ps(255.0), _mm512_set1_ps(0.5));
    for start in (0..values.len()).step_by(LANES) {
        let lanes = (values.len() - start).min(LANES);
        let mask = (u32::MAX >> (32 - lanes)) as __mmask16;
        // SAFETY: the mask covers the `lanes` values and bytes from `start`, in both slices.
        unsafe {
            let x = _mm512_maskz_loadu_ps(mask, values.as_ptr().add(start));
            let steps = _mm512_add_ps(_mm512_div_ps(x, scale), zero_point);
            let clamped = _mm512_min_ps(_mm512_max_ps(steps, _mm512_setzero_ps()), high);
            let bytes = _mm512_cvttps_epi32(_mm512_add_ps(clamped, half));
            _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(start).cast(), mask, bytes);
        }
    }
}
