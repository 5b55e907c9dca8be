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
    /// Number of state vectors the rule keeps per tensor (momentum, moments, ...), at most
    /// [`MAX_SLOTS`].
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

/// Why an optimiser state cannot be applied to a network; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptimizerError {
    /// `freeze` named a layer the network does not have.
    #[error("cannot freeze `{layer}`: the network has no such layer with parameters; it has {}", available.join(", "))]
    UnknownLayer {
        /// The name given.
        layer: String,
        /// The layers with parameters the network has, in order.
        available: Vec<String>,
    },
    /// The state was made by steps on a network whose parameters differ from this one's.
    #[error(
        "this optimiser state belongs to another network: its tensor {index} is {expected}, \
         but this network's is {found}"
    )]
    StateMismatch {
        /// Index of the first tensor that differs, in visiting order.
        index: usize,
        /// That tensor in the state (`conv1.weight` of 288 values), or `absent`.
        expected: String,
        /// That tensor in the network, or `absent`.
        found: String,
    },
}

/// An update rule applied to a network: per-tensor state, regularisation, schedule, frozen layers.
///
/// The state is bound to the first network it steps: each later step checks that the network's
/// parameter tensors have the same names and sizes, and refuses another network.
#[derive(Debug)]
pub struct OptimizerState {
    optimizer: Box<dyn Optimizer>,
    /// Penalties on weights.
    pub regularization: Regularization,
    /// Learning rate by epoch.
    pub schedule: Schedule,
    frozen: Vec<String>,
    /// Name and length of each parameter tensor of the network the state belongs to, in
    /// visiting order (empty before the first step).
    tensors: Vec<(String, usize)>,
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
            tensors: Vec::new(),
            state: Vec::new(),
            steps: 0,
        }
    }

    /// The rule.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// Freezes the layers of `network` named in `layers` (`conv1`, ...): their parameters and
    /// state are never touched.
    ///
    /// # Errors
    /// [`OptimizerError::UnknownLayer`], listing the layers with parameters, if a name is not
    /// one of them; then nothing is frozen.
    pub fn freeze<L: Layer>(&mut self, network: &L, layers: &[&str]) -> Result<(), OptimizerError> {
        let available = layers_with_params(network);
        if let Some(unknown) = layers.iter().find(|layer| {
            !available
                .iter()
                .any(|owner| *owner == **layer || belongs_to_any(owner, &[layer.to_string()]))
        }) {
            return Err(OptimizerError::UnknownLayer {
                layer: unknown.to_string(),
                available,
            });
        }
        self.frozen.extend(layers.iter().map(|l| l.to_string()));
        Ok(())
    }

    /// Checks that `network` has the parameter tensors this state was made for (any network
    /// fits a state that has not stepped yet).
    ///
    /// # Errors
    /// [`OptimizerError::StateMismatch`], naming the first tensor that differs.
    pub fn check_network<L: Layer>(&self, network: &L) -> Result<(), OptimizerError> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        // The common case, every step: compare in place, allocating nothing.
        let (mut visited, mut same) = (0, true);
        network.visit_params(&mut |name, _, values| {
            same &= self
                .tensors
                .get(visited)
                .is_some_and(|(tensor, len)| tensor == name && *len == values.len());
            visited += 1;
        });
        if same && visited == self.tensors.len() {
            return Ok(());
        }
        let found = parameter_tensors(network);
        let describe = |tensor: Option<&(String, usize)>| {
            tensor.map_or("absent".to_string(), |(name, len)| {
                format!("`{name}` of {len} values")
            })
        };
        let first_difference =
            (0..found.len().max(self.tensors.len())).find(|&i| found.get(i) != self.tensors.get(i));
        match first_difference {
            None => Ok(()),
            Some(index) => Err(OptimizerError::StateMismatch {
                index,
                expected: describe(self.tensors.get(index)),
                found: describe(found.get(index)),
            }),
        }
    }

    /// Steps applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The rule's state of the parameter tensor `name` (`conv1.weight`), one vector per slot
    /// (Adam's moments, ...); `None` before its first update and for frozen tensors.
    pub fn tensor_state(&self, name: &str) -> Option<&[Vec<f32>]> {
        let index = self.tensors.iter().position(|(tensor, _)| tensor == name)?;
        self.state
            .get(index)
            .filter(|slots| !slots.is_empty())
            .map(Vec::as_slice)
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
    ///
    /// # Errors
    /// [`OptimizerError::StateMismatch`] if the state was made on another network; then
    /// nothing is changed.
    pub fn step<L: Layer>(
        &mut self,
        network: &mut L,
        grads: &L::Grads,
        epoch: usize,
    ) -> Result<(), OptimizerError> {
        self.check_network(network)?;
        if self.tensors.is_empty() {
            self.tensors = parameter_tensors(network);
        }
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
        Ok(())
    }
}

