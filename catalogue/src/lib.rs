//! The layer catalogue of constnet: one description of every layer kind, read by the
//! `network!` macro (to parse and check a layer list, infer its shapes and write the runtime
//! types) and by the runtime (to describe a network's graph for export).
//!
//! Everything a kind is lives in one entry of [`kinds`]: its name and arguments in the grammar
//! ([`Entry`]), its checked value ([`LayerKind`]), its shape rule
//! ([`LayerKind::output_shape`]), its parameter count, the runtime type and constructor that
//! implement it ([`LayerKind::runtime`]), what the planner may do with it (whether an
//! activation fuses into a GEMM epilogue, whether its backward pass reads its output), and how
//! other frameworks write it ([`LayerKind::onnx`], [`LayerKind::torch_layout`]). The crate has
//! no dependencies, so a procedural macro and the runtime can both build on it.
//!
//! It also holds the plan's vocabulary both read: where inference keeps each value
//! ([`InferenceSlot`]).
#![warn(missing_docs)]

mod args;
pub mod kinds;
pub mod names;
mod padding;
mod shape;
mod slot;

pub use args::{ArgProblem, ArgRef, ArgType, ArgValue, Args, Param};
pub use kinds::{
    BATCHNORM_EPSILON, Constructor, ENTRIES, Entry, Generic, LayerKind, OnnxOp, OutputUse,
    RuntimeLayer, ShapeProblem, TorchLayout,
};
pub use padding::{Padding, Pads};
pub use shape::{MAX_VALUES, Shape};
pub use slot::InferenceSlot;
