//! constnet: small neural networks whose every tensor shape is known to the compiler.
//!
//! This facade re-exports the runtime (typed tensors, layers, kernels) and, as it grows, the
//! `network!` macro, so users depend on one crate. The README below is part of these docs, so its
//! examples are compiled and run as tests.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use constnet_macros::network;
pub use constnet_runtime::*;
