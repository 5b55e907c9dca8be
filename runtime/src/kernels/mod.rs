//! CPU kernels and the choice of instruction set they run with.
//!
//! Every heavy kernel (the GEMM behind convolutions and dense layers, pooling) is written once,
//! generic over [`simd::SimdF32`], and compiled three times: for AVX-512, for AVX2 with FMA, and for a
//! portable fallback that needs nothing beyond the x86-64 (or any other) baseline. Which one runs
//! is decided at run time from the CPU's features ([`Isa::active`]), so `cargo run --release` is
//! fast without `RUSTFLAGS`. Setting `CONSTNET_ISA=portable|avx2|avx512` forces a path (if the
//! CPU has it); tests use it to check that all paths agree.

pub mod elementwise;
pub mod gemm;
pub mod peak;
mod portable;
pub mod simd;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use crate::aligned::AlignedVec;

/// An instruction-set path of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// 512-bit vectors (AVX-512F): 16 lanes, 32 registers.
    Avx512,
    /// 256-bit vectors with fused multiply-add (AVX2 + FMA): 8 lanes, 16 registers.
    Avx2,
    /// Plain Rust that the compiler vectorises for the baseline target.
    Portable,
}

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `CONSTNET_ISA` accepts for this path.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this CPU can run, fastest first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The path the kernels use: `CONSTNET_ISA` if it names a supported path, otherwise the
    /// fastest supported one. Decided once per process.
    pub fn active() -> Isa {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let requested = std::env::var("CONSTNET_ISA").ok();
            match requested.as_deref().map(Isa::from_name) {
                Some(Some(isa)) if isa.is_supported() => isa,
                Some(_) => {
                    let best = Isa::supported()[0];
                    eprintln!(
                        "constnet: CONSTNET_ISA={} is not a supported path on this CPU \
                         (one of: {}); using {}",
                        requested.unwrap_or_default(),
                        Isa::supported()
                            .iter()
                            .map(|isa| isa.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        best.name()
                    );
                    best
                }
                None => Isa::supported()[0],
            }
        })
    }

    /// The path called `name` (`avx512`, `avx2` or `portable`).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }
}

/// Runs `kernel` on the active instruction-set path ([`Isa::active`]).
pub(crate) fn run_vectorized<K: simd::VectorKernel>(kernel: K) -> K::Output {
    match Isa::active() {
        // SAFETY: the active path is one the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86_avx512::run(kernel) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86_avx2::run(kernel) },
        Isa::Portable => portable::run(kernel),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("non-x86 paths are never supported"),
    }
}

thread_local! {
    /// Scratch buffers of this thread, lent out by [`with_scratch`] and returned after use.
    static SCRATCH_POOL: RefCell<Vec<AlignedVec>> = const { RefCell::new(Vec::new()) };
}

/// Lends `f` a scratch buffer of `len` values (contents unspecified) from a per-thread pool, so
/// kernels that need workspace (im2col patches) allocate it once per thread, not once per call.
/// Calls may nest.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = SCRATCH_POOL.with_borrow_mut(Vec::pop).unwrap_or_default();
    // Buffers only grow, so a smaller request after a larger one neither shrinks nor refills.
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    SCRATCH_POOL.with_borrow_mut(|pool| pool.push(buffer));
    result
}

/// Prepares this thread to run passes of a network whose kernels ask for at most `scratch`
/// values of scratch:
/// - it reserves three nested scratch buffers of `scratch` values (a convolution's transformed
///   filters, a fused op's intermediate, and a kernel's patches or tiles inside it) and room to
///   pack any GEMM panel, so no pass allocates;
/// - it sets the CPU to flush denormal results and inputs to zero (MXCSR's FTZ and DAZ on
///   x86-64, as TensorFlow does on its threads): values below 1.2e-38 become 0. Training on a
///   well-fitted batch otherwise drives optimiser state into denormals, and each operation on a
///   denormal costs the CPU about a hundred cycles.
pub fn prepare_thread(scratch: usize) {
    reserve_thread_scratch(scratch);
    flush_denormals_to_zero();
}

/// The first half of [`prepare_thread`] alone: reserves this thread's scratch for kernels that
/// ask for at most `scratch` values, leaving its floating-point mode as it is.
pub(crate) fn reserve_thread_scratch(scratch: usize) {
    const DEPTH: usize = 3;
    SCRATCH_POOL.with_borrow_mut(|pool| {
        while pool.len() < DEPTH {
            pool.push(AlignedVec::new());
        }
        for buffer in pool.iter_mut().rev().take(DEPTH) {
            buffer.reserve(scratch.saturating_sub(buffer.len()));
        }
    });
    gemm::reserve_packing();
    PREPARED_SCRATCH.set(PREPARED_SCRATCH.get().max(Some(scratch)));
}

