//! Optimisers: an update rule per file ([`Sgd`], [`Adam`], [`Adadelta`], [`RmsProp`], with
//! Keras's formulas and defaults), and [`OptimizerState`], which applies a rule to a network:
//! it keeps each parameter tensor's state, adds L1/L2 regularisation, follows a learning-rate
//! schedule, and leaves frozen layers untouched.

mod adadelta;
mod adam;
mod rmsprop;
mod sgd;

use std::fmt::Debug;

use rayon::prelude::*;

pub use adadelta::Adadelta;
pub use adam::Adam;
pub use rmsprop::RmsProp;
pub use sgd::Sgd;

use crate::layers::Layer;

/// An update rule for one parameter tensor. Rules are element-wise: [`OptimizerState`] applies
/// them to chunks of large tensors in parallel.
pub trait Optimizer: Debug + Send + Sync {
    /// The rule's name, for logs.
    fn name(&self) -> &'static str;
    /// The base learning rate (before any schedule).
    fn learning_rate(&self) -> f32;
    /// Number of state vectors the rule keeps per tensor (momentum, moments, ...).
    fn slots(&self) -> usize;
    /// Updates `values` from `grad` at step `t` (1 for the first), with learning rate `lr`;
    /// `slots` holds the state of these values, each slot as long as `values`. Each element must
    /// be updated from its own values alone (it may be called on any chunk of a tensor).
    fn update(&self, t: u64, lr: f32, values: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]);
}

/// Penalties added to the loss for every tensor named `weight` (kernels of conv and dense layers,
/// batch normalisation's scale): `l1 · Σ|w| + l2 · Σw²`, whose gradients `l1 · sign(w)` and
/// `2 · l2 · w` are added to the weights' gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Regularization {
    /// L1 factor.
    pub l1: f32,
    /// L2 factor (Keras's `L2(l2)`; PyTorch's `weight_decay` is `2 · l2`).
    pub l2: f32,
}

/// The learning rate as a function of the epoch (0 for the first).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// The base rate times `factor` every `every` epochs.
    Step {
        /// Epochs between reductions.
        every: usize,
        /// Multiplier at each reduction.
        factor: f32,
    },
    /// The base rate times `decay^epoch`.
    Exponential {
        /// Multiplier per epoch.
        decay: f32,
    },
    /// Cosine decay from the base rate to zero over `epochs`.
    Cosine {
        /// Length of the decay.
        epochs: usize,
    },
}

impl Schedule {
    /// The multiplier of the base rate in `epoch`.
    pub fn factor(&self, epoch: usize) -> f32 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, factor } => factor.powi((epoch / every.max(1)) as i32),
            Schedule::Exponential { decay } => decay.powi(epoch as i32),
            Schedule::Cosine { epochs } => {
                let progress = (epoch as f32 / epochs.max(1) as f32).min(1.0);
                0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
    }
}

/// An update rule applied to a network: per-tensor state, regularisation, schedule, frozen layers.
#[derive(Debug)]
pub struct OptimizerState {
    optimizer: Box<dyn Optimizer>,
    /// Penalties on weights.
    pub regularization: Regularization,
    /// Learning rate by epoch.
    pub schedule: Schedule,
    frozen: Vec<String>,
    /// Per tensor (in visiting order), per slot.
    state: Vec<Vec<Vec<f32>>>,
    steps: u64,
}

impl OptimizerState {
    /// Applies `optimizer` with no regularisation, a constant rate and nothing frozen.
    pub fn new(optimizer: impl Optimizer + 'static) -> Self {
        Self {
            optimizer: Box::new(optimizer),
            regularization: Regularization::default(),
            schedule: Schedule::default(),
            frozen: Vec::new(),
            state: Vec::new(),
            steps: 0,
        }
    }

    /// The rule.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// Freezes the layers named in `layers` (`conv1`, ...): their parameters and state are
    /// never touched.
    pub fn freeze(&mut self, layers: &[&str]) {
        self.frozen.extend(layers.iter().map(|l| l.to_string()));
    }

    /// Whether the tensor `name` (`conv1.weight`) belongs to a frozen layer.
    pub fn is_frozen(&self, name: &str) -> bool {
        belongs_to_any(name, &self.frozen)
    }

    /// The learning rate in `epoch`.
    pub fn learning_rate(&self, epoch: usize) -> f32 {
        self.optimizer.learning_rate() * self.schedule.factor(epoch)
    }

    /// Applies one step to every unfrozen parameter of `network` from `grads`.
    pub fn step<L: Layer>(&mut self, network: &mut L, grads: &L::Grads, epoch: usize) {
        self.steps += 1;
        let (t, lr) = (self.steps, self.learning_rate(epoch));
        let Self {
            optimizer,
            regularization,
            frozen,
            state,
            ..
        } = self;
        let slots = optimizer.slots();
        let mut index = 0;
        let mut regularized = Vec::new();
        network.update_params(grads, &mut |name, values, grad| {
            let tensor = index;
            index += 1;
            if belongs_to_any(name, frozen) {
                return;
            }
            if state.len() <= tensor {
                state.resize_with(tensor + 1, Vec::new);
            }
            let tensor_state = &mut state[tensor];
            if tensor_state.is_empty() {
                *tensor_state = vec![vec![0.0; values.len()]; slots];
            }
            let grad = if name.ends_with(".weight") || name == "weight" {
                if *regularization == Regularization::default() {
                    grad
                } else {
                    regularized.clear();
                    regularized.extend(grad.iter().zip(values.iter()).map(|(&g, &w)| {
                        g + regularization.l1 * w.signum() * f32::from(w != 0.0)
                            + 2.0 * regularization.l2 * w
                    }));
                    &regularized
                }
            } else {
                grad
            };
            update_in_chunks(optimizer.as_ref(), t, lr, values, grad, tensor_state);
        });
    }
}