/// Name and length of every parameter tensor of `network`, in visiting order.
fn parameter_tensors<L: Layer>(network: &L) -> Vec<(String, usize)> {
    let mut tensors = Vec::new();
    network.visit_params(&mut |name, _, values| tensors.push((name.to_string(), values.len())));
    tensors
}

/// The layers that own parameters (`conv1` for `conv1.weight`), in order, each once.
fn layers_with_params<L: Layer>(network: &L) -> Vec<String> {
    let mut layers: Vec<String> = Vec::new();
    network.visit_params(&mut |name, _, _| {
        let owner = name.rsplit_once('.').map_or(name, |(owner, _)| owner);
        if layers.last().is_none_or(|last| last != owner) {
            layers.push(owner.to_string());
        }
    });
    layers
}

/// The most state slots (per-value moving averages) an [`Optimizer`] may keep.
pub const MAX_SLOTS: usize = 8;

/// A state slot's values, shared by the parallel tasks of one update, each of which touches
/// only its own chunk.
#[derive(Clone, Copy)]
struct SlotValues {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks reach the values only through `chunk`, at disjoint ranges.
unsafe impl Send for SlotValues {}
// SAFETY: as above.
unsafe impl Sync for SlotValues {}

impl SlotValues {
    /// Values `index * chunk ..` of the slot, at most `chunk` of them.
    ///
    /// # Safety
    /// No other live reference may cover this chunk: each task of an update takes its own,
    /// all with the same `chunk`.
    unsafe fn chunk<'a>(self, index: usize, chunk: usize) -> &'a mut [f32] {
        let start = index * chunk;
        let len = chunk.min(self.len - start);
        // SAFETY: `start + len <= self.len`, inside the slot's allocation, which outlives the
        // update; the caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Applies `optimizer` to matching chunks of `values`, `grad` and every state slot, in
/// parallel, without allocating.
fn update_in_chunks(
    optimizer: &dyn Optimizer,
    t: u64,
    lr: f32,
    values: &mut [f32],
    grad: &[f32],
    state: &mut [Vec<f32>],
) {
    assert!(
        state.len() <= MAX_SLOTS,
        "an optimiser keeps at most {MAX_SLOTS} slots"
    );
    let mut slots = [SlotValues {
        ptr: std::ptr::null_mut(),
        len: 0,
    }; MAX_SLOTS];
    for (slot, values_of_slot) in slots.iter_mut().zip(state.iter_mut()) {
        assert_eq!(values_of_slot.len(), values.len(), "a slot per value");
        *slot = SlotValues {
            ptr: values_of_slot.as_mut_ptr(),
            len: values_of_slot.len(),
        };
    }
    let count = state.len();
    // Values per parallel task: small tensors stay on the calling thread.
    let chunk = crate::schedule::splits().min_update_values;
    values
        .par_chunks_mut(chunk)
        .zip(grad.par_chunks(chunk))
        .enumerate()
        .for_each(|(index, (values, grad))| {
            let mut parts: [&mut [f32]; MAX_SLOTS] = std::array::from_fn(|slot| {
                if slot < count {
                    // SAFETY: task `index` is the only one taking chunk `index` of each slot.
                    unsafe { slots[slot].chunk(index, chunk) }
                } else {
                    &mut []
                }
            });
            optimizer.update(t, lr, values, grad, &mut parts[..count]);
        });
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
        state.freeze(&net, &["0"]).unwrap();
        state.regularization.l2 = 0.5;
        state.step(&mut net, &grads, 0).unwrap();
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
        let mut net = Dense::<400, 400>::new(&mut seeded_rng(2));
        let mut grads = net.new_grads();
        grads.visit_mut(&mut |_, g| {
            g.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (i % 7) as f32 - 3.0)
        });
        let adam = Adam::default();
        let (mut weight, mut m, mut v) = (
            net.params.weight.clone(),
            vec![0.0; 160_000],
            vec![0.0; 160_000],
        );
        let mut state = OptimizerState::new(adam);
        for t in 1..=3 {
            state.step(&mut net, &grads, 0).unwrap();
            adam.update(t, 1e-3, &mut weight, &grads.weight, &mut [&mut m, &mut v]);
        }
        assert!(weight.len() > crate::context::Splits::default().min_update_values);
        assert_eq!(net.params.weight, weight);
    }

