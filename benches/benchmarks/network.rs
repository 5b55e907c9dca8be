//! Whole steps of the Keras MNIST network, composed by hand from runtime layers: a training step
//! (training forward, fused softmax cross-entropy, backward through every layer; no optimiser
//! update yet) at batch 128, and inference at batch 128 and batch 1, in images/s.

use constnet::init::seeded_rng;
use constnet::layers::*;
use constnet::loss::sparse_softmax_cross_entropy;
use constnet::{Batch, Flat, Hwc};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::{noise, threads};

type Head = Chain<
    Flatten<Hwc<12, 12, 64>, 9216>,
    Chain<Dense<9216, 128>, Chain<Relu<Flat<128>>, Chain<Dropout<Flat<128>>, Dense<128, 10>>>>,
>;
type Features =
    Chain<MaxPool2d<Hwc<24, 24, 64>, Hwc<12, 12, 64>, 2>, Chain<Dropout<Hwc<12, 12, 64>>, Head>>;
type MnistCnn = Chain<
    Conv2d<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>,
    Chain<
        Relu<Hwc<26, 26, 32>>,
        Chain<Conv2d<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>, Chain<Relu<Hwc<24, 24, 64>>, Features>>,
    >,
>;

fn mnist_cnn() -> MnistCnn {
    let mut rng = seeded_rng(0);
    Chain::new(
        Conv2d::new(&mut rng),
        Chain::new(
            Relu::new(),
            Chain::new(
                Conv2d::new(&mut rng),
                Chain::new(
                    Relu::new(),
                    Chain::new(
                        MaxPool2d::new(),
                        Chain::new(
                            Dropout::new(0.25, 1),
                            Chain::new(
                                Flatten::new(),
                                Chain::new(
                                    Dense::new(&mut rng),
                                    Chain::new(
                                        Relu::new(),
                                        Chain::new(Dropout::new(0.5, 2), Dense::new(&mut rng)),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
}

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("mnist cnn (Keras example network)");
    let mut net = mnist_cnn();
    for thread_count in [1, 2] {
        let pool = threads(thread_count);
        let samples = 128;
        let images = noise::<Hwc<28, 28, 1>>(samples);
        let labels: Vec<usize> = (0..samples).map(|i| i % 10).collect();
        let mut logits = Batch::default();
        let mut grad_logits = Batch::<Flat<10>>::default();
        let mut cache = <MnistCnn as Layer>::Cache::default();
        let mut grads = net.new_grads();
        group.throughput(Throughput::Elements(samples as u64));
        group.bench_function(
            BenchmarkId::new(
                "training step, batch 128",
                format!("{thread_count} threads"),
            ),
            |b| {
                pool.install(|| {
                    b.iter(|| {
                        net.forward_train(&images, &mut logits, &mut cache);
                        sparse_softmax_cross_entropy(&logits, &labels, &mut grad_logits);
                        net.backward(&images, &logits, &grad_logits, &mut cache, None, &mut grads);
                    })
                })
            },
        );
        for samples in [128, 1] {
            let images = noise::<Hwc<28, 28, 1>>(samples);
            group.throughput(Throughput::Elements(samples as u64));
            group.bench_function(
                BenchmarkId::new(
                    format!("inference, batch {samples}"),
                    format!("{thread_count} threads"),
                ),
                |b| pool.install(|| b.iter(|| net.forward(&images, &mut logits))),
            );
        }
    }
    group.finish();
}
