//! The runtime of constnet: typed tensors, layers with const-generic shapes, and the SIMD
//! kernels they run on.
//!
//! A layer is a struct whose input and output shapes are type parameters ([`shape::Flat`],
//! [`shape::Hwc`]); layers are chained only when the compiler can prove the shapes agree
//! ([`layers::Chain`]). Each layer has an inference forward pass, a training forward pass that
//! keeps what its backward pass needs, and a backward pass that produces the gradient with
//! respect to its input and to each of its parameters. The heavy work runs in [`kernels`], which
//! picks AVX-512, AVX2 or portable code at run time.
#![warn(missing_docs)]

pub mod aligned;
pub mod context;
pub mod data;
#[doc(hidden)]
pub mod expansion;
mod files;
pub mod gradcheck;
pub mod graph;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod network;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod optim;
pub mod plan;
pub mod quant;
#[cfg(test)]
mod reference;
mod schedule;
pub mod shape;
pub mod tensor;
pub mod train;
pub mod weights;

pub use constnet_catalogue as catalogue;
pub use rand;
pub use shape::{Flat, Hwc, Image, Shape};
pub use tensor::{Batch, ShapeError, Tensor};
