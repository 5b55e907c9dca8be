//! The join of a residual block, `y = x + f(x)` (or `project(x) + f(x)`): the addition that
//! `network!` writes at a block's end, its backward (the gradient reaches both paths), and the
//! state a training pass keeps for it.
//!
//! The addition is not a [`Layer`](super::Layer): it reads two values. Its backward gives the
//! output gradient unchanged to the block's layers and to the shortcut; the gradient of the
//! block's input is then the sum of what its first layer gives back and what the shortcut
//! does, which [`accumulate_gradient`] adds once the first layer has written its share.

use crate::shape::Shape;
use crate::tensor::Batch;

/// What a training pass keeps for the addition of a residual block from `I` to `O`.
pub struct ResidualState<I: Shape, O: Shape> {
    /// The block's output, `x + f(x)`.
    pub output: Batch<O>,
    /// The gradient with respect to the block's output, filled by the op after it.
    pub grad_output: Batch<O>,
    /// With a projection shortcut, the gradient the projection gives the block's input (empty
    /// without one: the identity shortcut passes `grad_output` on as it is).
    pub grad_skip: Batch<I>,
}

impl<I: Shape, O: Shape> Default for ResidualState<I, O> {
    fn default() -> Self {
        Self {
            output: Batch::default(),
            grad_output: Batch::default(),
            grad_skip: Batch::default(),
        }
    }
}

/// `output = body + skip`, sample by sample.
///
/// # Panics
/// If `body` and `skip` hold different numbers of samples (a generated network never does).
pub fn residual_add_forward<S: Shape>(body: &Batch<S>, skip: &Batch<S>, output: &mut Batch<S>) {
    assert_eq!(
        body.len(),
        skip.len(),
        "a residual block's two paths disagree"
    );
    output.resize(body.len());
    for ((sum, b), s) in output
        .as_mut_slice()
        .iter_mut()
        .zip(body.as_slice())
        .zip(skip.as_slice())
    {
        *sum = b + s;
    }
}

/// Adds `contribution` to the gradient `grad` (if the caller wants it): the share of a
/// value's gradient that reaches it by a second path.
///
/// # Panics
/// If `grad` is given and holds a different number of samples than `contribution`.
pub fn accumulate_gradient<S: Shape>(grad: Option<&mut Batch<S>>, contribution: &Batch<S>) {
    let Some(grad) = grad else {
        return;
    };
    assert_eq!(
        grad.len(),
        contribution.len(),
        "a gradient and its share disagree"
    );
    for (g, c) in grad.as_mut_slice().iter_mut().zip(contribution.as_slice()) {
        *g += c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Flat;

    #[test]
    fn the_addition_and_the_gradient_share_add_value_by_value() {
        let body = Batch::<Flat<3>>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let skip = Batch::<Flat<3>>::from_vec(vec![0.5, -2.0, 0.0, 1.0, 1.0, -6.0]).unwrap();
        let mut output = Batch::default();
        residual_add_forward(&body, &skip, &mut output);
        assert_eq!(output.as_slice(), &[1.5, 0.0, 3.0, 5.0, 6.0, 0.0]);

        let mut grad = body.clone();
        accumulate_gradient(Some(&mut grad), &skip);
        assert_eq!(grad.as_slice(), output.as_slice());
        accumulate_gradient(None, &skip);
    }
}
