//! Weight initialisation, as Keras does it: Glorot-uniform weights and zero biases by default,
//! He-uniform and He-normal as options, all drawn from a seeded random generator so that the
//! same seed always gives the same network.

use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The random generator constnet seeds its layers and dropout masks with: xoshiro256++, whose
/// output is fixed by its seed on every platform and version.
pub type SeededRng = Xoshiro256PlusPlus;

/// A [`SeededRng`] from a 64-bit seed.
pub fn seeded_rng(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

/// A fresh 64-bit seed drawn from `rng` (for the dropout layers of a network built from one seed).
pub fn next_seed(rng: &mut SeededRng) -> u64 {
    rng.random()
}

/// How a weight tensor is filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// Uniform in `±sqrt(6 / (fan_in + fan_out))` (Keras's default, `glorot_uniform`).
    #[default]
    GlorotUniform,
    /// Uniform in `±sqrt(6 / fan_in)` (`he_uniform`), suited to ReLU networks.
    HeUniform,
    /// Normal with standard deviation `sqrt(2 / fan_in)` (`he_normal`).
    HeNormal,
    /// All zeros.
    Zeros,
}

impl Init {
    /// Fills `weights` for a layer whose units see `fan_in` inputs and feed `fan_out` outputs
    /// (for a convolution, `k * k * in_channels` and `k * k * filters`).
    pub fn fill<R: Rng + ?Sized>(
        self,
        weights: &mut [f32],
        fan_in: usize,
        fan_out: usize,
        rng: &mut R,
    ) {
        let uniform = |limit: f64, weights: &mut [f32], rng: &mut R| {
            let limit = limit as f32;
            weights
                .iter_mut()
                .for_each(|w| *w = rng.random_range(-limit..=limit));
        };
        match self {
            Init::GlorotUniform => uniform((6.0 / (fan_in + fan_out) as f64).sqrt(), weights, rng),
            Init::HeUniform => uniform((6.0 / fan_in as f64).sqrt(), weights, rng),
            Init::HeNormal => {
                let normal = Normal::new(0.0, (2.0 / fan_in as f64).sqrt())
                    .expect("a positive, finite standard deviation");
                weights
                    .iter_mut()
                    .for_each(|w| *w = normal.sample(rng) as f32);
            }
            Init::Zeros => weights.fill(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_spread_follow_the_fans() {
        let mut rng = seeded_rng(1);
        let mut w = vec![0.0; 10_000];
        Init::GlorotUniform.fill(&mut w, 300, 100, &mut rng);
        let limit = (6.0f32 / 400.0).sqrt();
        assert!(w.iter().all(|x| x.abs() <= limit));
        assert!(w.iter().any(|x| x.abs() > 0.9 * limit));
        Init::HeNormal.fill(&mut w, 50, 10, &mut rng);
        let var = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
        assert!((var - 2.0 / 50.0).abs() < 0.004, "variance {var}");
        Init::Zeros.fill(&mut w, 1, 1, &mut rng);
        assert!(w.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn same_seed_same_weights() {
        let fill = |seed| {
            let mut w = vec![0.0; 16];
            Init::HeUniform.fill(&mut w, 4, 4, &mut seeded_rng(seed));
            w
        };
        assert_eq!(fill(3), fill(3));
        assert_ne!(fill(3), fill(4));
    }
}
