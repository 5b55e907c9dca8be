//! constnet: small neural networks whose every tensor shape is known to the compiler.
//!
//! This facade re-exports the runtime (typed tensors, layers, kernels) and, as it grows, the
//! `network!` macro, so users depend on one crate.
#![warn(missing_docs)]

pub use constnet_runtime::*;
