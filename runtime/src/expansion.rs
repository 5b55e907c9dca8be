//! Every item `network!`'s expansion names, in one module, so the generated code refers to
//! them by one short path (`cn::Layer::forward`, `cn::Batch<cn::Input>`): the traits it
//! implements, the types of its tables and states, the fused ops and passes it calls, and the
//! layer types. Not an API of its own: what it holds follows what the macro writes.

pub use crate::catalogue::LayerKind;
pub use crate::graph::Node;
pub use crate::init::{next_seed, seeded_rng};
pub use crate::kernels::elementwise::ActivationKind;
pub use crate::layers::*;
pub use crate::loss::head;
pub use crate::network::{
    ActivationVisitor, LayerInfo, LayerState, LayerTotals, Network, visit_activations,
};
pub use crate::plan::{InferenceBuffers, InferenceSlot, OpInfo, on_pool};
pub use crate::shape::{Flat, Hwc, Shape};
pub use crate::tensor::Batch;
pub use std::option::Option::{self, None, Some};
