//! Whole networks: the [`Network`] trait that `network!` implements, the state each op of its
//! training plan keeps between passes ([`LayerState`]), and the Keras-style summary table.
//!
//! A generated network is also a [`Layer`] whose function is the whole
//! layer list (final softmax included), so it can be gradient-checked and composed like any
//! layer. `Network` adds what training needs on top: a training pass that stops at the logits
//! when the network ends with softmax (the loss fuses softmax with cross-entropy), parameters
//! and buffers by name (`conv1.weight`), and the layer table.

use crate::layers::{
    Activation, Conv2d, ConvCache, Dropout, EpilogueFn, Layer, Linear, MaxPool2d, Padding,
    ResidualState, conv_activation_pool_forward_train, linear_activation_backward,
    linear_activation_forward,
};
use crate::plan::{OpInfo, plan_table, thousands};
use crate::shape::{Image, Shape};
use crate::tensor::Batch;

/// What one op of a network's training plan keeps between passes (a layer's, or a fused op's
/// with the state type of its first layer): its output, its training cache, and the gradient of
/// the loss with respect to its output. Buffers keep their allocations, so a network that is
/// run repeatedly allocates nothing per call.
pub struct LayerState<L: Layer> {
    /// The layer's last output.
    pub output: Batch<L::Output>,
    /// What the layer's last training pass kept for backward.
    pub cache: L::Cache,
    /// The gradient with respect to the layer's output, filled by the layer after it.
    pub grad_output: Batch<L::Output>,
}

impl<L: Layer> LayerState<L> {
    /// `layer`'s training forward pass from `input` into this state's output and cache.
    pub fn forward_train(&mut self, layer: &mut L, input: &Batch<L::Input>) {
        layer.forward_train(input, &mut self.output, &mut self.cache);
    }

    /// `layer`'s backward pass from this state (its output, output gradient and cache) into
    /// `grad_input` (if asked for) and `grads`.
    pub fn backward(
        &mut self,
        layer: &L,
        input: &Batch<L::Input>,
        grad_input: Option<&mut Batch<L::Input>>,
        grads: &mut L::Grads,
    ) {
        let cache = &mut self.cache;
        layer.backward(
            input,
            &self.output,
            &self.grad_output,
            cache,
            grad_input,
            grads,
        );
    }
}

impl<L: Layer> LayerState<L> {
    /// `layer`'s inference pass from `input` into `output`, with this state's cache.
    pub fn infer(&mut self, layer: &L, input: &Batch<L::Input>, output: &mut Batch<L::Output>) {
        layer.forward(input, output, &mut self.cache);
    }
}

impl<L: Linear> LayerState<L> {
    /// `activation(linear(input))` fused ([`linear_activation_forward`]) at inference, into
    /// `output`, with this state's cache.
    pub fn infer_activated<S: Shape, F: EpilogueFn>(
        &mut self,
        linear: &L,
        activation: &Activation<S, F>,
        input: &Batch<L::Input>,
        output: &mut Batch<L::Output>,
    ) {
        linear_activation_forward(linear, &activation.function, input, output, &mut self.cache);
    }

    /// `activation(linear(input))` fused ([`linear_activation_forward`]) into this state.
    pub fn forward_activated<S: Shape, F: EpilogueFn>(
        &mut self,
        linear: &L,
        activation: &Activation<S, F>,
        input: &Batch<L::Input>,
    ) {
        let function = &activation.function;
        linear_activation_forward(linear, function, input, &mut self.output, &mut self.cache);
    }

    /// The fused op's backward pass ([`linear_activation_backward`]) from this state.
    pub fn backward_activated<S: Shape, F: EpilogueFn>(
        &mut self,
        linear: &L,
        activation: &Activation<S, F>,
        input: &Batch<L::Input>,
        grad_input: Option<&mut Batch<L::Input>>,
        grads: &mut L::Grads,
    ) {
        let (output, grad_output, cache) = (&self.output, &mut self.grad_output, &mut self.cache);
        linear_activation_backward(
            linear,
            &activation.function,
            input,
            output,
            grad_output,
            cache,
            grad_input,
            grads,
        );
    }
}

