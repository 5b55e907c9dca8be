//! RMSprop (Keras's `RMSprop`): `a ← ρa + (1−ρ)g²`, `w ← w − lr·g/√(a + ε)`.

use super::Optimizer;

/// RMSprop with Keras's defaults: learning rate 0.001, ρ 0.9, ε 1e-7.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsProp {
    /// Learning rate.
    pub learning_rate: f32,
    /// Decay of the running average of g².
    pub rho: f32,
    /// Added under the square root.
    pub epsilon: f32,
}

impl Default for RmsProp {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            rho: 0.9,
            epsilon: 1e-7,
        }
    }
}

impl Optimizer for RmsProp {
    fn name(&self) -> &'static str {
        "rmsprop"
    }
    fn learning_rate(&self) -> f32 {
        self.learning_rate
    }
    fn slots(&self) -> usize {
        1
    }
    fn update(&self, _t: u64, lr: f32, values: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]) {
        for ((w, &g), a) in values.iter_mut().zip(grad).zip(slots[0].iter_mut()) {
            *a = self.rho * *a + (1.0 - self.rho) * g * g;
            *w -= lr * g / (*a + self.epsilon).sqrt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_updates() {
        let rmsprop = RmsProp::default();
        let (mut w, mut state) = (vec![1.0f32], [0.0f32]);
        let mut slots: [&mut [f32]; 1] = [&mut state];
        // a = 0.1·0.25 = 0.025; w = 1 − 0.001·0.5/√0.0250001 = 1 − 0.00316227.
        rmsprop.update(1, 1e-3, &mut w, &[0.5], &mut slots);
        assert!((w[0] - (1.0 - 0.003_162_27)).abs() < 1e-6, "{}", w[0]);
        // a = 0.0225 + 0.025 = 0.0475; w −= 0.001·0.5/√0.0475001 = 0.00229416.
        rmsprop.update(2, 1e-3, &mut w, &[0.5], &mut slots);
        assert!(
            (w[0] - (1.0 - 0.003_162_27 - 0.002_294_16)).abs() < 1e-6,
            "{}",
            w[0]
        );
    }
}