/// Values per parallel task of an update: small tensors stay on the calling thread.
const UPDATE_CHUNK: usize = 1 << 15;

/// Applies `optimizer` to matching chunks of `values`, `grad` and every state slot, in parallel.
fn update_in_chunks(
    optimizer: &dyn Optimizer,
    t: u64,
    lr: f32,
    values: &mut [f32],
    grad: &[f32],
    state: &mut [Vec<f32>],
) {
    let mut slot_chunks: Vec<Vec<&mut [f32]>> = (0..values.len().div_ceil(UPDATE_CHUNK))
        .map(|_| Vec::with_capacity(state.len()))
        .collect();
    for slot in state.iter_mut() {
        for (chunk, part) in slot.chunks_mut(UPDATE_CHUNK).enumerate() {
            slot_chunks[chunk].push(part);
        }
    }
    values
        .par_chunks_mut(UPDATE_CHUNK)
        .zip(grad.par_chunks(UPDATE_CHUNK))
        .zip(slot_chunks)
        .for_each(|((values, grad), mut slots)| optimizer.update(t, lr, values, grad, &mut slots));
}

/// Whether the tensor `name` (`conv1.weight`) belongs to one of `layers` (`conv1`).
fn belongs_to_any(name: &str, layers: &[String]) -> bool {
    layers.iter().any(|layer| {
        name.strip_prefix(layer.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_rng;
    use crate::layers::{Chain, Dense, ParamSet};

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.factor(7), 1.0);
        assert_eq!(
            Schedule::Step {
                every: 2,
                factor: 0.5
            }
            .factor(5),
            0.25
        );
        assert!((Schedule::Exponential { decay: 0.9 }.factor(2) - 0.81).abs() < 1e-6);
        assert_eq!(Schedule::Cosine { epochs: 4 }.factor(0), 1.0);
        assert!((Schedule::Cosine { epochs: 4 }.factor(2) - 0.5).abs() < 1e-6);
        assert!(Schedule::Cosine { epochs: 4 }.factor(4).abs() < 1e-6);
    }

    /// Frozen layers keep their parameters bit for bit; the others move; L2 adds 2·l2·w to the
    /// weights' gradients but not the biases'.
    #[test]
    fn frozen_layers_and_regularization() {
        let mut rng = seeded_rng(0);
        let mut net = Chain::new(Dense::<3, 4>::new(&mut rng), Dense::<4, 2>::new(&mut rng));
        let before = net.clone();
        let mut grads = net.new_grads();
        grads.visit_mut(&mut |_, g| g.fill(1.0));
        let mut state = OptimizerState::new(Sgd::new(0.1));
        state.freeze(&["0"]);
        state.regularization.l2 = 0.5;
        state.step(&mut net, &grads, 0);
        assert_eq!(net.first.params, before.first.params);
        for (w, w0) in net
            .second
            .params
            .weight
            .iter()
            .zip(&before.second.params.weight)
        {
            assert!((w - (w0 - 0.1 * (1.0 + w0))).abs() < 1e-6);
        }
        assert!(
            net.second
                .params
                .bias
                .iter()
                .all(|&b| (b + 0.1).abs() < 1e-7)
        );
        assert!(state.is_frozen("0.weight") && !state.is_frozen("1.weight"));
    }

    /// A tensor larger than one chunk is updated in parallel pieces, bit for bit as in one piece.
    #[test]
    fn chunked_updates_equal_whole_updates() {
        let mut net = Dense::<300, 300>::new(&mut seeded_rng(2));
        let mut grads = net.new_grads();
        grads.visit_mut(&mut |_, g| {
            g.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (i % 7) as f32 - 3.0)
        });
        let adam = Adam::default();
        let (mut weight, mut m, mut v) = (
            net.params.weight.clone(),
            vec![0.0; 90_000],
            vec![0.0; 90_000],
        );
        let mut state = OptimizerState::new(adam);
        for t in 1..=3 {
            state.step(&mut net, &grads, 0);
            adam.update(t, 1e-3, &mut weight, &grads.weight, &mut [&mut m, &mut v]);
        }
        assert!(weight.len() > UPDATE_CHUNK);
        assert_eq!(net.params.weight, weight);
    }

    /// L1 adds `l1 · sign(w)`.
    #[test]
    fn l1_regularization() {
        let mut net = Dense::<2, 1>::new(&mut seeded_rng(1));
        net.params.weight = vec![0.5, -0.25];
        let grads = net.new_grads();
        let mut state = OptimizerState::new(Sgd::new(1.0));
        state.regularization.l1 = 0.1;
        state.step(&mut net, &grads, 0);
        assert_eq!(net.params.weight, [0.4, -0.15]);
    }
}
