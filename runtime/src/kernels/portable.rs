//! The portable fallback vector: eight `f32`s in an array, which the compiler maps onto
//! whatever the baseline target has (two SSE2 registers on x86-64).

use super::gemm::{GemmArgs, gemm_with_tiles};
use super::simd::{SimdF32, VectorKernel};

/// Eight lanes of plain `f32` arithmetic.
#[derive(Clone, Copy)]
pub struct Portable([f32; 8]);

// SAFETY: plain Rust, valid on every CPU; pointer validity is the caller's contract.
unsafe impl SimdF32 for Portable {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable floats at `ptr`.
        Portable(unsafe { ptr.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32) {
        // SAFETY: the caller guarantees 8 writable floats at `ptr`.
        unsafe { ptr.cast::<[f32; 8]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, acc: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] + acc.0[i]))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i]))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] - b.0[i]))
    }
    #[inline(always)]
    unsafe fn relu(self) -> Self {
        Portable(self.0.map(super::elementwise::relu))
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, x: Self) -> Self {
        Portable(std::array::from_fn(|i| {
            super::elementwise::max_keep_nan(self.0[i], x.0[i])
        }))
    }
}

/// Runs a [`VectorKernel`] with the portable vector.
pub(super) fn run<K: VectorKernel>(kernel: K) -> K::Output {
    // SAFETY: the portable vector is valid on every CPU.
    unsafe { kernel.run::<Portable>() }
}

/// The GEMM on the portable path: 4x8 tiles (16 SSE registers hold them with room to spare).
pub(super) fn gemm(args: GemmArgs<'_>) {
    // SAFETY: the portable vector is valid on every CPU.
    unsafe { gemm_with_tiles::<Portable, 4, 1>(args) }
}
