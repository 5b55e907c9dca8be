//! Convolutions of the Keras MNIST network: 28x28x1 → 26x26x32 and 26x26x32 → 24x24x64, 3x3.
//! FLOPs count a multiply-add as two: `2 · pixels · filters · k² · in_channels` per image for
//! the forward pass, as much again for each of the two gradients.

use constnet::init::seeded_rng;
use constnet::layers::Conv2d;
use constnet::{Hwc, Image};
use criterion::Criterion;

use super::measurement::WallClock;
use super::{Ops, forward_and_backward};

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
    forward_and_backward(&mut group, &layer, |samples| {
        let forward = (2 * samples * O::H * O::W * O::C * K * K * I::C) as u64;
        Ops {
            forward,
            backward: 2 * forward,
            backward_params_only: Some(forward),
        }
    });
    group.finish();
}

pub fn bench(c: &mut Criterion<WallClock>) {
    conv::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>(c);
    conv::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>(c);
}
