//! Memory-bound kernels of the Keras MNIST network: ReLU on 24x24x64 activations and the fused
//! softmax cross-entropy on 10 logits. "FLOPs" count one operation per value (ReLU) and five per
//! logit (max, exp, sum, log-sum-exp, gradient) for the loss.

use constnet::layers::Relu;
use constnet::loss::sparse_softmax_cross_entropy;
use constnet::{Batch, Flat, Hwc, Shape};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{Ops, forward_and_backward, noise};

type Activations = Hwc<24, 24, 64>;

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("relu 24x24x64");
    forward_and_backward(&mut group, &Relu::<Activations>::new(), |samples| Ops {
        forward: (samples * Activations::LEN) as u64,
        backward: (samples * Activations::LEN) as u64,
        backward_params_only: None,
    });
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
