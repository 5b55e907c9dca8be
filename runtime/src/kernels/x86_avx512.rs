//! AVX-512F vectors: 16 lanes, 32 registers.

use std::arch::x86_64::*;

use super::gemm::{GemmArgs, gemm_with_tiles};
use super::simd::{SimdF32, VectorKernel};

/// Sixteen `f32` lanes in a 512-bit register.
#[derive(Clone, Copy)]
pub struct Avx512(__m512);

// SAFETY: only reached through `gemm`, which the dispatcher calls when AVX-512F is present.
unsafe impl SimdF32 for Avx512 {
    const LANES: usize = 16;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> Self {
        Avx512(_mm512_setzero_ps())
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(x: f32) -> Self {
        Avx512(_mm512_set1_ps(x))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(ptr: *const f32) -> Self {
        Avx512(unsafe { _mm512_loadu_ps(ptr) })
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(self, ptr: *mut f32) {
        unsafe { _mm512_storeu_ps(ptr, self.0) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_add(self, b: Self, acc: Self) -> Self {
        Avx512(_mm512_fmadd_ps(self.0, b.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add(self, b: Self) -> Self {
        Avx512(_mm512_add_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul(self, b: Self) -> Self {
        Avx512(_mm512_mul_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sub(self, b: Self) -> Self {
        Avx512(_mm512_sub_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn relu(self) -> Self {
        // MAXPS returns its second operand when either is NaN or both are zero, so `x` passes
        // through for NaN and -0.0, as the scalar `relu` does.
        Avx512(_mm512_max_ps(_mm512_setzero_ps(), self.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn max_keep_nan(self, x: Self) -> Self {
        // MAXPS(x, self) is `x > self ? x : self` (its second operand when either is NaN); a NaN
        // `x` is then put back.
        let larger = _mm512_max_ps(x.0, self.0);
        let x_is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x.0, x.0);
        Avx512(_mm512_mask_mov_ps(larger, x_is_nan, x.0))
    }
}

/// Runs a [`VectorKernel`] with AVX-512 vectors.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run<K: VectorKernel>(kernel: K) -> K::Output {
    unsafe { kernel.run::<Avx512>() }
}

/// The GEMM on the AVX-512 path. The tile is chosen by the output width: 6x64 (24 accumulators,
/// 4 B vectors, 1 broadcast: 29 of the 32 registers) for wide outputs such as conv(64) or
/// dense(128); 8x32 for 17 to 32 columns (16 accumulators: LLVM loads a tile's broadcasts
/// ahead of its FMAs, and the 24 accumulators of a 12x32 tile with 12 broadcasts and 2 B
/// vectors spilled), or 12x32 when at most 12 rows fit one tile (a weight gradient's
/// `K · K · C` rows); 12x16 for narrower ones such as dense(10). A wide
/// output whose last 64-column panel would be at most half full (the 288 columns of the conv2
/// input gradient) finishes with 12x32 tiles instead. A single row (batch-1 inference) uses
/// one-row tiles, so no work is spent on rows that do not exist.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm(mut args: GemmArgs<'_>) {
    unsafe {
        let (m, n) = (args.m(), args.n());
        match (m, n) {
            (1, 33..) => gemm_with_tiles::<Avx512, 1, 4>(args),
            (1, _) => gemm_with_tiles::<Avx512, 1, 2>(args),
            (_, 65..) if (1..=32).contains(&(n % 64)) => {
                let wide = n - n % 64;
                gemm_with_tiles::<Avx512, 6, 4>(args.columns(0, wide));
                gemm_with_tiles::<Avx512, 12, 2>(args.columns(wide, n - wide));
            }
            (_, 33..) => gemm_with_tiles::<Avx512, 6, 4>(args),
            (..=12, 17..=32) => gemm_with_tiles::<Avx512, 12, 2>(args),
            (_, 17..=32) => gemm_with_tiles::<Avx512, 8, 2>(args),
            _ => gemm_with_tiles::<Avx512, 12, 1>(args),
        }
    }
}
