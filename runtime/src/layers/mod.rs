//! Layers: the [`Layer`] contract every layer fulfils, its parameter sets, and [`Chain`], the
//! compile-time checked composition of two layers.
//!
//! A layer's input and output shapes are associated types fixed by its type parameters, so a
//! mismatch between two chained layers is a type error. Each layer has three passes:
//! - [`Layer::forward`]: inference (dropout is the identity, batch normalisation uses its running
//!   statistics);
//! - [`Layer::forward_train`]: training, which fills the layer's [`Layer::Cache`] with what
//!   backward needs beyond the input and output;
//! - [`Layer::backward`]: the gradient with respect to the input (skipped when the caller passes
//!   `None`, as for a network's first layer) and to every parameter.
//!
//! Passes write into caller-owned batches and caches, which keep their allocations between calls:
//! a training loop that reuses them allocates nothing per sample.

#[macro_use]
mod params;
mod activation;
mod batchnorm;
mod conv;
mod dense;
mod depthwise;
mod dropout;
mod flatten;
mod fused;
mod global_pool;
mod padding;
mod pool;
mod residual;
mod softmax;
mod upsample;

// Every activation function and its layer alias, so a new one needs no line here.
pub use activation::*;
pub use batchnorm::{BatchNorm, BatchNormCache};
pub use conv::{Conv2d, ConvAlgorithm, ConvCache, ConvOp};
pub use dense::Dense;
pub use depthwise::{DepthwiseCache, DepthwiseConv2d};
pub use dropout::{Dropout, DropoutCache};
pub use flatten::Flatten;
pub use fused::{
    ConvWeights, FoldedBatchNorm, Linear, conv_activation_pool_forward,
    conv_activation_pool_forward_train, conv_params_forward, conv_residual_forward,
    depthwise_params_forward, fold_batchnorm, linear_activation_backward,
    linear_activation_forward,
};
pub use global_pool::{GlobalAvgPool2d, GlobalMaxPool2d, GlobalPool2d, GlobalPoolCache};
pub use padding::{Padding, Pads, Same, Valid};
pub use params::{
    NoParams, ParamSet, ParamVec, TensorVisitor, TensorVisitorMut, UpdateVisitor, Version,
    WeightBias,
};
// What the generated parameter visits call, for `crate::expansion`; not an API.
#[doc(hidden)]
pub use params::{
    update_layer_params, visit_layer_buffers, visit_layer_buffers_mut, visit_layer_params,
    visit_layer_params_mut, visit_mut_prefixed, visit_prefixed, zip_mut_prefixed,
};
pub use pool::{Avg, AvgPool2d, Max, MaxPool2d, Pool2d, PoolCache, PoolOp};
pub use residual::{ResidualState, accumulate_gradient, residual_add_forward};
pub use softmax::Softmax;
pub(crate) use softmax::softmax_row;
pub use upsample::Upsample2d;

use std::ops::Range;

use constnet_catalogue::LayerKind;
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::init::SeededRng;
use crate::kernels::{self, simd::SimdF32, simd::VectorKernel};
use crate::shape::Shape;
use crate::tensor::Batch;

/// Samples whose contributions to a weight gradient one task sums before the partial sums are
/// added in group order. A constant, not a share of the thread count, so the order of every
/// floating-point sum, and with it the trained weights, is the same on any number of threads.
pub(crate) const GRADIENT_GROUP: usize = 8;

/// Adds `part(partial)` of each consecutive `stride`-long partial sum in `partials` into
/// `total`, first to last (a fixed order, so the result does not depend on which thread made
/// which part).
fn sum_in_order(partials: &[f32], stride: usize, part: Range<usize>, total: &mut [f32]) {
    total.fill(0.0);
    for partial in partials.chunks(stride) {
        for (sum, value) in total.iter_mut().zip(&partial[part.clone()]) {
            *sum += value;
        }
    }
}

