//! Stochastic gradient descent with optional momentum and Nesterov momentum (Keras's `SGD`):
//! `v ← m·v − lr·g`, then `w ← w + v`, or `w ← w + m·v − lr·g` with Nesterov.

use super::Optimizer;

/// SGD; momentum 0 by default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub learning_rate: f32,
    /// Momentum factor `m`.
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Sgd {
    /// Plain SGD with learning rate `learning_rate`.
    pub fn new(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            momentum: 0.0,
            nesterov: false,
        }
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }
    fn learning_rate(&self) -> f32 {
        self.learning_rate
    }
    fn slots(&self) -> usize {
        1
    }
    fn update(&self, _t: u64, lr: f32, values: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]) {
        let m = self.momentum;
        for ((w, &g), v) in values.iter_mut().zip(grad).zip(slots[0].iter_mut()) {
            *v = m * *v - lr * g;
            *w += if self.nesterov { m * *v - lr * g } else { *v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_updates() {
        let run = |sgd: Sgd| {
            let (mut w, mut state) = (vec![1.0f32], [0.0f32]);
            let mut slots: [&mut [f32]; 1] = [&mut state];
            sgd.update(1, sgd.learning_rate, &mut w, &[0.5], &mut slots);
            sgd.update(2, sgd.learning_rate, &mut w, &[0.5], &mut slots);
            w[0]
        };
        // Plain: 1 − 0.1·0.5 − 0.1·0.5.
        assert!((run(Sgd::new(0.1)) - 0.9).abs() < 1e-7);
        // Momentum 0.9: v1 = −0.05, w = 0.95; v2 = −0.045 − 0.05 = −0.095, w = 0.855.
        let momentum = Sgd {
            momentum: 0.9,
            ..Sgd::new(0.1)
        };
        assert!((run(momentum) - 0.855).abs() < 1e-6);
        // Nesterov: w1 = 1 + 0.9·(−0.05) − 0.05 = 0.905; w2 = 0.905 + 0.9·(−0.095) − 0.05 = 0.7695.
        let nesterov = Sgd {
            nesterov: true,
            ..momentum
        };
        assert!((run(nesterov) - 0.7695).abs() < 1e-6);
    }
}
