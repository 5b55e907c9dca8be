//! The fused ops the plan of the Keras MNIST network runs, at its shapes: conv2 with ReLU in its
//! epilogue (forward and backward), conv2 with ReLU and max-pooling at inference (the pooling
//! reads each image's convolution output from scratch), and dense1 with ReLU. FLOPs are those of
//! the convolution or dense product; the fused work rides along.

use constnet::init::seeded_rng;
use constnet::kernels::elementwise::ActivationKind;
use constnet::layers::{
    Conv2d, Dense, Layer, MaxPool2d, ReluFn, conv_activation_pool_forward,
    linear_activation_backward, linear_activation_forward,
};
use constnet::{Batch, Flat, Hwc};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{RUNS, noise, threads};

type ConvIn = Hwc<26, 26, 32>;
type ConvOut = Hwc<24, 24, 64>;
const CONV_FLOPS: usize = 2 * 24 * 24 * 64 * 3 * 3 * 32;

fn conv_relu_pool(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("fused conv 26x26x32 -> 24x24x64 + relu");
    let conv = Conv2d::<ConvIn, ConvOut, 3>::new(&mut seeded_rng(0));
    let pool = MaxPool2d::<ConvOut, Hwc<12, 12, 64>, 2>::new();
    for (label, samples, thread_count) in RUNS {
        let pool_threads = threads(thread_count);
        let input = noise::<ConvIn>(samples);
        let (mut output, mut cache) = (Batch::default(), Default::default());
        linear_activation_forward(&conv, &ReluFn, &input, &mut output, &mut cache);
        let grad_output = noise::<ConvOut>(samples);
        let (mut grad, mut grad_input) = (grad_output.clone(), Batch::default());
        let mut grads = conv.new_grads();
        let mut pooled = Batch::default();
        let flops = (samples * CONV_FLOPS) as u64;
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            pool_threads.install(|| {
                b.iter(|| {
                    linear_activation_forward(&conv, &ReluFn, &input, &mut output, &mut cache)
                })
            })
        });
        group.bench_function(BenchmarkId::new("+ maxpool, inference", label), |b| {
            pool_threads.install(|| {
                b.iter(|| {
                    let relu = ActivationKind::Relu;
                    conv_activation_pool_forward(
                        &conv,
                        (&conv.params).into(),
                        relu,
                        &pool,
                        &input,
                        &mut pooled,
                        &mut cache,
                    )
                })
            })
        });
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("backward (input + params)", label), |b| {
            pool_threads.install(|| {
                b.iter(|| {
                    grad.copy_from(&grad_output);
                    linear_activation_backward(
                        &conv,
                        &ReluFn,
                        &input,
                        &output,
                        &mut grad,
                        &mut cache,
                        Some(&mut grad_input),
                        &mut grads,
                    )
                })
            })
        });
    }
    group.finish();
}

fn dense_relu(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("fused dense 9216 -> 128 + relu");
    let dense = Dense::<9216, 128>::new(&mut seeded_rng(0));
    for (label, samples, thread_count) in RUNS {
        let pool_threads = threads(thread_count);
        let input = noise::<Flat<9216>>(samples);
        let mut output = Batch::default();
        group.throughput(Throughput::Elements((2 * samples * 9216 * 128) as u64));
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            pool_threads.install(|| {
                b.iter(|| linear_activation_forward(&dense, &ReluFn, &input, &mut output, &mut ()))
            })
        });
    }
    group.finish();
}

pub fn bench(c: &mut Criterion<WallClock>) {
    conv_relu_pool(c);
    dense_relu(c);
}