/// The backward pass of a convolution-like layer (weights shared by every position of every
/// image), split into fixed groups of [`GRADIENT_GROUP`] images run in parallel:
/// `group(images, output_grads, weight_grad, image_grads)` writes its images' summed weight
/// gradient into `weight_grad` and, when asked for, their input gradients, and the group's
/// bias gradient (the sum of its output gradient per channel) is taken beside it; each group's
/// partial sums (one of `partials`) are then added in group order into `grads`.
pub(crate) fn grouped_backward<I: Shape, O: Shape>(
    input: &Batch<I>,
    grad_output: &Batch<O>,
    grad_input: Option<&mut Batch<I>>,
    partials: &mut AlignedVec,
    grads: &mut WeightBias,
    group: impl Fn(&[f32], &[f32], &mut [f32], Option<&mut [f32]>) + Sync,
) {
    let samples = input.len();
    let (weight_len, bias_len) = (grads.weight.len(), grads.bias.len());
    let partial_len = weight_len + bias_len;
    let groups = samples.div_ceil(GRADIENT_GROUP);
    partials.resize(groups * partial_len, 0.0);
    let group_inputs = input.as_slice().par_chunks(GRADIENT_GROUP * I::LEN);
    let group_output_grads = grad_output.as_slice().par_chunks(GRADIENT_GROUP * O::LEN);
    let groups_of = group_inputs
        .zip(group_output_grads)
        .zip(partials.par_chunks_mut(partial_len));
    let run = |images: &[f32], dy: &[f32], partial: &mut [f32], dx: Option<&mut [f32]>| {
        let (dw, db) = partial.split_at_mut(weight_len);
        group(images, dy, dw, dx);
        sum_per_channel(dy, db);
    };
    match grad_input {
        Some(grad_input) => {
            grad_input.resize(samples);
            let group_input_grads = grad_input
                .as_mut_slice()
                .par_chunks_mut(GRADIENT_GROUP * I::LEN);
            groups_of
                .zip(group_input_grads)
                .for_each(|(((images, dy), partial), dx)| run(images, dy, partial, Some(dx)));
        }
        None => groups_of.for_each(|((images, dy), partial)| run(images, dy, partial, None)),
    }
    let partials = &partials[..groups * partial_len];
    sum_in_order(partials, partial_len, 0..weight_len, &mut grads.weight);
    sum_in_order(
        partials,
        partial_len,
        weight_len..partial_len,
        &mut grads.bias,
    );
}

/// `totals[c]` = the sum of every `values[i]` with `i % totals.len() == c`, in order: a bias
/// gradient from the output gradient of a whole batch.
pub(crate) fn sum_per_channel(values: &[f32], totals: &mut [f32]) {
    kernels::run_vectorized(SumPerChannel { values, totals });
}

/// [`sum_per_channel`], compiled for the active instruction set so each row's additions
/// vectorise across channels with its widest vectors (each channel's sum keeps its order).
struct SumPerChannel<'a> {
    values: &'a [f32],
    totals: &'a mut [f32],
}

impl VectorKernel for SumPerChannel<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: SimdF32>(self) {
        self.totals.fill(0.0);
        for row in self.values.chunks(self.totals.len()) {
            for (total, value) in self.totals.iter_mut().zip(row) {
                *total += value;
            }
        }
    }
}

/// Fewest values a task of a per-sample or element-wise pass is given
/// ([`crate::context::Splits::min_task_values`]).
pub(crate) fn min_task_values() -> usize {
    crate::schedule::splits().min_task_values
}

/// The larger of two sizes, in a constant.
pub(crate) const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Samples per rayon task, each sample touching `values_per_sample` values: one contiguous group
/// per thread, but no group smaller than the context's `min_task_values` values.
pub(crate) fn samples_per_task(samples: usize, values_per_sample: usize) -> usize {
    let per_thread = samples.div_ceil(crate::schedule::pass_threads());
    let smallest = min_task_values().div_ceil(values_per_sample.max(1));
    per_thread.max(smallest).max(1)
}

/// Resizes `output` to `input`'s number of samples and runs `f(inputs, outputs)` in parallel on
/// one contiguous group of samples per rayon thread (each slice holds the group's samples one
/// after another), so per-group workspace is set up once per thread, not once per sample.
pub(crate) fn for_each_sample_group<I: Shape, O: Shape>(
    input: &Batch<I>,
    output: &mut Batch<O>,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    output.resize(input.len());
    let group = samples_per_task(input.len(), I::LEN + O::LEN);
    input
        .as_slice()
        .par_chunks(group * I::LEN)
        .zip(output.as_mut_slice().par_chunks_mut(group * O::LEN))
        .for_each(|(inputs, outputs)| f(inputs, outputs));
}

/// A layer whose input and output shapes are known to the compiler.
pub trait Layer: Send + Sync {
    /// Shape of one input sample.
    type Input: Shape;
    /// Shape of one output sample.
    type Output: Shape;
    /// The gradients of the trainable parameters, one tensor per parameter tensor.
    type Grads: ParamSet;
    /// What a training forward pass keeps for the backward pass, beyond input and output.
    type Cache: Default + Send + Sync;

