//! One module per kernel family, plus the measurement that prints GFLOP/s.

pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod gemm;
pub mod measurement;
pub mod network;
pub mod peak;
pub mod pool;

use constnet::init::seeded_rng;
use constnet::rand::RngExt;
use constnet::{Batch, Shape};
use rayon::{ThreadPool, ThreadPoolBuilder};

/// A rayon pool of `threads` threads, to run a kernel on exactly that many cores.
pub fn threads(threads: usize) -> ThreadPool {
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}

/// `samples` samples of uniform noise in `[-1, 1)`.
pub fn noise<S: Shape>(samples: usize) -> Batch<S> {
    let mut rng = seeded_rng(samples as u64);
    Batch::from_fn(samples, |_| rng.random_range(-1.0..1.0))
}

/// The configurations every kernel is measured in: (label, batch size, threads).
pub const RUNS: [(&str, usize, usize); 3] = [
    ("batch 1", 1, 1),
    ("batch 128", 128, 1),
    ("batch 128, 2 threads", 128, 2),
];