    /// Freezing a layer the network lacks names it and lists the layers it has; nothing is
    /// frozen. Nested chains name layers by path, and a path prefix freezes a whole branch.
    #[test]
    fn freezing_an_unknown_layer_is_an_error() {
        let mut rng = seeded_rng(0);
        let net = Chain::new(
            Dense::<3, 4>::new(&mut rng),
            Chain::new(Dense::<4, 2>::new(&mut rng), Dense::<2, 2>::new(&mut rng)),
        );
        let mut state = OptimizerState::new(Sgd::new(0.1));
        let error = state.freeze(&net, &["0", "conv"]).unwrap_err();
        assert_eq!(
            error,
            OptimizerError::UnknownLayer {
                layer: "conv".into(),
                available: vec!["0".into(), "1.0".into(), "1.1".into()],
            }
        );
        assert_eq!(
            error.to_string(),
            "cannot freeze `conv`: the network has no such layer with parameters; it has 0, 1.0, 1.1"
        );
        assert!(
            !state.is_frozen("0.weight"),
            "a failed freeze freezes nothing"
        );
        state.freeze(&net, &["1"]).unwrap();
        assert!(state.is_frozen("1.0.weight") && state.is_frozen("1.1.bias"));
        assert!(!state.is_frozen("0.weight"));
    }

    /// A state that has stepped one network refuses another, naming the first tensor that
    /// differs, and changes neither.
    #[test]
    fn a_state_refuses_another_network() {
        let mut rng = seeded_rng(0);
        let mut first = Dense::<3, 4>::new(&mut rng);
        let mut state = OptimizerState::new(Adam::default());
        let grads = first.new_grads();
        state.step(&mut first, &grads, 0).unwrap();
        let moments = state.tensor_state("weight").unwrap().to_vec();

        let mut other = Chain::new(Dense::<3, 4>::new(&mut rng), Dense::<4, 1>::new(&mut rng));
        let before = other.clone();
        let other_grads = other.new_grads();
        let error = state.step(&mut other, &other_grads, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "this optimiser state belongs to another network: its tensor 0 is `weight` of 12 \
             values, but this network's is `0.weight` of 12 values"
        );
        assert_eq!(other.first.params, before.first.params);
        assert_eq!(other.second.params, before.second.params);
        assert_eq!(state.steps(), 1);
        assert_eq!(state.tensor_state("weight").unwrap(), moments.as_slice());

        let mut wider = Dense::<3, 5>::new(&mut rng);
        let wider_grads = wider.new_grads();
        let error = state.step(&mut wider, &wider_grads, 0).unwrap_err();
        assert!(
            matches!(&error, OptimizerError::StateMismatch { index: 0, expected, found }
                if expected == "`weight` of 12 values" && found == "`weight` of 15 values"),
            "{error}"
        );
    }

    /// L1 adds `l1 · sign(w)`.
    #[test]
    fn l1_regularization() {
        let mut net = Dense::<2, 1>::new(&mut seeded_rng(1));
        net.params.weight = vec![0.5, -0.25].into();
        let grads = net.new_grads();
        let mut state = OptimizerState::new(Sgd::new(1.0));
        state.regularization.l1 = 0.1;
        state.step(&mut net, &grads, 0).unwrap();
        assert_eq!(net.params.weight[..], [0.4, -0.15]);
    }
}
