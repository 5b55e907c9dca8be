//! Dense layers of the Keras MNIST network: 9216 → 128 and 128 → 10. FLOPs: `2 · in · out` per
//! sample for the forward pass, as much again for each of the two gradients.

use constnet::init::seeded_rng;
use constnet::layers::{Dense, Layer};
use constnet::{Batch, Flat};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{RUNS, noise, threads};

fn dense<const IN: usize, const OUT: usize>(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group(format!("dense {IN} -> {OUT}"));
    let layer = Dense::<IN, OUT>::new(&mut seeded_rng(0));
    for (label, samples, thread_count) in RUNS {
        let pool = threads(thread_count);
        let input = noise::<Flat<IN>>(samples);
        let grad_output = noise::<Flat<OUT>>(samples);
        let mut output = Batch::default();
        let mut grad_input = Batch::default();
        let mut grads = layer.new_grads();
        let forward_flops = (2 * samples * IN * OUT) as u64;

        group.throughput(Throughput::Elements(forward_flops));
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            pool.install(|| b.iter(|| layer.forward(&input, &mut output)))
        });
        group.throughput(Throughput::Elements(2 * forward_flops));
        group.bench_function(BenchmarkId::new("backward (input + weight)", label), |b| {
            pool.install(|| {
                b.iter(|| {
                    layer.backward(
                        &input,
                        &output,
                        &grad_output,
                        &mut (),
                        Some(&mut grad_input),
                        &mut grads,
                    )
                })
            })
        });
    }
    group.finish();
}

pub fn bench(c: &mut Criterion<WallClock>) {
    dense::<9216, 128>(c);
    dense::<128, 10>(c);
}