impl<S: Shape> LayerState<Dropout<S>> {
    /// `dropout`'s training pass over `values` in place ([`Dropout::forward_train_in_place`]),
    /// its masks kept in this state.
    pub fn forward_in_place(&mut self, dropout: &mut Dropout<S>, values: &mut Batch<S>) {
        dropout.forward_train_in_place(values, &mut self.cache);
    }

    /// Its backward pass over the gradient `grad` in place ([`Dropout::backward_in_place`]).
    pub fn backward_in_place(&self, dropout: &Dropout<S>, grad: &mut Batch<S>) {
        dropout.backward_in_place(grad, &self.cache);
    }
}

impl<M: Image, O: Image, const POOL: usize, const STRIDE: usize>
    LayerState<MaxPool2d<M, O, POOL, STRIDE>>
{
    /// The convolution and activation before this max pooling, run by it
    /// ([`conv_activation_pool_forward_train`]): each image's convolution output is pooled from
    /// scratch, never stored, and the convolution's cache is `conv_cache`.
    pub fn forward_through<
        I: Image,
        const K: usize,
        const CONV_STRIDE: usize,
        P: Padding,
        F: EpilogueFn,
    >(
        &mut self,
        pool: &MaxPool2d<M, O, POOL, STRIDE>,
        conv: &Conv2d<I, M, K, CONV_STRIDE, P>,
        activation: &Activation<M, F>,
        conv_cache: &mut ConvCache,
        input: &Batch<I>,
    ) {
        let (output, cache) = (&mut self.output, &mut self.cache);
        conv_activation_pool_forward_train(
            conv,
            &activation.function,
            pool,
            input,
            output,
            conv_cache,
            cache,
        );
    }

    /// The backward pass of [`LayerState::forward_through`] from this state into the
    /// gradient of the convolution's output before its activation
    /// ([`MaxPool2d::backward_through_activation`]).
    pub fn backward_through<F: EpilogueFn>(
        &self,
        pool: &MaxPool2d<M, O, POOL, STRIDE>,
        activation: &Activation<M, F>,
        grad_input: &mut Batch<M>,
    ) {
        let function = &activation.function;
        let (output, grad_output) = (&self.output, &self.grad_output);
        pool.backward_through_activation(function, output, grad_output, &self.cache, grad_input);
    }
}

impl<L: Layer> Default for LayerState<L> {
    fn default() -> Self {
        Self {
            output: Batch::default(),
            cache: L::Cache::default(),
            grad_output: Batch::default(),
        }
    }
}

/// Receives one layer's activations: its name, its output and the gradient with respect to
/// its output.
pub type ActivationVisitor<'a> = dyn FnMut(&'static str, &[f32], &[f32]) + 'a;

/// One row of a network's layer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The layer's field name (`conv1`), which also prefixes its parameters' names.
    pub name: &'static str,
    /// The layer as written in `network!` (`conv(32, 3)`).
    pub spec: &'static str,
    /// The layer's output shape, outermost first, without the batch axis.
    pub output: &'static [usize],
    /// Trainable parameters.
    pub params: usize,
    /// Saved but not trained values (batch normalisation's running statistics).
    pub buffers: usize,
    /// Multiply-adds per sample of its forward pass ([`Layer::MULS`]).
    pub muls: usize,
    /// Scratch values per thread its passes need ([`Layer::SCRATCH`]).
    pub scratch: usize,
}

impl LayerInfo {
    /// The row of layer type `L` named `name`, written `spec` in the layer list.
    pub const fn of<L: Layer>(name: &'static str, spec: &'static str) -> Self {
        LayerInfo {
            name,
            spec,
            output: <L::Output as Shape>::DIMS,
            params: L::PARAMS,
            buffers: L::BUFFERS,
            muls: L::MULS,
            scratch: L::SCRATCH,
        }
    }

    /// The row of a residual block's addition, named as the block, producing `S`.
    pub const fn addition<S: Shape>(name: &'static str) -> Self {
        LayerInfo {
            name,
            spec: "add",
            output: S::DIMS,
            params: 0,
            buffers: 0,
            muls: 0,
            scratch: 0,
        }
    }
}

