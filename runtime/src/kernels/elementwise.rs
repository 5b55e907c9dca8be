//! The element-wise activation functions, defined once: the activation layers apply them in
//! their own pass, and the GEMM applies them in its epilogue ([`ActivationKind`]) when the plan
//! of a network fuses an activation into the convolution or dense layer before it. Both paths
//! call the same scalar functions (and ReLU's vector form agrees with its scalar one bit for
//! bit), so a fused layer computes exactly what the two unfused layers compute.

/// `max(x, 0)`, NaN for NaN (as in PyTorch and TensorFlow, so a NaN surfaces at the layer that
/// made it instead of vanishing). Not `x.max(0.0)`, which returns 0 for NaN; `x < 0` is false
/// for NaN.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// `x` for positive `x`, `alpha · x` otherwise.
#[inline(always)]
pub fn leaky_relu(x: f32, alpha: f32) -> f32 {
    if x > 0.0 { x } else { alpha * x }
}

/// `x` where `x > acc` or `x` is NaN, otherwise `acc`: a maximum that keeps NaN (a NaN `acc`
/// stays, since no comparison with it is true) and, of two equal values, the first. Not
/// `acc.max(x)`, which drops NaN.
#[inline(always)]
pub fn max_keep_nan(acc: f32, x: f32) -> f32 {
    if x > acc || x.is_nan() { x } else { acc }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `tanh(x)`.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    x.tanh()
}

/// An activation the GEMM can apply to its output as it stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ActivationKind {
    /// No activation.
    #[default]
    Identity,
    /// [`relu`], applied to the register tile before it is stored.
    Relu,
    /// [`leaky_relu`] with this slope, applied to the stored tile while it is in L1.
    LeakyRelu(f32),
    /// [`sigmoid`], applied to the stored tile while it is in L1.
    Sigmoid,
    /// [`tanh`], applied to the stored tile while it is in L1.
    Tanh,
}

impl ActivationKind {
    /// The function at `x`.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Identity => x,
            Self::Relu => relu(x),
            Self::LeakyRelu(alpha) => leaky_relu(x, alpha),
            Self::Sigmoid => sigmoid(x),
            Self::Tanh => tanh(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_nan() {
        assert_eq!(relu(-2.0), 0.0);
        assert_eq!(relu(3.0), 3.0);
        assert_eq!(leaky_relu(-2.0, 0.1), -0.2);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(sigmoid(-100.0), 0.0);
        assert_eq!(sigmoid(100.0), 1.0);
        for kind in [
            ActivationKind::Identity,
            ActivationKind::Relu,
            ActivationKind::LeakyRelu(0.1),
            ActivationKind::Sigmoid,
            ActivationKind::Tanh,
        ] {
            assert!(kind.apply(f32::NAN).is_nan(), "{kind:?}");
        }
        assert_eq!(ActivationKind::Tanh.apply(1.0), 1f32.tanh());
    }
}
