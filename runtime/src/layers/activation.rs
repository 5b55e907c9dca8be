//! Element-wise activations: one generic layer, [`Activation`], and one [`ActivationFn`] per
//! function (ReLU, leaky ReLU, sigmoid, tanh), each a value and a derivative. The values are the
//! functions of [`crate::kernels::elementwise`], which the GEMM also applies in its epilogue when
//! an activation is fused into the layer before it. The loops are plain and contiguous, so the
//! compiler vectorises them; they are memory-bound, not compute-bound.

use std::fmt::Debug;
use std::marker::PhantomData;

use rayon::prelude::*;

use constnet_catalogue::LayerKind;

use super::Layer;
use crate::kernels::elementwise::{self, ActivationKind};
use crate::shape::Shape;
use crate::tensor::Batch;

/// Values per parallel task ([`crate::context::Splits::min_activation_values`]): small batches
/// stay on one thread.
fn parallel_min_values() -> usize {
    crate::schedule::splits().min_activation_values
}

/// An element-wise function and its derivative.
pub trait ActivationFn: Clone + Debug + Send + Sync {
    /// `f(x)`.
    fn value(&self, x: f32) -> f32;
    /// `f'(x)`, given `x` and `y = f(x)` (whichever is cheaper to use).
    fn derivative(&self, x: f32, y: f32) -> f32;
    /// The function's layer kind in the catalogue; [`LayerKind::Custom`] for a function of
    /// one's own.
    fn layer_kind(&self) -> LayerKind {
        LayerKind::Custom
    }
}

/// An activation a GEMM applies in its epilogue, fused into the convolution or dense layer
/// before it (the catalogue's `fuses_into_epilogue`). The fused op keeps only its activated
/// output for backward, so the derivative must follow from the output alone.
pub trait EpilogueFn: ActivationFn {
    /// `f'(x)` from `y = f(x)` alone, equal to [`ActivationFn::derivative`] wherever it is
    /// used.
    fn derivative_from_output(&self, y: f32) -> f32;
    /// The same function as the GEMM epilogue applies it.
    fn epilogue(&self) -> ActivationKind;
}

/// `max(x, 0)`, NaN for NaN ([`elementwise::relu`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReluFn;

impl ActivationFn for ReluFn {
    fn value(&self, x: f32) -> f32 {
        elementwise::relu(x)
    }
    fn derivative(&self, x: f32, _y: f32) -> f32 {
        if x > 0.0 { 1.0 } else { 0.0 }
    }
    fn layer_kind(&self) -> LayerKind {
        LayerKind::Relu
    }
}

impl EpilogueFn for ReluFn {
    /// `y > 0` exactly when `x > 0` (NaN gives 0 either way).
    fn derivative_from_output(&self, y: f32) -> f32 {
        if y > 0.0 { 1.0 } else { 0.0 }
    }
    fn epilogue(&self) -> ActivationKind {
        ActivationKind::Relu
    }
}

/// `x` for positive `x`, `alpha · x` otherwise.
#[derive(Clone, Copy, Debug)]
pub struct LeakyReluFn {
    /// Slope for negative inputs; at least 0 (as Keras requires) for
    /// [`EpilogueFn::derivative_from_output`] to hold.
    pub alpha: f32,
}

impl ActivationFn for LeakyReluFn {
    fn value(&self, x: f32) -> f32 {
        elementwise::leaky_relu(x, self.alpha)
    }
    fn derivative(&self, x: f32, _y: f32) -> f32 {
        if x > 0.0 { 1.0 } else { self.alpha }
    }
    fn layer_kind(&self) -> LayerKind {
        LayerKind::LeakyRelu { alpha: self.alpha }
    }
}

impl EpilogueFn for LeakyReluFn {
    /// With `alpha >= 0`, `y > 0` exactly when `x > 0`.
    fn derivative_from_output(&self, y: f32) -> f32 {
        if y > 0.0 { 1.0 } else { self.alpha }
    }
    fn epilogue(&self) -> ActivationKind {
        ActivationKind::LeakyRelu(self.alpha)
    }
}

/// `1 / (1 + e^-x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SigmoidFn;

