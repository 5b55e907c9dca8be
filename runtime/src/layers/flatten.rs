//! [`Flatten`]: an image becomes a vector of its values in HWC order (as Keras flattens a
//! channels-last tensor), so a dense layer can follow a convolution.

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;

use super::Layer;
use crate::shape::{Flat, Shape};
use crate::tensor::Batch;

/// Reshapes samples of shape `I` into `Flat<N>`; `N` must be `I::LEN`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten<I: Shape, const N: usize> {
    shape: PhantomData<I>,
}

impl<I: Shape, const N: usize> Flatten<I, N> {
    /// Evaluated when the layer is built.
    const LENGTHS_AGREE: () = assert!(
        I::LEN == N,
        "flatten: the output length must be the number of input values (H * W * C)"
    );

    /// The layer.
    pub fn new() -> Self {
        let () = Self::LENGTHS_AGREE;
        Self { shape: PhantomData }
    }
}

impl<I: Shape, const N: usize> Layer for Flatten<I, N> {
    type Input = I;
    type Output = Flat<N>;
    type Cache = ();

    fn forward(&self, input: &Batch<I>, output: &mut Batch<Flat<N>>, _workspace: &mut ()) {
        let () = Self::LENGTHS_AGREE;
        output.resize(input.len());
        output.as_mut_slice().copy_from_slice(input.as_slice());
    }

    fn backward(
        &self,
        _input: &Batch<I>,
        _output: &Batch<Flat<N>>,
        grad_output: &Batch<Flat<N>>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<I>>,
        _grads: &mut Self::Grads,
    ) {
        if let Some(grad_input) = grad_input {
            grad_input.resize(grad_output.len());
            grad_input
                .as_mut_slice()
                .copy_from_slice(grad_output.as_slice());
        }
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Flatten
    }

    no_params!();
}
