//! Max pooling of the Keras MNIST network: 24x24x64 → 12x12x64, 2x2. Pooling is memory-bound;
//! its "FLOPs" count one comparison per window element (`k² · outputs`), forward and backward.

use constnet::layers::MaxPool2d;
use constnet::{Hwc, Shape};
use criterion::Criterion;

use super::measurement::WallClock;
use super::{Ops, forward_and_backward};

type Output = Hwc<12, 12, 64>;

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("maxpool 24x24x64 -> 12x12x64");
    let layer = MaxPool2d::<Hwc<24, 24, 64>, Output, 2>::new();
    forward_and_backward(&mut group, &layer, |samples| {
        let window_values = (samples * Output::LEN * 4) as u64;
        Ops {
            forward: window_values,
            backward: window_values,
            backward_params_only: None,
        }
    });
    group.finish();
}
