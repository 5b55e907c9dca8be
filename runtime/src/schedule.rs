//! Where a pass runs: on the caller's thread or on a thread of the rayon pool, how many threads
//! its parallel loops may split their work between ([`pass_threads`]), and whether the pool's
//! other threads are kept spinning for it ([`pool_awake`]). Kernels and layers ask this module;
//! it asks nothing of them (what a pass needs prepared on its threads is given to it as a
//! closure by [`crate::plan::on_pool`]), so it sits below everything that splits work.
//!
//! Its state is two flags per thread, each set only for the length of one pass and given back
//! by a `Drop` guard, so a pass that panics leaves them as they were.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

// How finely work splits between threads: every threshold in one place. Each is the least work
// a part must have to gain from another thread, whose wake-up costs tens of microseconds when
// it sleeps and under one when the pool is kept awake for the pass.

/// Fewest values (read and written) a parallel task of an element-wise or per-sample pass is
/// given: below it, waking another thread costs more than the task.
pub(crate) const MIN_TASK_VALUES: usize = 1 << 15;
/// Fewest multiply-adds a part of a product split by rows (`gemm_parallel`) must have.
pub(crate) const GEMM_MIN_MULS_PER_PART: usize = 1 << 22;
/// The same during a pass that keeps the pool's threads awake ([`pool_awake`]), where a part
/// starts within a microsecond: a network's last dense layer at batch 128 splits too.
pub(crate) const GEMM_MIN_MULS_PER_AWAKE_PART: usize = 1 << 16;
/// Fewest multiply-adds a part of a single-row product split by column panels must have.
pub(crate) const GEMM_MIN_MULS_PER_COLUMN_PART: usize = 1 << 18;
/// Fewest multiply-adds one part of a sample's output rows must have when a convolution splits
/// a sample's rows between threads (batches smaller than the pool).
pub(crate) const ROW_SPLIT_MIN_MULS_PER_PART: usize = 1 << 16;
/// Multiply-adds a pass over fewer samples than the pool has threads must have to keep the
/// pool's other threads awake for it: enough that its products split across threads.
pub(crate) const KEEP_AWAKE_MULS: usize = 1 << 20;
/// The same for a pass over at least one sample per thread: a batch's products split from
/// 2^22 multiply-adds per part (`gemm_parallel`), so a smaller pass runs mostly on one thread,
/// which a spinning neighbour would only slow down.
const KEEP_AWAKE_BATCH_MULS: usize = 1 << 23;

/// Where a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On the calling thread, outside the pool, splitting nothing: handing it to the pool
    /// would cost more than the pass.
    CallingThread,
    /// On a thread of the pool, the others spinning for it when `keep_awake`.
    Pool {
        /// Whether the pool's other threads spin on its queues until the pass ends.
        keep_awake: bool,
    },
}

/// Where a pass of `muls_per_sample` multiply-adds per sample over `samples` samples runs, called
/// from this thread: on the pool when it has enough work to split or is called from the pool
/// already; on this thread when it would run on one thread anyway.
pub(crate) fn placement(samples: usize, muls_per_sample: usize) -> Placement {
    let threads = rayon::current_num_threads();
    let least = if samples < threads {
        KEEP_AWAKE_MULS
    } else {
        KEEP_AWAKE_BATCH_MULS
    };
    let keep_awake = threads > 1 && samples.saturating_mul(muls_per_sample) >= least;
    let one_thread = threads == 1 || (samples < threads && !keep_awake);
    if one_thread && rayon::current_thread_index().is_none() {
        Placement::CallingThread
    } else {
        Placement::Pool { keep_awake }
    }
}

thread_local! {
    /// Whether this thread is running a pass of [`on_calling_thread`].
    static ON_CALLING_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread is running a pass while [`with_pool_awake`] keeps the others spinning.
    static POOL_AWAKE: Cell<bool> = const { Cell::new(false) };
}

/// Threads the current pass may split its work between: the pool's, or one in a pass that
/// runs on the caller's thread, which never hands the pool work.
pub(crate) fn pass_threads() -> usize {
    if ON_CALLING_THREAD.get() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Whether this thread runs a pass with the pool's other threads kept awake: a part handed to
/// them then starts within a microsecond, not the tens that waking a thread takes, so smaller
/// work gains from splitting.
pub(crate) fn pool_awake() -> bool {
    POOL_AWAKE.get()
}

/// Runs `f` on this thread (outside the pool) as a pass that splits nothing: [`pass_threads`]
/// is 1 until it returns or panics.
pub(crate) fn on_calling_thread<R>(f: impl FnOnce() -> R) -> R {
    /// Gives `ON_CALLING_THREAD` back its value when dropped, also if the pass panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_CALLING_THREAD.set(self.0);
        }
    }
    let _restore = Restore(ON_CALLING_THREAD.replace(true));
    f()
}

/// Runs `prepare` then `f` on a thread of the pool (this one, when called from the pool), with
/// the pool's other threads spinning until `f` ends when `keep_awake`.
pub(crate) fn on_pool_thread<R: Send>(
    keep_awake: bool,
    prepare: impl FnOnce() + Send,
    f: impl FnOnce() -> R + Send,
) -> R {
    let run = || {
        prepare();
        if keep_awake { with_pool_awake(f) } else { f() }
    };
    if rayon::current_thread_index().is_some() {
        run()
    } else {
        rayon::scope(|_| run())
    }
}

/// Runs `f` on this pool thread while every other thread of the pool spins on the pool's
/// queues, running what it finds, until `f` returns or panics. The spinners are `join`'s stack
/// jobs, so nothing is allocated.
///
/// `join` waits for both halves before it returns or passes on a panic, so the spinners must
/// stop however `f` ends: a guard sets `done` (and gives this thread back its `POOL_AWAKE`)
/// when dropped, on return and on unwinding alike.
fn with_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    /// Ends the pass when dropped: restores `POOL_AWAKE` and releases the spinners.
    struct EndOfPass<'a> {
        was_awake: bool,
        done: &'a AtomicBool,
    }
    impl Drop for EndOfPass<'_> {
        fn drop(&mut self) {
            POOL_AWAKE.set(self.was_awake);
            self.done.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    let owner = rayon::current_thread_index();
    let (result, ()) = rayon::join(
        || {
            let _end = EndOfPass {
                was_awake: POOL_AWAKE.replace(true),
                done: &done,
            };
            f()
        },
        || spin_until(&done, owner, rayon::current_num_threads() - 1),
    );
    result
}

/// Spins `spinners` threads on the pool's queues until `done`: this one, and the others by
/// leaving the rest of the work to be stolen. The thread `owner`, which runs the pass, returns
/// at once: it may pick a spinner up while it waits inside the pass (for a part another thread
/// took), and spinning there would wait for the pass to end, forever.
fn spin_until(done: &AtomicBool, owner: Option<usize>, spinners: usize) {
    if spinners == 0 || rayon::current_thread_index() == owner {
        return;
    }
    let spin = || {
        while !done.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                // Pause a little between looks, so the queues' cache lines are not pulled
                // away from the thread that pushes to them on every one.
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
        }
    };
    rayon::join(spin, || spin_until(done, owner, spinners - 1));
}
