//! What a program that builds, trains or runs a network needs, in one line:
//! `use constnet::prelude::*;`.
//!
//! It brings the `network!` macro and the [`Network`] trait (for `new`, `infer`, `summary`), the
//! tensor and shape types, the optimisers, the losses, `fit` / `evaluate` / `predict` (and
//! `fit_with` / `evaluate_with` / `predict_outputs` for any loss) with their settings,
//! data sets and augmentation, and — with their features — MNIST loading and weight files
//! (`weights::save`, `weights::load`). Everything else stays under its module.
//!
//! ```
//! use constnet::prelude::*;
//!
//! network! {
//!     Tiny<input(4) dense(3) softmax>
//! }
//!
//! let net = Tiny::new(0);
//! let mut workspace = TinyWorkspace::default();
//! let probabilities = net.infer(&Batch::zeros(2), &mut workspace);
//! assert_eq!(argmax(probabilities).len(), 2);
//! ```

pub use crate::network;
#[cfg(feature = "data")]
pub use constnet_runtime::data::load_mnist;
pub use constnet_runtime::data::{Augment, Dataset};
pub use constnet_runtime::loss::{
    BinaryCrossentropy, MeanAbsoluteError, MeanSquaredError, SparseCategoricalCrossentropy, argmax,
};
pub use constnet_runtime::network::Network;
pub use constnet_runtime::optim::{Adadelta, Adam, OptimizerState, RmsProp, Schedule, Sgd};
pub use constnet_runtime::quant::{Quantized, QuantizedWorkspace};
pub use constnet_runtime::train::{
    EarlyStopping, FitConfig, History, Validation, evaluate, evaluate_with, fit, fit_with, predict,
    predict_outputs,
};
pub use constnet_runtime::weights;
pub use constnet_runtime::{Batch, Flat, Hwc, Image, Shape, ShapeError, Tensor};
