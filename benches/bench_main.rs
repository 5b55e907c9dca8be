//! constnet's benchmarks: every kernel at the shapes of the Keras MNIST network, forward and
//! backward, at batch 1 and 128, with throughput in GFLOP/s beside the measured FMA peak of one
//! core. Kernel figures are single-threaded unless the benchmark name says otherwise. Whole
//! training steps of the network are measured in images/s.
//!
//! Run with `cargo bench --bench bench_main`; add a filter (`-- conv`) to run a subset.

mod benchmarks;

use criterion::{Criterion, criterion_group, criterion_main};

use benchmarks::measurement::WallClock;

fn config(measurement: WallClock) -> Criterion<WallClock> {
    Criterion::default()
        .with_measurement(measurement)
        .without_plots()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

criterion_group! {
    name = kernels;
    config = config(WallClock::flops());
    targets = benchmarks::peak::bench,
        benchmarks::peak::bench_int8,
        benchmarks::conv::bench,
        benchmarks::winograd::bench,
        benchmarks::fused::bench,
        benchmarks::pool::bench,
        benchmarks::dense::bench,
        benchmarks::elementwise::bench,
        benchmarks::gemm::bench,
        benchmarks::gemm::bench_int8
}
criterion_group! {
    name = networks;
    config = config(WallClock::images());
    targets = benchmarks::network::bench
}
criterion_main!(kernels, networks);