impl ActivationFn for SigmoidFn {
    fn value(&self, x: f32) -> f32 {
        elementwise::sigmoid(x)
    }
    fn derivative(&self, _x: f32, y: f32) -> f32 {
        self.derivative_from_output(y)
    }
    fn layer_kind(&self) -> LayerKind {
        LayerKind::Sigmoid
    }
}

impl EpilogueFn for SigmoidFn {
    fn derivative_from_output(&self, y: f32) -> f32 {
        y * (1.0 - y)
    }
    fn epilogue(&self) -> ActivationKind {
        ActivationKind::Sigmoid
    }
}

/// `tanh(x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TanhFn;

impl ActivationFn for TanhFn {
    fn value(&self, x: f32) -> f32 {
        elementwise::tanh(x)
    }
    fn derivative(&self, _x: f32, y: f32) -> f32 {
        self.derivative_from_output(y)
    }
    fn layer_kind(&self) -> LayerKind {
        LayerKind::Tanh
    }
}

impl EpilogueFn for TanhFn {
    fn derivative_from_output(&self, y: f32) -> f32 {
        1.0 - y * y
    }
    fn epilogue(&self) -> ActivationKind {
        ActivationKind::Tanh
    }
}

/// `x · Φ(x)`, `Φ` the standard normal distribution function: GELU in its exact form
/// (PyTorch's `nn.GELU()`, Keras's `gelu`), with `erf` from `libm`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeluFn;

/// `1 / √(2π)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 =
    std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2 / 2.0;

impl ActivationFn for GeluFn {
    fn value(&self, x: f32) -> f32 {
        x * normal_cdf(x)
    }
    /// `Φ(x) + x · φ(x)`, `φ` the standard normal density.
    fn derivative(&self, x: f32, _y: f32) -> f32 {
        normal_cdf(x) + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
    }
    fn layer_kind(&self) -> LayerKind {
        LayerKind::Gelu
    }
}