    /// Number of trainable parameters.
    const PARAMS: usize;
    /// Number of values saved with the layer but not trained (see [`Layer::visit_buffers`]).
    const BUFFERS: usize = 0;
    /// The most values of per-thread scratch ([`with_scratch`](crate::kernels::with_scratch))
    /// one of the layer's passes asks for, so a network can reserve it on every thread up front.
    const SCRATCH: usize = 0;
    /// Multiply-adds of one sample's forward pass, roughly (0 for layers whose work is
    /// negligible beside a product's): what a network weighs to decide whether a pass is worth
    /// keeping every thread of the pool awake for (`schedule::placement`).
    const MULS: usize = 0;

    /// Inference forward pass: `output` is resized to `input.len()` samples and overwritten.
    ///
    /// `workspace` is the caller's scratch (intermediate batches of a chain or network, per-call
    /// tables); its buffers keep their allocations between calls. The layer itself is only
    /// read, so one layer shared by reference serves any number of threads at once, each with
    /// its own workspace.
    fn forward(
        &self,
        input: &Batch<Self::Input>,
        output: &mut Batch<Self::Output>,
        workspace: &mut Self::Cache,
    );

    /// Training forward pass: like [`Layer::forward`], in training mode, filling `cache`. By
    /// default the inference pass, for layers that behave the same in both modes and keep
    /// nothing for backward.
    fn forward_train(
        &mut self,
        input: &Batch<Self::Input>,
        output: &mut Batch<Self::Output>,
        cache: &mut Self::Cache,
    ) {
        self.forward(input, output, cache);
    }

    /// Backward pass for the batch last run through [`Layer::forward_train`] with this `cache`:
    /// overwrites `grads` with the gradient of the loss with respect to each parameter, and
    /// `grad_input` (if asked for) with its gradient with respect to the input.
    fn backward(
        &self,
        input: &Batch<Self::Input>,
        output: &Batch<Self::Output>,
        grad_output: &Batch<Self::Output>,
        cache: &mut Self::Cache,
        grad_input: Option<&mut Batch<Self::Input>>,
        grads: &mut Self::Grads,
    );

    /// A zeroed gradient set shaped like this layer's parameters.
    fn new_grads(&self) -> Self::Grads;

