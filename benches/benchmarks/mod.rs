//! One module per kernel family, plus the measurement that prints GFLOP/s.

pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod fused;
pub mod gemm;
pub mod measurement;
pub mod network;
pub mod peak;
pub mod pool;
pub mod winograd;
pub mod workloads;

use constnet::init::seeded_rng;
use constnet::layers::Layer;
use constnet::rand::RngExt;
use constnet::{Batch, Shape};
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use rayon::{ThreadPool, ThreadPoolBuilder};

use measurement::WallClock;

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

/// Operation counts of one layer pass, for a whole batch.
pub struct Ops {
    /// Forward pass.
    pub forward: u64,
    /// Backward pass computing the input and parameter gradients.
    pub backward: u64,
    /// Backward pass computing only the parameter gradients (a network's first layer), if the
    /// layer has parameters.
    pub backward_params_only: Option<u64>,
}

/// Benchmarks `layer`'s forward and backward passes in every configuration of [`RUNS`];
/// `ops(samples)` counts the work of each pass.
pub fn forward_and_backward<L: Layer + Clone>(
    group: &mut BenchmarkGroup<'_, WallClock>,
    layer: &L,
    ops: impl Fn(usize) -> Ops,
) {
    for (label, samples, thread_count) in RUNS {
        let pool = threads(thread_count);
        let input = noise::<L::Input>(samples);
        let grad_output = noise::<L::Output>(samples);
        let mut output = Batch::default();
        let mut grad_input = Batch::default();
        let mut grads = layer.new_grads();
        // Backward reads what a training pass left in the cache (max pooling's argmax).
        let mut cache = L::Cache::default();
        layer.clone().forward_train(&input, &mut output, &mut cache);
        let ops = ops(samples);

        group.throughput(Throughput::Elements(ops.forward));
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            pool.install(|| b.iter(|| layer.forward(&input, &mut output, &mut cache)))
        });
        group.throughput(Throughput::Elements(ops.backward));
        group.bench_function(BenchmarkId::new("backward (input + params)", label), |b| {
            pool.install(|| {
                b.iter(|| {
                    let grad_input = Some(&mut grad_input);
                    layer.backward(
                        &input,
                        &output,
                        &grad_output,
                        &mut cache,
                        grad_input,
                        &mut grads,
                    )
                })
            })
        });
        if let Some(params_only) = ops.backward_params_only {
            group.throughput(Throughput::Elements(params_only));
            group.bench_function(BenchmarkId::new("backward (params only)", label), |b| {
                pool.install(|| {
                    b.iter(|| {
                        layer.backward(&input, &output, &grad_output, &mut cache, None, &mut grads)
                    })
                })
            });
        }
    }
}
