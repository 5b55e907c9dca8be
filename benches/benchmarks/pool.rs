//! Max pooling of the Keras MNIST network: 24x24x64 → 12x12x64, 2x2. Pooling is memory-bound;
//! its "FLOPs" count one comparison per window element (`k² · outputs`), forward and backward.

use constnet::layers::{Layer, MaxPool2d, NoParams};
use constnet::{Batch, Hwc, Shape};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{RUNS, noise, threads};

type Input = Hwc<24, 24, 64>;
type Output = Hwc<12, 12, 64>;

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("maxpool 24x24x64 -> 12x12x64");
    let layer = MaxPool2d::<Input, Output, 2>::new();
    for (label, samples, thread_count) in RUNS {
        let pool = threads(thread_count);
        let input = noise::<Input>(samples);
        let grad_output = noise::<Output>(samples);
        let mut output = Batch::default();
        let mut grad_input = Batch::default();
        layer.forward(&input, &mut output);
        group.throughput(Throughput::Elements((samples * Output::LEN * 4) as u64));
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            pool.install(|| b.iter(|| layer.forward(&input, &mut output)))
        });
        group.bench_function(BenchmarkId::new("backward", label), |b| {
            pool.install(|| {
                b.iter(|| {
                    layer.backward(
                        &input,
                        &output,
                        &grad_output,
                        &mut (),
                        Some(&mut grad_input),
                        &mut NoParams,
                    )
                })
            })
        });
    }
    group.finish();
}