/// Whether [`prepare_thread`] prepared this thread for at least `scratch` values.
pub fn thread_prepared_for(scratch: usize) -> bool {
    PREPARED_SCRATCH
        .get()
        .is_some_and(|prepared| prepared >= scratch)
}

thread_local! {
    /// The largest scratch [`prepare_thread`] reserved on this thread, if it ran here.
    static PREPARED_SCRATCH: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` with denormal floats flushed to zero on this thread, as on prepared pool threads
/// ([`prepare_thread`]), and gives the thread back its own floating-point mode after, even if
/// `f` panics: for a pass run on a caller's thread, whose other code keeps IEEE denormals.
pub(crate) fn with_denormals_flushed<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the mode it was made with when dropped.
    struct Restore(Option<u32>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(mode) = self.0 {
                set_float_mode(mode);
            }
        }
    }
    let _restore = Restore(flush_denormals_to_zero());
    f()
}

/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

/// Sets MXCSR's FTZ and DAZ bits on this thread; returns the register as it was.
#[cfg(target_arch = "x86_64")]
fn flush_denormals_to_zero() -> Option<u32> {
    let mut mxcsr: u32 = 0;
    // SAFETY: `stmxcsr` stores the 32-bit control register to the given address; it exists on
    // every x86-64 CPU (SSE).
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack)) };
    set_float_mode(mxcsr | FTZ_DAZ);
    Some(mxcsr)
}

/// Loads `mxcsr` into this thread's MXCSR.
#[cfg(target_arch = "x86_64")]
fn set_float_mode(mxcsr: u32) {
    // SAFETY: `ldmxcsr` loads the 32-bit control register from the given address; every value
    // passed here is one `stmxcsr` stored, with at most the FTZ and DAZ mode bits added.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &mxcsr, options(nostack)) };
}

/// Other architectures keep their default floating-point mode.
#[cfg(not(target_arch = "x86_64"))]
fn flush_denormals_to_zero() -> Option<u32> {
    None
}

/// Other architectures keep their default floating-point mode.
#[cfg(not(target_arch = "x86_64"))]
fn set_float_mode(_: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_is_always_supported_and_names_round_trip() {
        assert!(Isa::Portable.is_supported());
        assert!(Isa::active().is_supported());
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse9"), None);
    }

    /// A prepared thread flushes a product below the smallest normal float to zero; an
    /// unprepared one does not. (On a thread of its own, so no other test sees the mode.)
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn prepared_threads_flush_denormals_to_zero() {
        use std::hint::black_box;
        std::thread::spawn(|| {
            let half_of_smallest = || black_box(f32::MIN_POSITIVE) * black_box(0.5);
            assert!(half_of_smallest() > 0.0);
            assert!(!thread_prepared_for(0));
            prepare_thread(16);
            assert_eq!(half_of_smallest(), 0.0);
            assert!(thread_prepared_for(16) && !thread_prepared_for(17));
        })
        .join()
        .expect("the checks pass");
    }

    /// A pass on a caller's thread flushes denormals while it runs and gives the thread its own
    /// mode back after, also when the pass panics.
    #[test]
    fn denormals_are_flushed_only_inside_the_pass() {
        use std::hint::black_box;
        std::thread::spawn(|| {
            let half_of_smallest = || black_box(f32::MIN_POSITIVE) * black_box(0.5);
            assert_eq!(with_denormals_flushed(half_of_smallest), 0.0);
            assert!(half_of_smallest() > 0.0);
            let panicked = std::panic::catch_unwind(|| {
                with_denormals_flushed(|| panic!("a failing pass"));
            });
            assert!(panicked.is_err());
            assert!(half_of_smallest() > 0.0);
        })
        .join()
        .expect("the checks pass");
    }

    /// CI runs the kernel tests once per path through `CONSTNET_ISA`: prove the path switched.
    #[test]
    fn constnet_isa_selects_the_path() {
        match std::env::var("CONSTNET_ISA")
            .ok()
            .and_then(|name| Isa::from_name(&name))
        {
            Some(isa) if isa.is_supported() => assert_eq!(Isa::active(), isa),
            _ => assert_eq!(Isa::active(), Isa::supported()[0]),
        }
    }
}
