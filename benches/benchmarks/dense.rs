//! Dense layers of the Keras MNIST network: 9216 → 128 and 128 → 10. FLOPs: `2 · in · out` per
//! sample for the forward pass, as much again for each of the two gradients.

use constnet::init::seeded_rng;
use constnet::layers::Dense;
use criterion::Criterion;

use super::measurement::WallClock;
use super::{Ops, forward_and_backward};

fn dense<const IN: usize, const OUT: usize>(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group(format!("dense {IN} -> {OUT}"));
    let layer = Dense::<IN, OUT>::new(&mut seeded_rng(0));
    forward_and_backward(&mut group, &layer, |samples| {
        let forward = (2 * samples * IN * OUT) as u64;
        Ops {
            forward,
            backward: 2 * forward,
            backward_params_only: None,
        }
    });
    group.finish();
}

pub fn bench(c: &mut Criterion<WallClock>) {
    dense::<9216, 128>(c);
    dense::<128, 10>(c);
}
