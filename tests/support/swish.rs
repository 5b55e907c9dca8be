//! `Swish`, a layer of the user's without parameters, for the tests of `layer(T)`.

use constnet::init::SeededRng;
use constnet::layers::{Build, Layer, NoParams, TensorVisitor, TensorVisitorMut, UpdateVisitor};
use constnet::{Batch, Shape};

/// `x · σ(x)` (Swish, SiLU), a layer without parameters of any shape.
#[derive(Clone, Debug, Default)]
pub struct Swish<S>(std::marker::PhantomData<S>);

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl<S: Shape> Layer for Swish<S> {
    type Input = S;
    type Output = S;
    type Grads = NoParams;
    type Cache = ();
    const PARAMS: usize = 0;

    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, _cache: &mut ()) {
        output.resize(input.len());
        for (y, &x) in output.as_mut_slice().iter_mut().zip(input.as_slice()) {
            *y = x * sigmoid(x);
        }
    }

    fn backward(
        &self,
        input: &Batch<S>,
        _output: &Batch<S>,
        grad_output: &Batch<S>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<S>>,
        _grads: &mut NoParams,
    ) {
        let Some(dx) = grad_input else { return };
        dx.resize(input.len());
        let values = input.as_slice().iter().zip(grad_output.as_slice());
        for (dx, (&x, &dy)) in dx.as_mut_slice().iter_mut().zip(values) {
            let s = sigmoid(x);
            *dx = dy * (s + x * s * (1.0 - s));
        }
    }

    fn new_grads(&self) -> NoParams {
        NoParams
    }
    fn visit_params(&self, _visit: &mut TensorVisitor<'_>) {}
    fn visit_params_mut(&mut self, _visit: &mut TensorVisitorMut<'_>) {}
    fn update_params(&mut self, _grads: &NoParams, _update: &mut UpdateVisitor<'_>) {}
}

impl<S> Build for Swish<S> {
    fn build(_rng: &mut SeededRng) -> Self {
        Swish(std::marker::PhantomData)
    }
}
