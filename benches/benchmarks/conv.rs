//! Convolutions of the Keras MNIST network: 28x28x1 → 26x26x32 and 26x26x32 → 24x24x64, 3x3.
//! FLOPs count a multiply-add as two: `2 · pixels · filters · k² · in_channels` per image for
//! the forward pass, as much again for each of the two gradients.

use constnet::init::seeded_rng;
use constnet::layers::{Conv2d, Layer};
use constnet::{Batch, Hwc, Image};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{RUNS, noise, threads};

fn conv<I: Image, O: Image, const K: usize>(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group(format!(
        "conv {}x{}x{} -> {}x{}x{}",
        I::H,
        I::W,
        I::C,
        O::H,
        O::W,
        O::C
    ));
    let layer = Conv2d::<I, O, K>::new(&mut seeded_rng(0));
    for (label, samples, thread_count) in RUNS {
        let pool = threads(thread_count);
        let input = noise::<I>(samples);
        let grad_output = noise::<O>(samples);
        let mut output = Batch::default();
        let mut grad_input = Batch::default();
        let mut grads = layer.new_grads();
        let forward_flops = (2 * samples * O::H * O::W * O::C * K * K * I::C) as u64;

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
        group.throughput(Throughput::Elements(forward_flops));
        group.bench_function(BenchmarkId::new("backward (weight only)", label), |b| {
            pool.install(|| {
                b.iter(|| layer.backward(&input, &output, &grad_output, &mut (), None, &mut grads))
            })
        });
    }
    group.finish();
}

pub fn bench(c: &mut Criterion<WallClock>) {
    conv::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>(c);
    conv::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>(c);
}