/// A layer table's sums, a network's own [`Layer`] constants: parameters, buffers and
/// multiply-adds add up; scratch is the largest any layer needs (layers run one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerTotals {
    /// Trainable parameters.
    pub params: usize,
    /// Saved but not trained values.
    pub buffers: usize,
    /// Multiply-adds per sample.
    pub muls: usize,
    /// Scratch values per thread.
    pub scratch: usize,
}

impl LayerTotals {
    /// The totals of `layers`.
    pub const fn of(layers: &[LayerInfo]) -> Self {
        let mut totals = LayerTotals {
            params: 0,
            buffers: 0,
            muls: 0,
            scratch: 0,
        };
        let mut i = 0;
        while i < layers.len() {
            totals.params += layers[i].params;
            totals.buffers += layers[i].buffers;
            totals.muls += layers[i].muls;
            if layers[i].scratch > totals.scratch {
                totals.scratch = layers[i].scratch;
            }
            i += 1;
        }
        totals
    }
}

/// A training op's state whose activations [`Network::visit_activations`] reports.
pub trait Activations {
    /// Its output and the gradient with respect to it.
    fn activations(&self) -> (&[f32], &[f32]);
}

impl<L: Layer> Activations for LayerState<L> {
    fn activations(&self) -> (&[f32], &[f32]) {
        (self.output.as_slice(), self.grad_output.as_slice())
    }
}

impl<I: Shape, O: Shape> Activations for ResidualState<I, O> {
    fn activations(&self) -> (&[f32], &[f32]) {
        (self.output.as_slice(), self.grad_output.as_slice())
    }
}

/// Passes `state`'s activations to `visit` under `name`.
pub fn visit_activations(
    name: &'static str,
    state: &impl Activations,
    visit: &mut ActivationVisitor<'_>,
) {
    let (output, grad_output) = state.activations();
    visit(name, output, grad_output);
}

/// A network generated by `network!`.
pub trait Network: Layer {
    /// The network's name, as written in `network!`.
    const NAME: &'static str;
    /// Every layer, first to last.
    const LAYERS: &'static [LayerInfo];
    /// The last layer when it is softmax or sigmoid ([`head::Softmax`](crate::loss::head),
    /// [`head::Sigmoid`](crate::loss::head)), else [`head::Linear`](crate::loss::head):
    /// [`Network::forward_logits`] stops before a softmax or sigmoid head, and the losses it
    /// fits are those that implement [`FitsHead`](crate::loss::FitsHead) for it.
    type Head: crate::loss::Head;
    /// The ops inference runs, after fusion, first to last.
    const PLAN: &'static [OpInfo];
    /// Values per sample a training pass keeps: the outputs backward reads and every op's
    /// output gradient.
    const TRAINING_VALUES: usize;
    /// The sums over [`Network::LAYERS`]: what the network reports as a [`Layer`].
    const TOTALS: LayerTotals = LayerTotals::of(Self::LAYERS);

    /// Builds the network with Keras's default initialisation, drawn from `seed`.
    fn new(seed: u64) -> Self;

