//! Adam (Keras's `Adam`): `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `w ← w − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`.

use super::Optimizer;

/// Adam with Keras's defaults: learning rate 0.001, β₁ 0.9, β₂ 0.999, ε 1e-7.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub learning_rate: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub epsilon: f32,
}

impl Default for Adam {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        }
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        "adam"
    }
    fn learning_rate(&self) -> f32 {
        self.learning_rate
    }
    fn slots(&self) -> usize {
        2
    }
    fn update(&self, t: u64, lr: f32, values: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]) {
        let (b1, b2) = (self.beta1, self.beta2);
        let step = lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32));
        let [m, v] = slots else {
            unreachable!("two slots")
        };
        for (((w, &g), m), v) in values
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *w -= step * *m / (v.sqrt() + self.epsilon);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_updates() {
        let adam = Adam::default();
        let (mut w, mut m, mut v) = (vec![1.0f32], [0.0f32], [0.0f32]);
        let mut slots: [&mut [f32]; 2] = [&mut m, &mut v];
        // Step 1: m = 0.05, v = 0.00025, step size = 0.001·√0.001/0.1;
        // w = 1 − 0.001·0.316228 · 0.05/(0.0158114 + 1e-7) = 1 − 0.001 (Adam's first step is lr·sign(g)).
        adam.update(1, 1e-3, &mut w, &[0.5], &mut slots);
        assert!((w[0] - 0.999).abs() < 1e-6, "{}", w[0]);
        // Step 2 with g = −0.5: m = 0.045 − 0.05 = −0.005, v = 0.00025·0.999 + 0.00025 = 0.00049975;
        // size = 0.001·√(1 − 0.998001)/(1 − 0.81) = 0.001·0.0447102/0.19;
        // w = 0.999 + 0.000235317·0.005/0.0223551 = 0.999 + 0.0000526316.
        adam.update(2, 1e-3, &mut w, &[-0.5], &mut slots);
        assert!((w[0] - 0.999_052_6).abs() < 1e-6, "{}", w[0]);
    }
}
