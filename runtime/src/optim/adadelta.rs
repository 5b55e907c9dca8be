//! Adadelta (Keras's `Adadelta`): `a ← ρa + (1−ρ)g²`, `Δ = −√(d + ε)/√(a + ε) · g`,
//! `d ← ρd + (1−ρ)Δ²`, `w ← w + lr·Δ`.

use super::Optimizer;

/// Adadelta; the Keras MNIST example uses learning rate 1.0, ρ 0.95, ε 1e-7.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adadelta {
    /// Learning rate.
    pub learning_rate: f32,
    /// Decay of the running averages.
    pub rho: f32,
    /// Added under the square roots.
    pub epsilon: f32,
}

impl Default for Adadelta {
    fn default() -> Self {
        Self {
            learning_rate: 1.0,
            rho: 0.95,
            epsilon: 1e-7,
        }
    }
}

impl Optimizer for Adadelta {
    fn name(&self) -> &'static str {
        "adadelta"
    }
    fn learning_rate(&self) -> f32 {
        self.learning_rate
    }
    fn slots(&self) -> usize {
        2
    }
    fn update(&self, _t: u64, lr: f32, values: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]) {
        let (rho, eps) = (self.rho, self.epsilon);
        let [grad_avg, delta_avg] = slots else {
            unreachable!("two slots")
        };
        for (((w, &g), a), d) in values
            .iter_mut()
            .zip(grad)
            .zip(grad_avg.iter_mut())
            .zip(delta_avg.iter_mut())
        {
            *a = rho * *a + (1.0 - rho) * g * g;
            let delta = -(*d + eps).sqrt() / (*a + eps).sqrt() * g;
            *d = rho * *d + (1.0 - rho) * delta * delta;
            *w += lr * delta;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_update() {
        let adadelta = Adadelta::default();
        let (mut w, mut m, mut v) = (vec![1.0f32], [0.0f32], [0.0f32]);
        let mut slots: [&mut [f32]; 2] = [&mut m, &mut v];
        // a = 0.05·0.25 = 0.0125; Δ = −√1e-7/√(0.0125001)·0.5 = −0.00141421;
        // d = 0.05·Δ² = 1.0e-7; w = 1 − 0.00141421.
        adadelta.update(1, 1.0, &mut w, &[0.5], &mut slots);
        assert!((w[0] - (1.0 - 0.001_414_21)).abs() < 1e-7, "{}", w[0]);
        assert!((slots[1][0] - 1.0e-7).abs() < 1e-10, "{}", slots[1][0]);
    }
}
