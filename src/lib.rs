//! constnet: small neural networks in Rust whose every tensor shape is known to the compiler.
//!
//! A network is written once, as a layer list. The [`network!`] macro infers every shape while
//! it compiles, rejects a layer fed the wrong shape with an error on that layer, and generates a
//! statically shaped network whose passes are compiled for it: activations fused into the
//! convolutions and dense layers before them, buffers planned so a call allocates nothing, work
//! split across cores. The kernels underneath pick AVX-512, AVX2 or portable code at run time.
//!
//! ```
//! use constnet::prelude::*;
//!
//! network! {
//!     /// A small classifier of 28x28 grey images.
//!     pub Digits<input(28, 28, 1) conv(8, 3) relu maxpool(2) flatten dense(10) softmax>
//! }
//!
//! // Train on a few labelled images (real programs read MNIST with `load_mnist`).
//! let images = Batch::<Hwc<28, 28, 1>>::from_fn(40, |i| (i % 97) as f32 / 97.0);
//! let labels = (0..40).map(|i| i % 10).collect();
//! let data = Dataset::new(images, labels, 10).unwrap();
//! let mut net = Digits::new(42);
//! let mut optimizer = OptimizerState::new(Adam::default());
//! let config = FitConfig { epochs: 2, batch_size: 8, verbose: false, ..FitConfig::default() };
//! let history = fit(&mut net, &mut optimizer, &data, Validation::None, &config).unwrap();
//! assert_eq!(history.epochs.len(), 2);
//!
//! // Inference takes `&self` and writes only into the workspace it is given.
//! let mut workspace = DigitsWorkspace::default();
//! let probabilities = net.infer(data.images(), &mut workspace);
//! assert_eq!(argmax(probabilities).len(), 40);
//! ```
//!
//! Shape mistakes do not compile: a `dense` after a `conv` without `flatten`, a window larger
//! than its input, or a batch of 32x32 images given to a network of 28x28 ones is an error on the
//! offending layer or call, naming the shapes.
//!
//! # Modules
//! - [`prelude`]: what most programs need, in one `use`.
//! - [`mod@network`]: the [`Network`](network::Network) trait every generated network implements.
//! - [`train`]: [`fit`](train::fit), [`evaluate`](train::evaluate), [`predict`](train::predict),
//!   and for any [`loss::Loss`] [`fit_with`](train::fit_with) and
//!   [`evaluate_with`](train::evaluate_with).
//! - [`optim`], [`loss`], [`metrics`], [`data`], [`weights`] (safetensors files and bytes),
//!   `onnx` (export), [`graph`] (a network's layers as exporters read them).
//! - [`quant`]: int8 inference by post-training quantization ([`quant::Quantized`]).
//! - [`context`]: where and how passes run: a thread pool and its settings.
//! - [`layers`], [`tensor`], [`shape`], [`kernels`]: the typed layers, tensors and SIMD kernels
//!   generated networks are made of, usable on their own.
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `data` | yes | IDX files (gzip or raw) and MNIST-style data sets (`load_mnist`, `Dataset::from_idx`) |
//! | `progress` | yes | a progress bar while [`fit`](train::fit) trains |
//! | `download` | no | fetching data sets over HTTPS, checked by SHA-256 (`data::download`) |
//! | `onnx` | no | `onnx::export`: a network as an ONNX model; `onnx::export_quantized`: an int8 network as QDQ ONNX |
//!
//! With `default-features = false`, constnet is the macro, tensors, layers, kernels, training,
//! inference and weights (files and bytes), without the crates for data files, progress bars,
//! downloads and ONNX.
#![warn(missing_docs)]

pub mod prelude;

/// ONNX models as `network!` layer lists and weights (with the `import` feature): what
/// [`onnx_network!`] and the `constnet-import` tool use.
#[cfg(feature = "import")]
pub use constnet_import as import;
pub use constnet_macros::network;
#[cfg(feature = "import")]
pub use constnet_macros::onnx_network;
pub use constnet_runtime::*;

/// The README's examples, compiled and run as tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

/// The guide's examples, compiled and run as tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideExamples;