    /// Visits each trainable parameter tensor: name (`weight`, `bias`), dimensions, values.
    fn visit_params(&self, visit: &mut TensorVisitor<'_>);

    /// Visits each trainable parameter tensor mutably, by name (for weight loading).
    fn visit_params_mut(&mut self, visit: &mut TensorVisitorMut<'_>);

    /// Visits each trainable parameter tensor with its gradient from `grads` (for optimisers).
    fn update_params(&mut self, grads: &Self::Grads, update: &mut UpdateVisitor<'_>);

    /// Visits state that is saved with the layer but not trained (batch normalisation's running
    /// statistics): name, dimensions, values.
    fn visit_buffers(&self, _visit: &mut TensorVisitor<'_>) {}

    /// Visits the same state as [`Layer::visit_buffers`], mutably (for weight loading).
    fn visit_buffers_mut(&mut self, _visit: &mut TensorVisitorMut<'_>) {}

    /// What the layer computes, as the catalogue describes it: the op of its node in a
    /// network's graph, which exporters read. [`LayerKind::Custom`] (nothing more is known) for
    /// a layer that does not say.
    fn kind(&self) -> LayerKind {
        LayerKind::Custom
    }
}

/// How `network!` builds a layer type of yours, inserted with `layer(T)`: from the network's
/// seeded generator, so `Network::new(seed)` stays reproducible. A layer without random
/// initialisation ignores `rng`. Such a type implements [`Layer`], `Build` and `Clone`.
///
/// ```
/// use constnet_runtime::init::SeededRng;
/// use constnet_runtime::layers::{Build, Relu};
/// use constnet_runtime::Hwc;
///
/// /// ReLU under another name, as a stand-in for a layer of one's own.
/// struct MyRelu(Relu<Hwc<4, 4, 2>>);
///
/// impl Build for MyRelu {
///     fn build(_rng: &mut SeededRng) -> Self {
///         MyRelu(Relu::new())
///     }
/// }
/// ```
pub trait Build: Sized {
    /// The layer, initialised from `rng`.
    fn build(rng: &mut SeededRng) -> Self;
}

/// Two layers run one after the other. It is a layer itself, so chains nest.
///
/// `Chain::new(a, b)` only compiles when `a`'s output shape is `b`'s input shape:
/// ```
/// use constnet_runtime::layers::{Chain, Dense, Layer, Relu};
/// use constnet_runtime::{Batch, Flat};
/// let mut rng = constnet_runtime::init::seeded_rng(0);
/// let net = Chain::new(Dense::<4, 8>::new(&mut rng), Relu::<Flat<8>>::new());
/// let (mut output, mut workspace) = (Batch::default(), Default::default());
/// net.forward(&Batch::<Flat<4>>::zeros(3), &mut output, &mut workspace);
/// assert_eq!(output.len(), 3);
/// ```
/// ```compile_fail
/// use constnet_runtime::layers::{Chain, Dense};
/// let mut rng = constnet_runtime::init::seeded_rng(0);
/// // error[E0271]: type mismatch resolving `<Dense<9, 2> as Layer>::Input == Flat<8>`
/// let net = Chain::new(Dense::<4, 8>::new(&mut rng), Dense::<9, 2>::new(&mut rng));
/// ```
#[derive(Clone, Debug)]
pub struct Chain<A: Layer, B> {
    /// The layer that runs first.
    pub first: A,
    /// The layer fed by `first`.
    pub second: B,
}

impl<A: Layer, B: Layer<Input = A::Output>> Chain<A, B> {
    /// Chains `first` into `second`.
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

/// What a [`Chain`] keeps between its training forward and backward passes, and the
/// intermediate batch of its inference.
pub struct ChainCache<A: Layer, B: Layer> {
    first: A::Cache,
    second: B::Cache,
    middle: Batch<A::Output>,
    grad_middle: Batch<A::Output>,
}

impl<A: Layer, B: Layer> Default for ChainCache<A, B> {
    fn default() -> Self {
        Self {
            first: A::Cache::default(),
            second: B::Cache::default(),
            middle: Batch::default(),
            grad_middle: Batch::default(),
        }
    }
}

impl<A: Layer, B: Layer<Input = A::Output>> Layer for Chain<A, B> {
    type Input = A::Input;
    type Output = B::Output;
    type Grads = (A::Grads, B::Grads);
    type Cache = ChainCache<A, B>;
    const PARAMS: usize = A::PARAMS + B::PARAMS;
    const BUFFERS: usize = A::BUFFERS + B::BUFFERS;
    const SCRATCH: usize = max(A::SCRATCH, B::SCRATCH);
    const MULS: usize = A::MULS + B::MULS;

    fn forward(
        &self,
        input: &Batch<A::Input>,
        output: &mut Batch<B::Output>,
        workspace: &mut Self::Cache,
    ) {
        self.first
            .forward(input, &mut workspace.middle, &mut workspace.first);
        self.second
            .forward(&workspace.middle, output, &mut workspace.second);
    }

    fn forward_train(
        &mut self,
        input: &Batch<A::Input>,
        output: &mut Batch<B::Output>,
        cache: &mut Self::Cache,
    ) {
        self.first
            .forward_train(input, &mut cache.middle, &mut cache.first);
        self.second
            .forward_train(&cache.middle, output, &mut cache.second);
    }

    fn backward(
        &self,
        input: &Batch<A::Input>,
        output: &Batch<B::Output>,
        grad_output: &Batch<B::Output>,
        cache: &mut Self::Cache,
        grad_input: Option<&mut Batch<A::Input>>,
        grads: &mut Self::Grads,
    ) {
        self.second.backward(
            &cache.middle,
            output,
            grad_output,
            &mut cache.second,
            Some(&mut cache.grad_middle),
            &mut grads.1,
        );
        self.first.backward(
            input,
            &cache.middle,
            &cache.grad_middle,
            &mut cache.first,
            grad_input,
            &mut grads.0,
        );
    }

    fn new_grads(&self) -> Self::Grads {
        (self.first.new_grads(), self.second.new_grads())
    }

    fn visit_params(&self, visit: &mut TensorVisitor<'_>) {
        visit_layer_params("0", &self.first, visit);
        visit_layer_params("1", &self.second, visit);
    }

    fn visit_params_mut(&mut self, visit: &mut TensorVisitorMut<'_>) {
        visit_layer_params_mut("0", &mut self.first, visit);
        visit_layer_params_mut("1", &mut self.second, visit);
    }

    fn update_params(&mut self, grads: &Self::Grads, update: &mut UpdateVisitor<'_>) {
        update_layer_params("0", &mut self.first, &grads.0, update);
        update_layer_params("1", &mut self.second, &grads.1, update);
    }

    fn visit_buffers(&self, visit: &mut TensorVisitor<'_>) {
        visit_layer_buffers("0", &self.first, visit);
        visit_layer_buffers("1", &self.second, visit);
    }

    fn visit_buffers_mut(&mut self, visit: &mut TensorVisitorMut<'_>) {
        visit_layer_buffers_mut("0", &mut self.first, visit);
        visit_layer_buffers_mut("1", &mut self.second, visit);
    }
}
