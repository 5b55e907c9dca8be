//! The AVX-512 VNNI int8 path: one `vpdpbusd` multiplies a group of four bytes of a row of `A`
//! (broadcast to every lane) by a panel's group of `B` and adds each lane's four products to
//! its sum. A tile is 8 rows by 2 panels: 16 sums, 2 panel loads and 8 broadcasts per group.

use std::arch::x86_64::*;

use super::{DotPath, LANES, TileArgs, dot_chains, gemm_tiles};

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
