//! CPU kernels and the choice of instruction set they run with.
//!
//! Every heavy kernel (the GEMM behind convolutions and dense layers, pooling) is written once,
//! generic over [`simd::SimdF32`], and compiled three times: for AVX-512, for AVX2 with FMA, and for a
//! portable fallback that needs nothing beyond the x86-64 (or any other) baseline. Which one runs
//! is decided at run time: the fastest the CPU has, unless the pass's context says otherwise
//! ([`Isa::active`], [`crate::context`]), so `cargo run --release` is fast without `RUSTFLAGS`.
//! Tests run every path to check that they agree.

pub mod elementwise;
pub mod gemm;
pub mod int8;
pub mod peak;
mod portable;
pub mod simd;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::cell::RefCell;

use crate::aligned::AlignedVec;

pub use crate::context::Isa;

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

/// This thread's kernel memory, kept between passes so that none allocates.
struct ThreadScratch {
    /// Buffers lent out by [`with_scratch`] and returned after use.
    buffers: Vec<AlignedVec>,
    /// Packed panels of `B`, reused by every GEMM this thread runs.
    packed_b: Vec<f32>,
    /// The largest scratch [`prepare_thread`] reserved on this thread, if it ran here.
    prepared_for: Option<usize>,
}

thread_local! {
    /// This thread's kernel memory.
    static SCRATCH: RefCell<ThreadScratch> = const {
        RefCell::new(ThreadScratch {
            buffers: Vec::new(),
            packed_b: Vec::new(),
            prepared_for: None,
        })
    };
}

/// Takes this thread's buffer of packed panels, to be given back by [`give_packing`] (a GEMM
/// nested inside another, which has it, finds an empty one).
pub(crate) fn take_packing() -> Vec<f32> {
    SCRATCH.with_borrow_mut(|scratch| std::mem::take(&mut scratch.packed_b))
}

/// Gives back the buffer [`take_packing`] took.
pub(crate) fn give_packing(packed: Vec<f32>) {
    SCRATCH.with_borrow_mut(|scratch| scratch.packed_b = packed);
}

/// Lends `f` a scratch buffer of `len` values (contents unspecified) from a per-thread pool, so
/// kernels that need workspace (im2col patches) allocate it once per thread, not once per call.
/// Calls may nest.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = SCRATCH
        .with_borrow_mut(|scratch| scratch.buffers.pop())
        .unwrap_or_default();
    // Buffers only grow, so a smaller request after a larger one neither shrinks nor refills.
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    SCRATCH.with_borrow_mut(|scratch| scratch.buffers.push(buffer));
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
    SCRATCH.with_borrow_mut(|thread| {
        while thread.buffers.len() < DEPTH {
            thread.buffers.push(AlignedVec::new());
        }
        for buffer in thread.buffers.iter_mut().rev().take(DEPTH) {
            buffer.reserve(scratch.saturating_sub(buffer.len()));
        }
        gemm::reserve_packing(&mut thread.packed_b);
        thread.prepared_for = thread.prepared_for.max(Some(scratch));
    });
}

/// Whether [`prepare_thread`] prepared this thread for at least `scratch` values.
pub fn thread_prepared_for(scratch: usize) -> bool {
    SCRATCH.with_borrow(|thread| {
        thread
            .prepared_for
            .is_some_and(|prepared| prepared >= scratch)
    })
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
}
