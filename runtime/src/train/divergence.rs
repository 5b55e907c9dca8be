//! Non-finite values in a training step: a fast check that a tensor is all finite, and, when a
//! step fails it, where the first non-finite value appeared, in the order the step computes
//! them. Also the snapshot of the network's buffers (batch normalisation's running statistics)
//! that lets a failed step leave the network as it found it.

use std::fmt;

use crate::layers::{Layer, ParamSet};
use crate::network::Network;

/// Whether every value is finite. Branch-free over 16 lanes (`v · 0` is 0 for a finite `v` and
/// NaN otherwise), so it runs at memory speed on the parameter gradients of every step.
pub(super) fn all_finite(values: &[f32]) -> bool {
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v * 0.0;
        }
    }
    lanes.iter().chain(tail).all(|v| v.is_finite())
}

/// Where a training step first produced a NaN or an infinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonFinite {
    /// The input batch itself: the data set's sample at this index.
    Input {
        /// The sample's index in the training set.
        sample: usize,
    },
    /// An op's output in the forward pass.
    Output {
        /// The op's name: its layer's (`dense2`), or its layers' for a fused op (`conv1+relu1`).
        layer: &'static str,
    },
    /// The gradient of the loss with respect to an op's output, in the backward pass.
    OutputGradient {
        /// The op's name, as for [`NonFinite::Output`].
        layer: &'static str,
    },
    /// The gradient of a parameter tensor.
    ParamGradient {
        /// The tensor's name (`dense1.weight`).
        tensor: String,
    },
    /// The loss, from finite logits.
    Loss,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Input { sample } => write!(f, "training sample {sample} (the input)"),
            Self::Output { layer } => write!(f, "the output of `{layer}`"),
            Self::OutputGradient { layer } => {
                write!(f, "the gradient with respect to the output of `{layer}`")
            }
            Self::ParamGradient { tensor } => write!(f, "the gradient of `{tensor}`"),
            Self::Loss => write!(f, "the loss"),
        }
    }
}

/// The first non-finite value of a step, searching the input, then each layer's output first
/// to last, then (if `backward_ran`) each layer's output gradient and parameter gradients last
/// to first, the order backward computes them. `indices` maps batch rows to training samples.
pub(super) fn locate<N: Network>(
    input: &[f32],
    indices: &[usize],
    workspace: &N::Cache,
    grads: &N::Grads,
    backward_ran: bool,
) -> NonFinite {
    let sample_len = <N::Input as crate::shape::Shape>::LEN;
    if let Some(row) = input.chunks(sample_len).position(|s| !all_finite(s)) {
        return NonFinite::Input {
            sample: indices[row],
        };
    }
    let mut layers: Vec<(&'static str, bool, bool)> = Vec::new();
    N::visit_activations(workspace, &mut |layer, output, grad_output| {
        layers.push((layer, all_finite(output), all_finite(grad_output)))
    });
    if let Some(&(layer, ..)) = layers.iter().find(|(_, output_finite, _)| !output_finite) {
        return NonFinite::Output { layer };
    }
    if !backward_ran {
        return NonFinite::Loss;
    }
    let mut bad_grads: Vec<String> = Vec::new();
    grads.visit(&mut |tensor, _, values| {
        if !all_finite(values) {
            bad_grads.push(tensor.to_string());
        }
    });
    for &(layer, _, grad_output_finite) in layers.iter().rev() {
        if !grad_output_finite {
            return NonFinite::OutputGradient { layer };
        }
        let prefix = format!("{layer}.");
        if let Some(tensor) = bad_grads.iter().find(|t| t.starts_with(&prefix)) {
            return NonFinite::ParamGradient {
                tensor: tensor.clone(),
            };
        }
    }
    bad_grads
        .into_iter()
        .next()
        .map_or(NonFinite::Loss, |tensor| NonFinite::ParamGradient {
            tensor,
        })
}

/// Whether every parameter gradient is finite.
pub(super) fn grads_finite(grads: &impl ParamSet) -> bool {
    let mut finite = true;
    grads.visit(&mut |_, _, values| finite &= all_finite(values));
    finite
}

/// The values of a network's buffers, which a training forward pass updates (batch
/// normalisation's running statistics), kept so a failed step can put them back.
#[derive(Default)]
pub(super) struct BufferSnapshot {
    values: Vec<f32>,
}

impl BufferSnapshot {
    /// Records `network`'s buffers (nothing for a network without any).
    pub(super) fn take<L: Layer>(&mut self, network: &L) {
        self.values.clear();
        if L::BUFFERS > 0 {
            network.visit_buffers(&mut |_, _, values| self.values.extend_from_slice(values));
        }
    }

    /// Writes the recorded buffers back into `network`.
    pub(super) fn restore<L: Layer>(&self, network: &mut L) {
        let mut offset = 0;
        network.visit_buffers_mut(&mut |_, values| {
            values.copy_from_slice(&self.values[offset..offset + values.len()]);
            offset += values.len();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_any_nan_or_infinity_anywhere() {
        let mut values = vec![1.0e30f32; 37];
        assert!(all_finite(&values));
        assert!(all_finite(&[]));
        for position in [0, 15, 16, 31, 32, 36] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                values[position] = bad;
                assert!(!all_finite(&values), "{bad} at {position}");
                values[position] = -3.0e38;
            }
        }
    }
}
