//! The machine's fused multiply-add ceiling, measured rather than assumed, so every kernel's
//! GFLOP/s can be read as a fraction of what one core can do.
//!
//! The loop keeps enough independent accumulators busy (more than FMA latency × issue width) that
//! nothing but FMA throughput limits it.

use super::Isa;
use super::simd::SimdF32;

/// Independent accumulator chains: 4-cycle latency × 2 FMA ports needs at least 8 in flight;
/// each path uses as many as its registers hold (the portable vector takes two SSE registers).
const AVX512_CHAINS: usize = 24;
const AVX2_CHAINS: usize = 12;
const PORTABLE_CHAINS: usize = 6;

/// Floating-point operations one [`fma_loop`] iteration performs on `isa` (a multiply-add is two).
pub fn flops_per_iteration(isa: Isa) -> u64 {
    let (lanes, chains) = match isa {
        Isa::Avx512 => (16, AVX512_CHAINS),
        Isa::Avx2 => (8, AVX2_CHAINS),
        Isa::Portable => (8, PORTABLE_CHAINS),
    };
    2 * (chains * lanes) as u64
}

/// Runs `iterations` rounds of independent vector FMAs on `isa` and returns the chains'
/// mean, which depends on all of them (so nothing is optimised away) and not on their number.
///
/// # Panics
/// If the CPU does not support `isa`.
pub fn fma_loop(isa: Isa, iterations: u64) -> f32 {
    assert!(isa.is_supported(), "this CPU cannot run the {isa:?} path");
    match isa {
        // SAFETY: support was just checked.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512(iterations) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(iterations) },
        Isa::Portable => unsafe {
            chains::<super::portable::Portable, PORTABLE_CHAINS>(iterations)
        },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("non-x86 paths are never supported"),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512(iterations: u64) -> f32 {
    unsafe { chains::<super::x86_avx512::Avx512, AVX512_CHAINS>(iterations) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(iterations: u64) -> f32 {
    unsafe { chains::<super::x86_avx2::Avx2, AVX2_CHAINS>(iterations) }
}

#[inline(always)]
unsafe fn chains<V: SimdF32, const CHAINS: usize>(iterations: u64) -> f32 {
    unsafe {
        let mut acc = [V::zero(); CHAINS];
        let a = V::splat(std::hint::black_box(0.999_999));
        let b = V::splat(std::hint::black_box(1e-7));
        for _ in 0..iterations {
            for value in &mut acc {
                *value = value.mul_add(a, b);
            }
        }
        let mut total = V::zero();
        for value in acc {
            total = total.add(value);
        }
        let mut lanes = [0.0f32; 16];
        total.store(lanes.as_mut_ptr());
        lanes[0] / CHAINS as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_computes_the_same_recurrence() {
        let results: Vec<f32> = Isa::supported()
            .into_iter()
            .map(|isa| fma_loop(isa, 100))
            .collect();
        for r in &results {
            assert!(
                (r - results[0]).abs() <= 1e-6 * results[0].abs(),
                "{results:?}"
            );
        }
        assert!(results[0] > 0.0);
    }
}
