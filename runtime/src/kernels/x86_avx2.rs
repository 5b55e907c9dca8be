//! AVX2 + FMA vectors: 8 lanes, 16 registers.

use std::arch::x86_64::*;

use super::gemm::{GemmArgs, gemm_with_tiles};
use super::simd::{SimdF32, VectorKernel};

/// Eight `f32` lanes in a 256-bit register.
#[derive(Clone, Copy)]
pub struct Avx2(__m256);

// SAFETY: only reached through `gemm`, which the dispatcher calls when AVX2 and FMA are present.
unsafe impl SimdF32 for Avx2 {
    const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> Self {
        Avx2(_mm256_setzero_ps())
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(x: f32) -> Self {
        Avx2(_mm256_set1_ps(x))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(ptr: *const f32) -> Self {
        Avx2(unsafe { _mm256_loadu_ps(ptr) })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(self, ptr: *mut f32) {
        unsafe { _mm256_storeu_ps(ptr, self.0) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_add(self, b: Self, acc: Self) -> Self {
        Avx2(_mm256_fmadd_ps(self.0, b.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add(self, b: Self) -> Self {
        Avx2(_mm256_add_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul(self, b: Self) -> Self {
        Avx2(_mm256_mul_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sub(self, b: Self) -> Self {
        Avx2(_mm256_sub_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn relu(self) -> Self {
        // MAXPS returns its second operand when either is NaN or both are zero, so `x` passes
        // through for NaN and -0.0, as the scalar `relu` does.
        Avx2(_mm256_max_ps(_mm256_setzero_ps(), self.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_keep_nan(self, x: Self) -> Self {
        // MAXPS(x, self) is `x > self ? x : self` (its second operand when either is NaN); a NaN
        // `x` is then put back.
        let larger = _mm256_max_ps(x.0, self.0);
        let x_is_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x.0, x.0);
        Avx2(_mm256_blendv_ps(larger, x.0, x_is_nan))
    }
}

/// Runs a [`VectorKernel`] with AVX2 vectors.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run<K: VectorKernel>(kernel: K) -> K::Output {
    unsafe { kernel.run::<Avx2>() }
}

/// The GEMM on the AVX2 path: 6x16 tiles (12 accumulators, 2 B vectors, 1 broadcast) when the
/// output is wider than one vector, 8x8 otherwise, and one-row tiles for a single row.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm(args: GemmArgs<'_>) {
    unsafe {
        match (args.m(), args.n()) {
            (1, _) => gemm_with_tiles::<Avx2, 1, 2>(args),
            (_, 9..) => gemm_with_tiles::<Avx2, 6, 2>(args),
            _ => gemm_with_tiles::<Avx2, 8, 1>(args),
        }
    }
}
