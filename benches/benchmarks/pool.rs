//! Max pooling of the Keras MNIST network: 24x24x64 → 12x12x64, 2x2. Pooling is memory-bound;
//! its "FLOPs" count one comparison per window element (`k² · outputs`), forward and backward.
//! Beside the layer's own passes: the training forward pass (which records each window's
//! maximum) and the backward pass through the ReLU before it, as W1's plan runs them.

use constnet::layers::{Layer, MaxPool2d, PoolCache, ReluFn};
use constnet::{Batch, Hwc, Shape};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{Ops, RUNS, forward_and_backward, noise, threads};

type Input = Hwc<24, 24, 64>;
type Output = Hwc<12, 12, 64>;

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("maxpool 24x24x64 -> 12x12x64");
    let layer = MaxPool2d::<Input, Output, 2>::new();
    let window_values = |samples: usize| (samples * Output::LEN * 4) as u64;
    forward_and_backward(&mut group, &layer, |samples| Ops {
        forward: window_values(samples),
        backward: window_values(samples),
        backward_params_only: None,
    });
    for (label, samples, thread_count) in RUNS {
        let pool = threads(thread_count);
        let (input, grad_output) = (noise::<Input>(samples), noise::<Output>(samples));
        let (mut output, mut grad_input) = (Batch::default(), Batch::default());
        let mut cache = PoolCache::default();
        let mut training = layer;
        group.throughput(Throughput::Elements(window_values(samples)));
        group.bench_function(BenchmarkId::new("training forward", label), |b| {
            pool.install(|| b.iter(|| training.forward_train(&input, &mut output, &mut cache)))
        });
        group.bench_function(BenchmarkId::new("backward through relu", label), |b| {
            pool.install(|| {
                b.iter(|| {
                    layer.backward_through_activation(
                        &ReluFn,
                        &output,
                        &grad_output,
                        &cache,
                        &mut grad_input,
                    )
                })
            })
        });
    }
    group.finish();
}
