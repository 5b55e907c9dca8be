//! Random inputs and the closeness check the network tests share.

use constnet::init::seeded_rng;
use constnet::rand::RngExt;
use constnet::{Batch, Shape};

/// `samples` samples of values uniform in [-1, 1), drawn from `seed`.
pub fn noise<S: Shape>(samples: usize, seed: u64) -> Batch<S> {
    let mut rng = seeded_rng(seed);
    Batch::from_fn(samples, |_| rng.random_range(-1.0..1.0))
}

/// Panics unless `a` and `b` agree within 1e-5, relative to `b`'s values above 1.
pub fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}