    /// Inference through every layer (dropout off, batch normalisation on its running
    /// statistics). The result lives in `workspace`, which keeps its buffers between calls, so
    /// repeated inference allocates nothing; a batch of one is one sample.
    fn infer<'w>(
        &self,
        input: &Batch<Self::Input>,
        workspace: &'w mut Self::Cache,
    ) -> &'w Batch<Self::Output>;

    /// Training forward pass up to the logits: the input of a final softmax, or the output of
    /// the last layer when there is none. The result lives in `workspace`.
    fn forward_logits<'w>(
        &mut self,
        input: &Batch<Self::Input>,
        workspace: &'w mut Self::Cache,
    ) -> &'w Batch<Self::Output>;

    /// Backward pass from the gradient of the loss with respect to the logits of the last
    /// [`Network::forward_logits`], through every layer in reverse order, into `grads` (and
    /// `grad_input`, if asked for).
    fn backward_logits(
        &self,
        input: &Batch<Self::Input>,
        grad_logits: &Batch<Self::Output>,
        workspace: &mut Self::Cache,
        grad_input: Option<&mut Batch<Self::Input>>,
        grads: &mut Self::Grads,
    );

    /// The inference graph layer by layer, dropout included (as the identity), with the
    /// attributes that decide each layer's function: what exporters read
    /// ([`graph`](crate::graph) documents the numbering of values).
    fn graph(&self) -> Vec<crate::graph::Node>;

    /// Visits what the last training passes left in `workspace` for each op that has its own
    /// output, first to last: `visit(op name, output, output gradient)`, an op named by its
    /// layers (`conv1+relu1`). [`fit`](crate::train::fit) uses it to name the op where a value
    /// first became non-finite.
    fn visit_activations(workspace: &Self::Cache, visit: &mut ActivationVisitor<'_>);

    /// The layer table, as Keras's `model.summary()` prints it.
    fn summary() -> String {
        summary_table(Self::NAME, Self::LAYERS)
    }

    /// What `network!` compiled: the ops inference runs after fusion, the algorithm of each
    /// convolution, where each output lives, and the bytes of the activation buffers of
    /// inference and training at `batch` samples.
    fn plan(batch: usize) -> String {
        plan_table(Self::NAME, Self::PLAN, Self::TRAINING_VALUES, batch)
    }
}

/// The table `model.summary()` prints in Keras, for a network called `name`.
pub fn summary_table(name: &str, layers: &[LayerInfo]) -> String {
    let rows: Vec<[String; 3]> = layers
        .iter()
        .map(|layer| {
            let dims: Vec<String> = layer.output.iter().map(ToString::to_string).collect();
            [
                format!("{} ({})", layer.name, layer.spec),
                format!("(None, {})", dims.join(", ")),
                thousands(layer.params + layer.buffers),
            ]
        })
        .collect();
    let headers = ["Layer (type)", "Output Shape", "Param #"];
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([headers[column].len()])
            .max()
            .unwrap_or(0)
            + 2
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let rule = |c: char| c.to_string().repeat(w0 + w1 + w2 + 1);
    let mut out = format!("Model: \"{name}\"\n{}\n", rule('_'));
    out += &format!(
        " {:<w0$}{:<w1$}{:>w2$}\n{}\n",
        headers[0],
        headers[1],
        headers[2],
        rule('=')
    );
    for (i, row) in rows.iter().enumerate() {
        out += &format!(" {:<w0$}{:<w1$}{:>w2$}\n", row[0], row[1], row[2]);
        out += &format!(
            "{}\n",
            if i + 1 == rows.len() {
                rule('=')
            } else {
                rule('_')
            }
        );
    }
    let (trainable, buffers): (usize, usize) = layers.iter().fold((0, 0), |(p, b), layer| {
        (p + layer.params, b + layer.buffers)
    });
    out += &format!(
        "Total params: {}\nTrainable params: {}\nNon-trainable params: {}\n",
        thousands(trainable + buffers),
        thousands(trainable),
        thousands(buffers)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_keras_layout_and_totals() {
        let layers = [
            LayerInfo {
                name: "conv1",
                spec: "conv(32, 3)",
                output: &[26, 26, 32],
                params: 320,
                buffers: 0,
                muls: 0,
                scratch: 0,
            },
            LayerInfo {
                name: "batchnorm1",
                spec: "batchnorm",
                output: &[26, 26, 32],
                params: 64,
                buffers: 64,
                muls: 0,
                scratch: 0,
            },
            LayerInfo {
                name: "dense1",
                spec: "dense(10)",
                output: &[10],
                params: 1_000_010,
                buffers: 0,
                muls: 0,
                scratch: 0,
            },
        ];
        let table = summary_table("Tiny", &layers);
        assert!(table.starts_with("Model: \"Tiny\"\n"));
        assert!(table.contains(" conv1 (conv(32, 3))"));
        assert!(table.contains("(None, 26, 26, 32)"));
        assert!(table.contains("1,000,010\n"));
        assert!(table.ends_with(
            "Total params: 1,000,458\nTrainable params: 1,000,394\nNon-trainable params: 64\n"
        ));
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_199_882), "1,199,882");
    }
}
