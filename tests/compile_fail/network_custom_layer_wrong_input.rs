// A custom layer must take the shape its neighbour gives: this one takes 12x12x32 images, but
// the convolution before it makes 12x12x64.
use constnet::init::SeededRng;
use constnet::layers::{Build, Layer, NoParams, TensorVisitor, TensorVisitorMut, UpdateVisitor};
use constnet::{Batch, Hwc, Shape};

#[derive(Clone)]
pub struct Swish<S>(std::marker::PhantomData<S>);

impl<S: Shape> Layer for Swish<S> {
    type Input = S;
    type Output = S;
    type Grads = NoParams;
    type Cache = ();
    const PARAMS: usize = 0;
    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, _cache: &mut ()) {
        output.clone_from(input);
    }
    fn backward(
        &self,
        _input: &Batch<S>,
        _output: &Batch<S>,
        _grad_output: &Batch<S>,
        _cache: &mut (),
        _grad_input: Option<&mut Batch<S>>,
        _grads: &mut NoParams,
    ) {
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

constnet::network! {
    Net<input(14, 14, 1) conv(64, 3) layer(Swish<Hwc<12, 12, 32>>) flatten dense(10)>
}

fn main() {}
