//! The fused operations a network's plan chooses: a linear layer (convolution or dense) with
//! the activation after it, computed as one op. Forward applies the activation in the GEMM's
//! epilogue while each tile is in registers, so the pre-activation is never written; backward
//! turns the gradient of the activated output into the gradient of the pre-activation in place
//! (`f'` taken from the output, [`ActivationFn::derivative_from_output`]) and runs the linear
//! layer's backward. Both equal the two unfused layers bit for bit.

use super::{ActivationFn, Layer};
use crate::kernels::elementwise::ActivationKind;
use crate::tensor::Batch;

/// A layer computing `activation(linear(x) + bias)` with the activation in its GEMM epilogue:
/// [`Conv2d`](super::Conv2d) and [`Dense`](super::Dense).
pub trait Linear: Layer {
    /// Inference forward pass followed by `activation`; [`Layer::forward`] is this with
    /// [`ActivationKind::Identity`].
    fn forward_activated(
        &self,
        input: &Batch<Self::Input>,
        output: &mut Batch<Self::Output>,
        activation: ActivationKind,
    );
}

/// Multiply-adds one part of a split sample must have to gain from another thread.
const MIN_MULS_PER_PART: usize = 1 << 16;

/// How many parts to split each sample's `pixels` output rows into (1: run whole samples per
/// thread instead): only when the batch has fewer samples than the pool has threads and each
/// part keeps enough work, `muls_per_pixel` multiply-adds per row.
pub(crate) fn pixel_parts(samples: usize, pixels: usize, muls_per_pixel: usize) -> usize {
    let threads = rayon::current_num_threads();
    if samples >= threads {
        return 1;
    }
    threads
        .min(pixels.saturating_mul(muls_per_pixel) / MIN_MULS_PER_PART)
        .min(pixels)
        .max(1)
}

/// `output = activation(linear(input))` in one pass, for inference and training alike (neither
/// layer keeps anything else for backward).
pub fn linear_activation_forward<L: Linear, F: ActivationFn>(
    linear: &L,
    activation: &F,
    input: &Batch<L::Input>,
    output: &mut Batch<L::Output>,
) {
    linear.forward_activated(input, output, activation.kind());
}

/// Backward of [`linear_activation_forward`], from its input, its (activated) output and the
/// gradient with respect to that output. `grad_output` is overwritten with the gradient with
/// respect to the pre-activation, then the linear layer's backward fills `grad_input` (if
/// asked for) and `grads`.
#[allow(clippy::too_many_arguments)]
pub fn linear_activation_backward<L: Linear, F: ActivationFn>(
    linear: &L,
    activation: &F,
    input: &Batch<L::Input>,
    output: &Batch<L::Output>,
    grad_output: &mut Batch<L::Output>,
    cache: &mut L::Cache,
    grad_input: Option<&mut Batch<L::Input>>,
    grads: &mut L::Grads,
) {
    for (grad, &y) in grad_output.as_mut_slice().iter_mut().zip(output.as_slice()) {
        *grad *= activation.derivative_from_output(y);
    }
    linear.backward(input, output, grad_output, cache, grad_input, grads);
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::init::seeded_rng;
    use crate::layers::{
        Activation, Conv2d, Dense, LeakyReluFn, ReluFn, Same, SigmoidFn, TanhFn, Valid,
    };
    use crate::shape::{Hwc, Shape};

    /// Random values in [-1, 1), a quarter of them exactly zero (ReLU's kink).
    fn random<S: Shape>(samples: usize, seed: u64) -> Batch<S> {
        let mut rng = seeded_rng(seed);
        Batch::from_fn(samples, |_| {
            if rng.random_range(0..4) == 0 {
                0.0
            } else {
                rng.random_range(-1.0..1.0)
            }
        })
    }

    /// The fused op against the linear layer followed by the activation layer: forward, input
    /// gradient and every parameter gradient, bit for bit.
    fn fused_equals_unfused<L: Linear, F: ActivationFn>(mut linear: L, function: F, samples: usize)
    where
        L::Grads: PartialEq + std::fmt::Debug,
    {
        let activation = Activation::<L::Output, F>::with(function.clone());
        let what = format!(
            "{} with {function:?}, {samples} samples",
            std::any::type_name::<L>()
        );
        let x = random::<L::Input>(samples, 1);
        let dy = random::<L::Output>(samples, 2);

        let (mut pre, mut y) = (Batch::default(), Batch::default());
        linear.forward_train(&x, &mut pre, &mut Default::default());
        activation.forward(&pre, &mut y, &mut ());
        let mut fused_y = Batch::default();
        linear_activation_forward(&linear, &function, &x, &mut fused_y);
        assert_eq!(fused_y.as_slice(), y.as_slice(), "{what}: forward");

        let (mut dpre, mut dx) = (Batch::default(), Batch::default());
        let mut grads = linear.new_grads();
        activation.backward(
            &pre,
            &y,
            &dy,
            &mut (),
            Some(&mut dpre),
            &mut Default::default(),
        );
        linear.backward(
            &x,
            &pre,
            &dpre,
            &mut Default::default(),
            Some(&mut dx),
            &mut grads,
        );

        let (mut fused_dy, mut fused_dx) = (dy.clone(), Batch::default());
        let mut fused_grads = linear.new_grads();
        linear_activation_backward(
            &linear,
            &function,
            &x,
            &fused_y,
            &mut fused_dy,
            &mut Default::default(),
            Some(&mut fused_dx),
            &mut fused_grads,
        );
        assert_eq!(fused_dx.as_slice(), dx.as_slice(), "{what}: input gradient");
        assert_eq!(fused_grads, grads, "{what}: parameter gradients");
    }

    fn every_activation<L: Linear + Clone>(linear: L, samples: usize)
    where
        L::Grads: PartialEq + std::fmt::Debug,
    {
        fused_equals_unfused(linear.clone(), ReluFn, samples);
        fused_equals_unfused(linear.clone(), LeakyReluFn { alpha: 0.3 }, samples);
        fused_equals_unfused(linear.clone(), SigmoidFn, samples);
        fused_equals_unfused(linear, TanhFn, samples);
    }

    #[test]
    fn conv_with_activation_equals_the_two_layers() {
        let mut rng = seeded_rng(5);
        for samples in [1, 3] {
            every_activation(
                Conv2d::<Hwc<7, 5, 3>, Hwc<4, 3, 5>, 3, 2, Same>::new(&mut rng),
                samples,
            );
            every_activation(
                Conv2d::<Hwc<9, 9, 2>, Hwc<7, 7, 17>, 3, 1, Valid>::new(&mut rng),
                samples,
            );
        }
        // Large enough that a batch of one is split between threads.
        every_activation(
            Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::new(&mut rng),
            1,
        );
    }

    #[test]
    fn dense_with_activation_equals_the_two_layers() {
        let mut rng = seeded_rng(6);
        for samples in [1, 5] {
            every_activation(Dense::<7, 3>::new(&mut rng), samples);
            every_activation(Dense::<33, 70>::new(&mut rng), samples);
        }
        // Large enough that a single sample is split by columns.
        every_activation(Dense::<9216, 128>::new(&mut rng), 1);
    }
}
