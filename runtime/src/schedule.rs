//! Where a pass runs: on the caller's thread or on a thread of the rayon pool, how many threads
//! its parallel loops may split their work between ([`pass_threads`]), and whether the pool's
//! other threads are kept spinning for it ([`pool_awake`]). Kernels and layers ask this module;
//! it asks nothing of them (what a pass needs prepared on its threads is given to it as a
//! closure by [`crate::plan::on_pool`]), so it sits below everything that splits work.
//!
//! How much work a part needs before it splits is the pass's context's ([`splits`]). Its own
//! state is one [`PassState`] per thread: two flags set only for the length of one pass and
//! given back by a `Drop` guard, so a pass that panics leaves them as they were, and the order
//! in which the next pass's products visit their parts along `K`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::context::{self, Splits};

/// The split thresholds of the pass running on this thread ([`crate::context::Splits`]).
pub(crate) fn splits() -> Splits {
    context::with_current(|settings| settings.splits)
}

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
    let splits = splits();
    let least = if samples < threads {
        splits.keep_awake_muls
    } else {
        splits.keep_awake_batch_muls
    };
    let keep_awake = threads > 1 && samples.saturating_mul(muls_per_sample) >= least;
    let one_thread = threads == 1 || (samples < threads && !keep_awake);
    if one_thread && rayon::current_thread_index().is_none() {
        Placement::CallingThread
    } else {
        Placement::Pool { keep_awake }
    }
}

/// What this thread's pass is, and the order its next products split along `K` take.
#[derive(Clone, Copy)]
struct PassState {
    /// Whether this thread is running a pass, or a share of one, of [`unsplit`].
    unsplit: bool,
    /// Whether this thread is running a pass while [`with_pool_awake`] keeps the others
    /// spinning.
    pool_awake: bool,
    /// Whether the products this thread splits along `K` take their parts last to first.
    k_parts_reversed: bool,
}

thread_local! {
    /// This thread's pass state. The first two flags are set for the length of one pass and
    /// given back by a [`RestoreFlag`] guard; the third alternates from pass to pass.
    static PASS: Cell<PassState> = const {
        Cell::new(PassState {
            unsplit: false,
            pool_awake: false,
            k_parts_reversed: false,
        })
    };
}

/// One flag of [`PassState`].
type Flag = fn(&mut PassState) -> &mut bool;

/// Sets `flag` of this thread's pass state to `value`; returns what it was.
fn replace_flag(flag: Flag, value: bool) -> bool {
    let mut state = PASS.get();
    let was = std::mem::replace(flag(&mut state), value);
    PASS.set(state);
    was
}

/// Gives a flag of this thread's pass state back the value it had when dropped: when the pass
/// returns, and when it panics.
struct RestoreFlag {
    flag: Flag,
    was: bool,
}

impl RestoreFlag {
    /// Sets `flag` for as long as the guard lives.
    fn set(flag: Flag) -> RestoreFlag {
        RestoreFlag {
            flag,
            was: replace_flag(flag, true),
        }
    }
}

impl Drop for RestoreFlag {
    fn drop(&mut self) {
        replace_flag(self.flag, self.was);
    }
}

/// Threads the current pass may split its work between: the pool's, or one in a pass that
/// runs on the caller's thread, which never hands the pool work.
pub(crate) fn pass_threads() -> usize {
    if PASS.get().unsplit {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Whether this thread runs a pass with the pool's other threads kept awake: a part handed to
/// them then starts within a microsecond, not the tens that waking a thread takes, so smaller
/// work gains from splitting.
pub(crate) fn pool_awake() -> bool {
    PASS.get().pool_awake
}

/// Fewest multiply-adds a part of this thread's pass must have to be handed to another thread,
/// given `least_awake`, the least while the pool is kept awake for the pass: that, or, when the
/// other threads may be asleep, at least [`Splits::gemm_min_muls_per_part`]. Waking a thread
/// costs tens of microseconds, which only a part of that much work repays; a smaller part
/// handed to a sleeping pool makes the pass slower on 2 threads than on 1.
pub(crate) fn min_muls_per_part(least_awake: usize) -> usize {
    if pool_awake() {
        least_awake
    } else {
        least_awake.max(splits().gemm_min_muls_per_part)
    }
}

/// Reverses the order in which this thread's next products split along `K` visit their parts;
/// the pass runner (`plan::on_pool`) calls it once per pass.
///
/// A weight matrix of a few megabytes streamed in the same order on every pass misses the
/// core's L2 cache on every line when it is a little larger than the cache: each line is
/// evicted just before it is read again. In alternating order, a pass first reads the parts
/// the previous pass read last, which are still cached. The order changes which part is
/// multiplied first, never how the parts are summed, so results do not change.
pub(crate) fn reverse_k_part_order() {
    replace_flag(|state| &mut state.k_parts_reversed, !k_parts_reversed());
}

/// Whether this thread's products split along `K` take their parts last to first.
pub(crate) fn k_parts_reversed() -> bool {
    PASS.get().k_parts_reversed
}

/// Runs `f` on this thread as a pass that splits nothing (one called outside the pool that
/// would not gain from it), or as one thread's share of a pass already split between the
/// threads: [`pass_threads`] is 1 until it returns or panics.
pub(crate) fn unsplit<R>(f: impl FnOnce() -> R) -> R {
    let _restore = RestoreFlag::set(|state| &mut state.unsplit);
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
/// stop however `f` ends: a guard sets `done` (and gives this thread back its `pool_awake`
/// flag) when dropped, on return and on unwinding alike.
fn with_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    /// Ends the pass when dropped: releases the spinners, then its field restores the flag.
    struct EndOfPass<'a> {
        _awake: RestoreFlag,
        done: &'a AtomicBool,
    }
    impl Drop for EndOfPass<'_> {
        fn drop(&mut self) {
            self.done.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    let owner = rayon::current_thread_index();
    let (result, ()) = rayon::join(
        || {
            let _end = EndOfPass {
                _awake: RestoreFlag::set(|state| &mut state.pool_awake),
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
