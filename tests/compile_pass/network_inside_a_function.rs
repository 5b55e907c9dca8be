// A network defined inside a function, with a layer type of the user's defined there too, in a
// crate that denies warnings and missing docs: the expansion's hidden module and its imports
// resolve there, and it adds nothing a lint refuses.
#![deny(warnings, missing_docs)]
//! A network in a function.
use constnet::init::SeededRng;
use constnet::layers::{Build, Layer, NoParams, TensorVisitor, TensorVisitorMut, UpdateVisitor};
use constnet::{Batch, Flat, Shape};

fn main() {
    #[derive(Clone)]
    struct Double<S>(std::marker::PhantomData<S>);
    impl<S: Shape> Layer for Double<S> {
        type Input = S;
        type Output = S;
        type Grads = NoParams;
        type Cache = ();
        const PARAMS: usize = 0;
        fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, _cache: &mut ()) {
            output.clone_from(input);
            output.as_mut_slice().iter_mut().for_each(|v| *v *= 2.0);
        }
        fn backward(
            &self,
            _i: &Batch<S>,
            _o: &Batch<S>,
            _g: &Batch<S>,
            _c: &mut (),
            _gi: Option<&mut Batch<S>>,
            _gr: &mut NoParams,
        ) {
        }
        fn new_grads(&self) -> NoParams {
            NoParams
        }
        fn visit_params(&self, _v: &mut TensorVisitor<'_>) {}
        fn visit_params_mut(&mut self, _v: &mut TensorVisitorMut<'_>) {}
        fn update_params(&mut self, _g: &NoParams, _u: &mut UpdateVisitor<'_>) {}
    }
    impl<S> Build for Double<S> {
        fn build(_rng: &mut SeededRng) -> Self {
            Double(std::marker::PhantomData)
        }
    }
    constnet::network! {
        /// A small network.
        pub Tiny<input(4) dense(3) layer(Double<Flat<3>>) relu dense(2) softmax>
    }
    let net = Tiny::new(1);
    let mut workspace = TinyWorkspace::new();
    let out = net.infer(&Batch::<Flat<4>>::zeros(2), &mut workspace);
    assert_eq!(out.len(), 2);
    assert_eq!(Tiny::PARAMS, 4 * 3 + 3 + 3 * 2 + 2);
}