/// `Φ(x) = (1 + erf(x / √2)) / 2`.
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x · σ(x)`: Swish with β = 1, or SiLU (PyTorch's `nn.SiLU()`, Keras's `swish`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SwishFn;

impl ActivationFn for SwishFn {
    fn value(&self, x: f32) -> f32 {
        x * elementwise::sigmoid(x)
    }
    /// `σ(x) · (1 + x · (1 − σ(x)))`.
    fn derivative(&self, x: f32, _y: f32) -> f32 {
        let s = elementwise::sigmoid(x);
        s * (1.0 + x * (1.0 - s))
    }
    fn layer_kind(&self) -> LayerKind {
        LayerKind::Swish
    }
}

/// Applies `F` to every value of samples of shape `S`.
#[derive(Clone, Debug)]
pub struct Activation<S: Shape, F: ActivationFn> {
    /// The function.
    pub function: F,
    shape: PhantomData<S>,
}

/// ReLU over samples of shape `S`.
pub type Relu<S> = Activation<S, ReluFn>;
/// Leaky ReLU over samples of shape `S`.
pub type LeakyRelu<S> = Activation<S, LeakyReluFn>;
/// Sigmoid over samples of shape `S`.
pub type Sigmoid<S> = Activation<S, SigmoidFn>;
/// Tanh over samples of shape `S`.
pub type Tanh<S> = Activation<S, TanhFn>;
/// GELU over samples of shape `S`.
pub type Gelu<S> = Activation<S, GeluFn>;
/// Swish (SiLU) over samples of shape `S`.
pub type Swish<S> = Activation<S, SwishFn>;

impl<S: Shape, F: ActivationFn + Default> Activation<S, F> {
    /// The activation (for functions without settings).
    pub fn new() -> Self {
        Self::with(F::default())
    }
}

impl<S: Shape, F: ActivationFn + Default> Default for Activation<S, F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Shape, F: ActivationFn> Activation<S, F> {
    /// The activation of a configured function, e.g. `LeakyRelu::with(LeakyReluFn { alpha: 0.1 })`.
    pub fn with(function: F) -> Self {
        Self {
            function,
            shape: PhantomData,
        }
    }
}

impl<S: Shape> LeakyRelu<S> {
    /// Leaky ReLU with slope `alpha` for negative inputs.
    pub fn leaky(alpha: f32) -> Self {
        Self::with(LeakyReluFn { alpha })
    }
}

impl<S: Shape, F: ActivationFn> Layer for Activation<S, F> {
    type Input = S;
    type Output = S;
    type Cache = ();

    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, _workspace: &mut ()) {
        output.resize(input.len());
        let chunk = parallel_min_values();
        output
            .as_mut_slice()
            .par_chunks_mut(chunk)
            .zip(input.as_slice().par_chunks(chunk))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = self.function.value(x);
                }
            });
    }

    fn backward(
        &self,
        input: &Batch<S>,
        output: &Batch<S>,
        grad_output: &Batch<S>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<S>>,
        _grads: &mut Self::Grads,
    ) {
        let Some(grad_input) = grad_input else { return };
        grad_input.resize(input.len());
        let chunk = parallel_min_values();
        grad_input
            .as_mut_slice()
            .par_chunks_mut(chunk)
            .zip(input.as_slice().par_chunks(chunk))
            .zip(output.as_slice().par_chunks(chunk))
            .zip(grad_output.as_slice().par_chunks(chunk))
            .for_each(|(((dx, x), y), dy)| {
                for (((dx, &x), &y), &dy) in dx.iter_mut().zip(x).zip(y).zip(dy) {
                    *dx = dy * self.function.derivative(x, y);
                }
            });
    }

    fn kind(&self) -> LayerKind {
        self.function.layer_kind()
    }

    no_params!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(ReluFn.value(-2.0), 0.0);
        assert_eq!(ReluFn.value(3.0), 3.0);
        assert_eq!(LeakyReluFn { alpha: 0.1 }.value(-2.0), -0.2);
        assert!((SigmoidFn.value(0.0) - 0.5).abs() < 1e-7);
        assert!((TanhFn.value(1.0) - 1f32.tanh()).abs() < 1e-7);
        assert_eq!(SigmoidFn.value(-100.0), 0.0);
        assert_eq!(SigmoidFn.value(100.0), 1.0);
    }

    /// GELU and Swish against their definitions in f64, and their derivatives against central
    /// differences of their values.
    #[test]
    fn gelu_and_swish_match_their_definitions() {
        let gelu = |x: f64| x * 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let swish = |x: f64| x / (1.0 + (-x).exp());
        for i in -80..=80 {
            let x = i as f32 / 10.0;
            let close =
                |got: f32, want: f64| (f64::from(got) - want).abs() <= 1e-6 * (1.0 + want.abs());
            assert!(close(GeluFn.value(x), gelu(f64::from(x))), "gelu({x})");
            assert!(close(SwishFn.value(x), swish(f64::from(x))), "swish({x})");
            let h = 1e-4;
            let slope =
                |f: &dyn Fn(f64) -> f64| (f(f64::from(x) + h) - f(f64::from(x) - h)) / (2.0 * h);
            assert!(close(GeluFn.derivative(x, 0.0), slope(&gelu)), "gelu'({x})");
            assert!(
                close(SwishFn.derivative(x, 0.0), slope(&swish)),
                "swish'({x})"
            );
        }
        assert!(GeluFn.value(f32::NAN).is_nan() && SwishFn.value(f32::NAN).is_nan());
    }

    /// A NaN input stays NaN through every activation, and ReLU's layer pass keeps it.
    #[test]
    fn nan_propagates() {
        assert!(ReluFn.value(f32::NAN).is_nan());
        assert!(LeakyReluFn { alpha: 0.1 }.value(f32::NAN).is_nan());
        assert!(SigmoidFn.value(f32::NAN).is_nan());
        assert!(TanhFn.value(f32::NAN).is_nan());
        let relu = Relu::<crate::Flat<4>>::new();
        let input = Batch::from_vec(vec![-1.0, f32::NAN, 2.0, -0.0]).unwrap();
        let mut output = Batch::default();
        relu.forward(&input, &mut output, &mut ());
        let y = output.as_slice();
        assert_eq!((y[0], y[2]), (0.0, 2.0));
        assert!(y[1].is_nan(), "{y:?}");
    }
}
