//! Memory-bound kernels of the Keras MNIST network: ReLU on 24x24x64 activations, dropout(0.25)
//! on 12x12x64 in training (drawing the mask and scaling), and the fused softmax cross-entropy
//! on 10 logits. "FLOPs" count one operation per value (ReLU, dropout) and five per logit (max,
//! exp, sum, log-sum-exp, gradient) for the loss.

use constnet::layers::{Dropout, DropoutCache, Layer, NoParams, Relu};
use constnet::loss::sparse_softmax_cross_entropy;
use constnet::{Batch, Flat, Hwc, Shape};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{Ops, RUNS, forward_and_backward, noise, threads};

type Activations = Hwc<24, 24, 64>;

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("relu 24x24x64");
    forward_and_backward(&mut group, &Relu::<Activations>::new(), |samples| Ops {
        forward: (samples * Activations::LEN) as u64,
        backward: (samples * Activations::LEN) as u64,
        backward_params_only: None,
    });
    group.finish();

    let mut group = c.benchmark_group("dropout(0.25) 12x12x64, training");
    for (label, samples, thread_count) in RUNS {
        type Pooled = Hwc<12, 12, 64>;
        let pool = threads(thread_count);
        let mut dropout = Dropout::<Pooled>::new(0.25, 0);
        let input = noise::<Pooled>(samples);
        let grad_output = noise::<Pooled>(samples);
        let (mut output, mut grad_input) = (Batch::default(), Batch::default());
        let mut cache = DropoutCache::default();
        group.throughput(Throughput::Elements((samples * Pooled::LEN) as u64));
        group.bench_function(BenchmarkId::new("forward (draw mask)", label), |b| {
            pool.install(|| b.iter(|| dropout.forward_train(&input, &mut output, &mut cache)))
        });
        group.bench_function(BenchmarkId::new("backward", label), |b| {
            pool.install(|| {
                b.iter(|| {
                    let grad_input = Some(&mut grad_input);
                    dropout.backward(
                        &input,
                        &output,
                        &grad_output,
                        &mut cache,
                        grad_input,
                        &mut NoParams,
                    )
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("softmax cross-entropy, 10 classes");
    for samples in [1, 128] {
        let logits = noise::<Flat<10>>(samples);
        let labels: Vec<usize> = (0..samples).map(|i| i % 10).collect();
        let mut grad = Batch::default();
        group.throughput(Throughput::Elements((samples * 10 * 5) as u64));
        group.bench_function(
            BenchmarkId::new("loss + gradient", format!("batch {samples}")),
            |b| b.iter(|| sparse_softmax_cross_entropy(&logits, &labels, &mut grad)),
        );
    }
    group.finish();
}
