//! Fully connected layer ([`Dense`]): `y = x · W + b`, its weights stored `[in, out]` as Keras
//! stores them. All three passes are one GEMM over the whole batch, split by rows across the
//! rayon pool:
//! - forward: `Y = X · W + b`, the bias (and a fused activation, [`Linear`]) added in the GEMM's
//!   epilogue; a single sample is split by 64-column panels instead;
//! - weight gradient: `dW = Xᵀ · dY` (rows of `dW` split across threads), `db = Σ dY`;
//! - input gradient: `dX = dY · Wᵀ`.

use constnet_catalogue::LayerKind;
use rand::Rng;

use super::fused::Linear;
use super::{Layer, WeightBias, sum_per_channel};
use crate::init::Init;
use crate::kernels::elementwise::ActivationKind;
use crate::kernels::gemm::{Epilogue, MatMut, MatRef, gemm_parallel, split_k_scratch};
use crate::shape::Flat;
use crate::tensor::Batch;

/// A dense layer from `IN` features to `OUT` features.
///
/// ```
/// use constnet_runtime::layers::{Dense, Layer};
/// use constnet_runtime::{Batch, Flat, init::seeded_rng};
/// let dense = Dense::<9216, 128>::new(&mut seeded_rng(0));
/// assert_eq!(<Dense<9216, 128> as Layer>::PARAMS, 1_179_776);
/// let mut output = Batch::default();
/// dense.forward(&Batch::<Flat<9216>>::zeros(4), &mut output, &mut ());
/// assert_eq!(output.as_slice(), &[0.0; 4 * 128][..]);
/// ```
#[derive(Clone, Debug)]
pub struct Dense<const IN: usize, const OUT: usize> {
    /// `weight`: `[IN, OUT]`; `bias`: `[OUT]`.
    pub params: WeightBias,
}

impl<const IN: usize, const OUT: usize> Dense<IN, OUT> {
    const WEIGHT_DIMS: &'static [usize] = &[IN, OUT];

    /// A dense layer with Glorot-uniform weights and zero biases (Keras's defaults).
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self::with_init(Init::GlorotUniform, rng)
    }

    /// A dense layer whose weights are drawn by `init`, with zero biases.
    pub fn with_init<R: Rng + ?Sized>(init: Init, rng: &mut R) -> Self {
        const { assert!(IN > 0 && OUT > 0, "dense: both widths must be at least 1") };
        let mut params = WeightBias::zeros(Self::WEIGHT_DIMS, OUT);
        init.fill(&mut params.weight, IN, OUT, rng);
        Self { params }
    }

    fn weight(&self) -> MatRef<'_> {
        MatRef::row_major(&self.params.weight, IN, OUT)
    }
}

impl<const IN: usize, const OUT: usize> Layer for Dense<IN, OUT> {
    type Input = Flat<IN>;
    type Output = Flat<OUT>;
    type Grads = WeightBias;
    type Cache = ();
    const PARAMS: usize = IN * OUT + OUT;
    const MULS: usize = IN * OUT;
    const SCRATCH: usize = split_k_scratch(IN, OUT);

    fn kind(&self) -> LayerKind {
        LayerKind::Dense { units: OUT }
    }

    fn forward(&self, input: &Batch<Flat<IN>>, output: &mut Batch<Flat<OUT>>, _workspace: &mut ()) {
        self.forward_activated(input, output, ActivationKind::Identity, &mut ());
    }

    fn backward(
        &self,
        input: &Batch<Flat<IN>>,
        _output: &Batch<Flat<OUT>>,
        grad_output: &Batch<Flat<OUT>>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<Flat<IN>>>,
        grads: &mut WeightBias,
    ) {
        let samples = input.len();
        let dy = MatRef::row_major(grad_output.as_slice(), samples, OUT);
        gemm_parallel(
            MatMut::row_major(&mut grads.weight, IN, OUT),
            MatRef::row_major(input.as_slice(), samples, IN).t(),
            dy,
            false,
        );
        sum_per_channel(grad_output.as_slice(), &mut grads.bias);
        if let Some(grad_input) = grad_input {
            grad_input.resize(samples);
            gemm_parallel(
                MatMut::row_major(grad_input.as_mut_slice(), samples, IN),
                dy,
                self.weight().t(),
                false,
            );
        }
    }

    params_in_field!(params);
}

impl<const IN: usize, const OUT: usize> Linear for Dense<IN, OUT> {
    fn forward_activated(
        &self,
        input: &Batch<Flat<IN>>,
        output: &mut Batch<Flat<OUT>>,
        activation: ActivationKind,
        _cache: &mut (),
    ) {
        let samples = input.len();
        output.resize(samples);
        gemm_parallel(
            MatMut::row_major(output.as_mut_slice(), samples, OUT),
            MatRef::row_major(input.as_slice(), samples, IN),
            self.weight(),
            Epilogue {
                bias: Some(&self.params.bias),
                activation,
                ..Epilogue::default()
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::init::seeded_rng;
    use crate::reference::{assert_close, assert_gradients_close, dense_backward, dense_forward};

    fn matches_reference<const IN: usize, const OUT: usize>(samples: usize) {
        let mut rng = seeded_rng(IN as u64);
        let mut dense = Dense::<IN, OUT>::new(&mut rng);
        dense
            .params
            .bias
            .iter_mut()
            .for_each(|b| *b = rng.random_range(-1.0..1.0));
        let x = Batch::<Flat<IN>>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let dy = Batch::<Flat<OUT>>::from_fn(samples, |_| rng.random_range(-1.0..1.0));
        let what = format!("dense {IN} -> {OUT}, {samples} samples");
        let mut y = Batch::default();
        dense.forward_train(&x, &mut y, &mut ());
        let want = dense_forward(
            x.as_slice(),
            &dense.params.weight,
            &dense.params.bias,
            samples,
        );
        assert_close(&format!("{what}: forward"), y.as_slice(), &want, 1e-4);
        let mut dx = Batch::default();
        let mut grads = dense.new_grads();
        dense.backward(&x, &y, &dy, &mut (), Some(&mut dx), &mut grads);
        assert_gradients_close(
            &what,
            (dx.as_slice(), &grads.weight, &grads.bias),
            dense_backward(
                x.as_slice(),
                &dense.params.weight,
                dy.as_slice(),
                samples,
                OUT,
            ),
            1e-4,
        );
    }

    #[test]
    fn odd_sizes_match_the_reference() {
        matches_reference::<7, 3>(5);
        matches_reference::<1, 1>(1);
        matches_reference::<33, 17>(13);
        matches_reference::<128, 10>(64);
    }

    #[test]
    fn mnist_shapes_match_the_reference() {
        matches_reference::<9216, 128>(8);
        matches_reference::<128, 10>(128);
    }
}
