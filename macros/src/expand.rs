//! Code generation: a network and its [`Plan`] become a struct of runtime layers with
//! straight-line passes. Everything numeric happens in the runtime; this module only writes the
//! calls the plan lists.
//!
//! For `pub MnistCnn<...>` it writes:
//! - `pub struct MnistCnn`, one public field per layer (`conv1`, `relu1`, ..., `dense2`), so
//!   parameter names (`conv1.weight`) do not depend on fusion;
//! - `pub struct MnistCnnWorkspace`, private: one `LayerState` (output, cache, output gradient)
//!   per training op (`conv1_relu1` for a fused op; none for a view) and the inference buffers;
//! - `pub struct MnistCnnGrads`, one gradient field per layer with parameters;
//! - `mod __mnist_cnn` (hidden): the support items of `constnet::expansion` and an alias per
//!   catalogue layer type (`Conv1`), so each long type is written once;
//! - in one anonymous `const` block that imports that module as `cn`: inherent `new`, `infer`,
//!   `summary`, `plan`; the passes; `impl Layer` (the whole function, final softmax included)
//!   and `impl Network` (logits path, layer and plan tables, graph).

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::plan::passes::{
    ACTIVATION_EPILOGUE, BATCHNORM_FOLDING, FLATTEN_VIEW, POOLING_FROM_SCRATCH, Pass,
    RESIDUAL_EPILOGUE,
};
use crate::plan::{Graph, Op, OpKind, Plan, Slots, Source, StateOf, ValueId};
use constnet_catalogue::names;
use constnet_catalogue::{
    Constructor, Generic, InferenceSlot, LayerKind, Padding, Pads, RuntimeLayer, Shape,
};

use crate::valid::{Layer, Network, Step};

/// The type of a sample of `shape` through `prefix`, the path to the support items with its
/// `::` (`cn::`, or nothing where they are in scope): `{prefix}Hwc<h, w, c>`, `{prefix}Flat<n>`.
fn shape_type_in(shape: Shape, prefix: &TokenStream) -> TokenStream {
    match shape {
        Shape::Flat(n) => {
            let n = Literal::usize_unsuffixed(n);
            quote!(#prefix Flat<#n>)
        }
        Shape::Image(h, w, c) => {
            let (h, w, c) = (
                Literal::usize_unsuffixed(h),
                Literal::usize_unsuffixed(w),
                Literal::usize_unsuffixed(c),
            );
            quote!(#prefix Hwc<#h, #w, #c>)
        }
    }
}

/// [`shape_type_in`] where the expansion's support module is imported as `cn`.
fn shape_type(shape: Shape) -> TokenStream {
    shape_type_in(shape, &quote!(cn::))
}

/// The name of a catalogue layer's type alias: `Conv1`, `Res1Conv1` (its field in CamelCase).
fn alias(layer: &Layer) -> Ident {
    let camel: String = layer
        .field
        .to_string()
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    format_ident!("{camel}")
}

/// The type of a layer inside the expansion's block: its alias (`cn::Conv1`), or the user's own
/// type for `layer(T)`.
fn layer_type(layer: &Layer) -> TokenStream {
    layer_type_in(layer, &quote!(cn::))
}

/// The type of a layer through `prefix`, the path to the support module with its `::`.
fn layer_type_in(layer: &Layer, prefix: &TokenStream) -> TokenStream {
    match &layer.custom {
        Some(ty) => quote!(#ty),
        None => {
            let alias = alias(layer);
            quote!(#prefix #alias)
        }
    }
}

/// The alias of a catalogue layer's runtime type, `pub type Conv1 = Conv2d<...>;`, written
/// inside the support module; nothing for a user's layer.
fn alias_definition(layer: &Layer) -> TokenStream {
    if layer.custom.is_some() {
        return quote!();
    }
    let runtime = runtime_layer(layer);
    let name = format_ident!("{}", runtime.name);
    let generics = runtime.generics.iter().map(|generic| match *generic {
        Generic::Input => shape_type_in(layer.input, &quote!()),
        Generic::Output => shape_type_in(layer.output, &quote!()),
        Generic::Size(size) => Literal::usize_unsuffixed(size).into_token_stream(),
        Generic::Padding(padding) => padding_type(padding),
    });
    let alias = alias(layer);
    quote!(pub type #alias = #name<#(#generics),*>;)
}

/// The runtime's marker type of `padding`: `Valid`, `Same` or `Pads<top, bottom, left, right>`.
fn padding_type(padding: Padding) -> TokenStream {
    match padding {
        Padding::Valid => quote!(Valid),
        Padding::Same => quote!(Same),
        Padding::Explicit(Pads {
            top,
            bottom,
            left,
            right,
        }) => {
            let pads = [top, bottom, left, right].map(Literal::usize_unsuffixed);
            quote!(Pads<#(#pads),*>)
        }
    }
}

/// The catalogue's runtime type of a layer that is not the user's.
fn runtime_layer(layer: &Layer) -> RuntimeLayer {
    let runtime = layer.kind.runtime(layer.input, layer.output);
    runtime.expect("every catalogue layer has a runtime type")
}

/// How the generated constructor builds a layer (`rng` is the network's seeded generator).
fn constructor(layer: &Layer) -> TokenStream {
    let ty = layer_type(layer);
    if layer.custom.is_some() {
        return quote!(<#ty as cn::Build>::build(&mut rng));
    }
    match runtime_layer(layer).constructor {
        Constructor::Plain => quote!(<#ty>::new()),
        Constructor::Seeded => quote!(<#ty>::new(&mut rng)),
        Constructor::WithValue { method, value } => {
            let (method, value) = (format_ident!("{method}"), Literal::f32_suffixed(value));
            quote!(<#ty>::#method(#value))
        }
        Constructor::WithValueAndSeed(value) => {
            let value = Literal::f32_suffixed(value);
            quote!(<#ty>::new(#value, cn::next_seed(&mut rng)))
        }
    }
}

/// Whether building the layer draws from the network's generator.
fn needs_rng(layer: &Layer) -> bool {
    layer.custom.is_some() || runtime_layer(layer).constructor.uses_rng()
}

/// `visit` when `used`, `_visit` otherwise, so the generated code has no unused variables.
fn param_name(name: &str, used: bool) -> Ident {
    if used {
        format_ident!("{name}")
    } else {
        format_ident!("_{name}")
    }
}

/// Which of an op's training buffers an expression names.
#[derive(Clone, Copy)]
enum Buffer {
    /// Its output, read.
    Output,
    /// Its output, written in place.
    OutputMut,
    /// The gradient with respect to its output, written.
    GradMut,
}

/// A `&Batch` or `&mut Batch` expression for `buffer` of value `value` of the training graph:
/// the buffer of the op that owns the value's storage, reshaped when the value is a view of
/// another shape. (Straight from the owner: a view of a view would leave the middle shape for
/// the compiler to guess.)
/// `None` when the storage is the caller's input.
fn train_place(graph: &Graph, value: ValueId, buffer: Buffer) -> Option<TokenStream> {
    let root = graph.root(value);
    let Source::Op(owner) = graph.values[root].source else {
        return None;
    };
    let field = &graph.ops[owner].field;
    let (place, reshape) = match buffer {
        Buffer::Output => (quote!(&ws.#field.output), quote!(reshaped)),
        Buffer::OutputMut => (quote!(&mut ws.#field.output), quote!(reshaped_mut)),
        Buffer::GradMut => (quote!(&mut ws.#field.grad_output), quote!(reshaped_mut)),
    };
    Some(if same_shape_as_root(graph, value) {
        place
    } else {
        quote!(cn::Batch::#reshape(#place))
    })
}

/// Whether `value` has the shape of the value whose storage it is.
fn same_shape_as_root(graph: &Graph, value: ValueId) -> bool {
    graph.values[graph.root(value)].shape == graph.values[value].shape
}

/// A `&Batch` expression for value `value` of the training graph.
fn train_value(graph: &Graph, value: ValueId) -> TokenStream {
    train_place(graph, value, Buffer::Output).unwrap_or_else(|| {
        if same_shape_as_root(graph, value) {
            quote!(input)
        } else {
            quote!(cn::Batch::reshaped(input))
        }
    })
}

/// An `Option<&mut Batch>` expression for the gradient of value `value` of the training graph:
/// the caller's `grad_input` for the network's input.
fn train_grad(graph: &Graph, value: ValueId) -> TokenStream {
    match train_place(graph, value, Buffer::GradMut) {
        Some(place) => quote!(cn::Some(#place)),
        None if same_shape_as_root(graph, value) => quote!(grad_input.as_deref_mut()),
        None => quote!(grad_input.as_deref_mut().map(cn::Batch::reshaped_mut)),
    }
}

/// A `&mut Batch` expression for `buffer` of value `value`, which the plan only overwrites
/// when an op owns its storage.
fn train_place_mut(graph: &Graph, value: ValueId, buffer: Buffer) -> TokenStream {
    train_place(graph, value, buffer).expect("the plan never overwrites the caller's input")
}

/// One op's training forward pass.
fn train_forward(graph: &Graph, op: &Op) -> TokenStream {
    let input = train_value(graph, op.input);
    let state = &op.field;
    match &op.kind {
        OpKind::Layer(layer) | OpKind::Shortcut { layer, .. } => {
            let field = &layer.field;
            quote!(ws.#state.forward_train(&mut self.#field, #input);)
        }
        OpKind::LinearActivation { pooled: true, .. } => quote!(),
        OpKind::PoolThroughActivation { pool, activation } => {
            let Source::Op(conv_op) = graph.values[op.input].source else {
                unreachable!("the pool reads the output of the convolution it runs")
            };
            let conv_op = &graph.ops[conv_op];
            let OpKind::LinearActivation { linear: conv, .. } = conv_op.kind else {
                unreachable!("the pool runs a fused convolution")
            };
            let conv_input = train_value(graph, conv_op.input);
            let (conv, conv_state) = (&conv.field, &conv_op.field);
            let (pool, activation) = (&pool.field, &activation.field);
            quote! {
                ws.#state.forward_through(
                    &self.#pool, &self.#conv, &self.#activation, &mut ws.#conv_state.cache,
                    #conv_input,
                );
            }
        }
        OpKind::LinearActivation {
            linear, activation, ..
        } => {
            let (linear, activation) = (&linear.field, &activation.field);
            quote!(ws.#state.forward_activated(&self.#linear, &self.#activation, #input);)
        }
        OpKind::DropoutInPlace(layer) => {
            let field = &layer.field;
            let values = train_place_mut(graph, op.input, Buffer::OutputMut);
            quote!(ws.#field.forward_in_place(&mut self.#field, #values);)
        }
        OpKind::Add { skip, .. } => {
            let skip = train_value(graph, *skip);
            quote!(cn::residual_add_forward(#input, #skip, &mut ws.#state.output);)
        }
        OpKind::View(_) => quote!(),
        OpKind::Conv { .. } => {
            unreachable!("batch normalisation and pooling fuse at inference only")
        }
    }
}

/// One op's backward pass, from the gradient in its state into its input's gradient and its
/// parameters' gradients.
fn train_backward(graph: &Graph, op: &Op) -> TokenStream {
    let input = train_value(graph, op.input);
    let grad_input = train_grad(graph, op.input);
    let state = &op.field;
    match &op.kind {
        OpKind::Layer(layer) | OpKind::Shortcut { layer, .. } => {
            let field = &layer.field;
            let grads = if layer.kind.has_params() {
                quote!(&mut grads.#field)
            } else {
                quote!(&mut cn::NoParams)
            };
            // A projection's input gradient is the block's skip share, kept apart until the
            // block's layers have written theirs.
            let grad_input = match op.kind {
                OpKind::Shortcut { block, .. } => {
                    let block = &block.field;
                    quote!(cn::Some(&mut ws.#block.grad_skip))
                }
                _ => grad_input,
            };
            quote!(ws.#state.backward(&self.#field, #input, #grad_input, #grads);)
        }
        OpKind::LinearActivation {
            linear,
            pooled: true,
            ..
        } => {
            let linear = &linear.field;
            quote!(ws.#state.backward(&self.#linear, #input, #grad_input, &mut grads.#linear);)
        }
        OpKind::PoolThroughActivation { pool, activation } => {
            let (pool, activation) = (&pool.field, &activation.field);
            let grad_input = train_place_mut(graph, op.input, Buffer::GradMut);
            quote!(ws.#state.backward_through(&self.#pool, &self.#activation, #grad_input);)
        }
        OpKind::LinearActivation {
            linear, activation, ..
        } => {
            let (linear, activation) = (&linear.field, &activation.field);
            let grads = quote!(&mut grads.#linear);
            quote!(ws.#state.backward_activated(&self.#linear, &self.#activation, #input, #grad_input, #grads);)
        }
        OpKind::DropoutInPlace(layer) => {
            let field = &layer.field;
            let grad = train_place_mut(graph, op.input, Buffer::GradMut);
            quote!(ws.#field.backward_in_place(&self.#field, #grad);)
        }
        OpKind::Add { skip, .. } => {
            let grad_body = train_place_mut(graph, op.input, Buffer::GradMut);
            let grad_shortcut = match graph.values[*skip].source {
                Source::Op(shortcut) => {
                    let shortcut = &graph.ops[shortcut].field;
                    quote!(ws.#shortcut.grad_output.copy_from(&ws.#state.grad_output);)
                }
                _ => quote!(),
            };
            quote! {
                cn::Batch::copy_from(#grad_body, &ws.#state.grad_output);
                #grad_shortcut
            }
        }
        OpKind::View(_) => quote!(),
        OpKind::Conv { .. } => {
            unreachable!("batch normalisation and pooling fuse at inference only")
        }
    }
}

/// After the backward pass of op `index`, the first op of the residual blocks starting there:
/// the gradient of each block's input gets its shortcut's share (the block's output gradient
/// for an identity shortcut, what the projection gave back otherwise).
fn skip_gradients(graph: &Graph, index: usize) -> TokenStream {
    let shares = graph.ops.iter().filter_map(|op| {
        let OpKind::Add {
            block,
            first_body_op,
            ..
        } = op.kind
        else {
            return None;
        };
        if first_body_op != index {
            return None;
        }
        let block_input = graph.ops[first_body_op].input;
        let grad = train_grad(graph, block_input);
        let field = &op.field;
        let share = match block.shortcut {
            Some(_) => quote!(&ws.#field.grad_skip),
            None => quote!(&ws.#field.grad_output),
        };
        Some(quote!(cn::accumulate_gradient(#grad, #share);))
    });
    quote!(#(#shares)*)
}

/// `layer` as the plan table shows a layer `pass` fused into its op: `relu (activation
/// epilogue)`.
fn by(layer: &Layer, pass: &Pass) -> String {
    format!("{} ({})", layer.spec, pass.name)
}

/// The local variable holding value `value` during inference.
fn infer_var(value: ValueId) -> Ident {
    format_ident!("v{value}")
}

/// A `&Batch` expression for value `value` of the inference graph.
fn infer_value(graph: &Graph, value: ValueId) -> TokenStream {
    let var = infer_var(value);
    match graph.values[value].source {
        Source::Input => quote!(input),
        Source::View(_) => quote!(#var),
        Source::Op(_) => quote!(&#var),
    }
}

/// The index of an inference buffer, as a literal.
fn slot_index(slot: InferenceSlot) -> Literal {
    match slot {
        InferenceSlot::Buffer(index) => Literal::usize_unsuffixed(index),
        InferenceSlot::Output | InferenceSlot::View => {
            unreachable!("the output and views are not buffers")
        }
    }
}

/// One op of inference: its output taken from its slot, the call, and the storage of the values
/// it was the last to read given back to their slots.
fn infer_op(plan: &Plan, slots: &Slots, index: usize) -> TokenStream {
    let graph = &plan.infer;
    let op = &graph.ops[index];
    let input = infer_value(graph, op.input);
    let out = infer_var(op.output);
    let out_ty = shape_type(graph.values[op.output].shape);
    if let OpKind::View(_) = op.kind {
        return quote!(let #out: &cn::Batch<#out_ty> = cn::Batch::reshaped(#input););
    }
    let (take, target) = match slots.of[op.output] {
        Some(InferenceSlot::Output) => (quote!(), quote!(ws.inference.output_mut())),
        slot => {
            let index = slot_index(slot.expect("an op's output has a slot"));
            (
                quote!(let mut #out = ws.inference.take(#index, input.len());),
                quote!(&mut #out),
            )
        }
    };
    let call = infer_call(plan, op, &input, &target);
    let give = slots.released[index].iter().map(|&(buffer, value)| {
        let (index, var) = (Literal::usize_unsuffixed(buffer), infer_var(value));
        quote!(ws.inference.give(#index, #var);)
    });
    quote!(#take #call #(#give)*)
}

/// The cache of `layer` in the workspace: that of the training op computing it, which
/// inference shares (a convolution's transformed filters, kept between calls).
fn layer_cache(plan: &Plan, layer: &Layer) -> TokenStream {
    let state = layer_state(plan, layer);
    quote!(&mut ws.#state.cache)
}

/// The workspace field of the training state that holds `layer`'s cache.
fn layer_state<'p>(plan: &'p Plan, layer: &Layer) -> &'p Ident {
    let op = plan.train.op_computing(layer);
    &op.expect("every layer but the head is trained").field
}

/// The call that computes an inference op from `input` into `target`.
fn infer_call(plan: &Plan, op: &Op, input: &TokenStream, target: &TokenStream) -> TokenStream {
    let graph = &plan.infer;
    match &op.kind {
        OpKind::Layer(layer) | OpKind::Shortcut { layer, .. } => {
            let (field, state) = (&layer.field, &op.field);
            quote!(ws.#state.infer(&self.#field, #input, #target);)
        }
        OpKind::LinearActivation {
            linear, activation, ..
        } => {
            let state = layer_state(plan, linear);
            let (linear, activation) = (&linear.field, &activation.field);
            quote!(ws.#state.infer_activated(&self.#linear, &self.#activation, #input, #target);)
        }
        OpKind::Conv {
            conv,
            batchnorm,
            activation,
            pool,
            residual,
        } => {
            let cache = layer_cache(plan, conv);
            let depthwise = matches!(conv.kind, LayerKind::DepthwiseConv { .. });
            let conv = &conv.field;
            let weights = match batchnorm {
                Some(batchnorm) => {
                    let (batchnorm, folded) = (&batchnorm.field, &op.field);
                    quote!(cn::fold_batchnorm(&self.#conv.params, &self.#batchnorm, &mut ws.#folded))
                }
                None => quote!(cn::ConvWeights::from(&self.#conv.params)),
            };
            let activation = match activation {
                Some(layer) => {
                    let field = &layer.field;
                    quote!(cn::EpilogueFn::epilogue(&self.#field.function))
                }
                None => quote!(cn::ActivationKind::Identity),
            };
            match (pool, residual) {
                (Some(pool), _) => {
                    let pool = &pool.field;
                    quote!(cn::conv_activation_pool_forward(&self.#conv, #weights, #activation, &self.#pool, #input, #target, #cache);)
                }
                (None, Some(residual)) => {
                    let skip = infer_value(graph, residual.skip);
                    quote!(cn::conv_residual_forward(&self.#conv, #weights, #activation, #input, #skip, #target, #cache);)
                }
                (None, None) if depthwise => {
                    quote!(cn::depthwise_params_forward(&self.#conv, #weights, #activation, #input, #target, #cache);)
                }
                (None, None) => {
                    quote!(cn::conv_params_forward(&self.#conv, #weights, #activation, #input, #target, #cache);)
                }
            }
        }
        OpKind::Add { skip, .. } => {
            let skip = infer_value(graph, *skip);
            quote!(cn::residual_add_forward(#input, #skip, #target);)
        }
        OpKind::View(_) => unreachable!("a view runs nothing"),
        OpKind::DropoutInPlace(_) | OpKind::PoolThroughActivation { .. } => {
            unreachable!("dropout and the pool that takes a derivative run in training only")
        }
    }
}

/// The inference pass: every op of the inference graph, or a copy when dropout was all there
/// was.
fn infer_body(plan: &Plan, slots: &Slots) -> TokenStream {
    if plan.infer.ops.is_empty() {
        return quote!(ws.inference.output_mut().copy_from(input););
    }
    let ops = (0..plan.infer.ops.len()).map(|index| infer_op(plan, slots, index));
    quote!(#(#ops)*)
}

/// The plan table's row of one inference op.
fn op_info(graph: &Graph, slots: &Slots, op: &Op) -> TokenStream {
    let name = &op.name;
    let runs = match &op.kind {
        OpKind::Layer(layer) => layer.spec.clone(),
        OpKind::Shortcut { layer, .. } => format!("{} (shortcut)", layer.spec),
        OpKind::Add { skip, .. } => format!(
            "add: {} + {}",
            graph.op_name(op.input),
            graph.op_name(*skip)
        ),
        OpKind::LinearActivation {
            linear, activation, ..
        } => format!("{} + {}", linear.spec, by(activation, &ACTIVATION_EPILOGUE)),
        OpKind::View(layer) => by(layer, &FLATTEN_VIEW),
        OpKind::DropoutInPlace(_) | OpKind::PoolThroughActivation { .. } => {
            unreachable!("dropout and the pool that takes a derivative run in training only")
        }
        OpKind::Conv {
            conv,
            batchnorm,
            activation,
            pool,
            residual,
        } => {
            let residual = residual.map(|residual| {
                let skip = graph.op_name(residual.skip);
                format!("{skip} ({})", RESIDUAL_EPILOGUE.name)
            });
            let parts = [
                Some(conv.spec.clone()),
                batchnorm.map(|layer| by(layer, &BATCHNORM_FOLDING)),
                residual,
                activation.map(|layer| by(layer, &ACTIVATION_EPILOGUE)),
                pool.map(|layer| by(layer, &POOLING_FROM_SCRATCH)),
            ];
            parts.into_iter().flatten().collect::<Vec<_>>().join(" + ")
        }
    };
    let output = shape_type(graph.values[op.output].shape);
    let inference = match (&op.kind, slots.of[op.output]) {
        (OpKind::View(_), _) => quote!(View),
        (_, Some(InferenceSlot::Output)) => quote!(Output),
        (_, slot) => {
            let index = slot_index(slot.expect("an op's output has a slot"));
            quote!(Buffer(#index))
        }
    };
    let conv = match conv_of(op) {
        Some(conv) => {
            let conv = layer_type(conv);
            quote!(cn::Some(#conv::CONV_OP))
        }
        None => quote!(cn::None),
    };
    quote! {
        cn::OpInfo {
            name: #name,
            runs: #runs,
            conv: #conv,
            output: <#output as cn::Shape>::DIMS,
            inference: cn::InferenceSlot::#inference,
        }
    }
}

/// The convolution an inference op runs, if any.
fn conv_of<'p>(op: &Op<'p>) -> Option<&'p Layer> {
    let layer = match &op.kind {
        OpKind::Layer(layer) | OpKind::Shortcut { layer, .. } => layer,
        OpKind::LinearActivation { linear, .. } => linear,
        OpKind::Conv { conv, .. } => conv,
        OpKind::Add { .. }
        | OpKind::View(_)
        | OpKind::DropoutInPlace(_)
        | OpKind::PoolThroughActivation { .. } => return None,
    };
    matches!(layer.kind, LayerKind::Conv { .. }).then_some(*layer)
}

/// The type of a workspace state ([`Plan::states`]) through `prefix`: a `LayerState` of the
/// layer's type, or a block's `ResidualState`.
fn state_type(of: StateOf, prefix: &TokenStream) -> TokenStream {
    match of {
        StateOf::Layer(layer) => {
            let ty = layer_type_in(layer, prefix);
            quote!(#prefix LayerState<#ty>)
        }
        StateOf::Residual(block) => {
            let input = shape_type_in(block.input, prefix);
            let output = shape_type_in(block.output, prefix);
            quote!(#prefix ResidualState<#input, #output>)
        }
    }
}

/// What every part of the expansion refers to.
struct Names<'n> {
    net: &'n Network,
    plan: Plan<'n>,
    /// Where inference keeps each value of `plan.infer`.
    infer_slots: Slots,
    workspace: Ident,
    grads: Ident,
    /// The hidden module of the network's type aliases and support items (`__mnist_cnn`),
    /// imported as `cn` inside the expansion's block.
    module: Ident,
    input_ty: TokenStream,
    output_ty: TokenStream,
}

impl<'n> Names<'n> {
    fn new(net: &'n Network) -> Self {
        let name = &net.name;
        let plan = Plan::new(net);
        Names {
            net,
            infer_slots: plan.infer.slots(),
            plan,
            workspace: format_ident!("{name}Workspace"),
            grads: format_ident!("{name}Grads"),
            module: format_ident!("__{}", names::snake_case(&name.to_string())),
            input_ty: quote!(cn::Input),
            output_ty: quote!(cn::Output),
        }
    }

    /// The workspace field of the op that computes the logits.
    fn logits(&self) -> &Ident {
        let last = self.plan.train.ops.last();
        &last.expect("validated: a layer before the head").field
    }
}

/// The layers with trainable parameters.
fn param_layers(net: &Network) -> Vec<&Layer> {
    net.layers.iter().filter(|l| l.kind.has_params()).collect()
}

/// The layers with saved, untrained buffers (batch normalisation's running statistics; a custom
/// layer's, if it has any).
fn buffer_layers(net: &Network) -> Vec<&Layer> {
    let with_buffers = |l: &&Layer| l.kind.has_buffers();
    net.layers.iter().filter(with_buffers).collect()
}

pub fn expand(net: &Network) -> TokenStream {
    let names = Names::new(net);
    let items = [structs(&names), grads_struct(&names), type_aliases(&names)];
    let impls = [
        custom_layer_checks(net),
        inherent_impls(&names),
        passes(&names),
        layer_impl(&names),
        network_impl(&names),
    ];
    let module = &names.module;
    quote! {
        #(#items)*
        const _: () = {
            use #module as cn;
            #(#impls)*
        };
    }
}

/// The hidden module of the network's types: the expansion's support items, an alias per
/// catalogue layer (`Conv1`) and the input and output shapes.
fn type_aliases(names: &Names) -> TokenStream {
    let Names { net, module, .. } = names;
    let aliases = net.layers.iter().map(alias_definition);
    let input = shape_type_in(net.input, &quote!());
    let output = shape_type_in(net.output, &quote!());
    quote! {
        #[doc(hidden)]
        mod #module {
            pub use ::constnet::expansion::*;
            pub type Input = #input;
            pub type Output = #output;
            #(#aliases)*
        }
    }
}

/// For each `layer(T)`, a bound the compiler checks: `T` is a layer (that `network!` can build
/// and clone) from the shape its neighbour gives to the shape the next one takes. The error is
/// spanned on `T` and names both shapes.
fn custom_layer_checks(net: &Network) -> TokenStream {
    let checks = net.layers.iter().filter_map(|layer| {
        let ty = layer.custom.as_ref()?;
        let (input, output) = (shape_type(layer.input), shape_type(layer.output));
        Some(quote_spanned! {ty.span()=>
            const _: fn() = {
                fn takes_and_makes<L>()
                where
                    L: cn::Layer<Input = #input, Output = #output> + cn::Build + ::core::clone::Clone,
                {
                }
                takes_and_makes::<#ty>
            };
        })
    });
    quote!(#(#checks)*)
}

/// The network's struct (a field per layer) and its workspace (a state per training op, the
/// batch normalisations inference folds, and inference's buffers; private, so what the plan
/// fuses is not part of the API).
fn structs(names: &Names) -> TokenStream {
    let Names {
        net,
        plan,
        workspace,
        module,
        ..
    } = names;
    let Network {
        attrs, vis, name, ..
    } = net;
    let prefix = quote!(#module::);
    let fields = net.layers.iter().map(|layer| {
        let (field, ty) = (&layer.field, layer_type_in(layer, &prefix));
        let doc = format!("`{}`: {} → {}", layer.spec, layer.input, layer.output);
        quote!(#[doc = #doc] pub #field: #ty,)
    });
    let states = plan.states().into_iter().map(|(field, of)| {
        let ty = state_type(of, &prefix);
        quote!(#field: #ty,)
    });
    let folded = plan.folding_ops().into_iter().map(|op| {
        let field = &op.field;
        quote!(#field: #module::FoldedBatchNorm,)
    });
    let buffers = Literal::usize_unsuffixed(names.infer_slots.buffers);
    // A paragraph of its own after the user's documentation, if any.
    let documented = attrs.iter().any(|attr| attr.path().is_ident("doc"));
    let struct_doc = format!(
        "{}Generated by `network!` from {} layers; `{name}::summary()` prints the table, \
         `{name}::plan(batch)` what was compiled.",
        if documented { "\n\n" } else { "" },
        net.layers.len()
    );
    let workspace_doc = format!(
        "What [`{name}`] keeps between passes: each training op's output, cache and output \
         gradient, and the buffers inference keeps its values in. Reuse one across calls and \
         nothing is allocated per call."
    );
    quote! {
        #(#attrs)*
        #[doc = #struct_doc]
        #[derive(::core::clone::Clone)]
        #vis struct #name { #(#fields)* }

        #[doc = #workspace_doc]
        #[derive(Default)]
        #vis struct #workspace {
            #(#states)*
            #(#folded)*
            inference: #module::InferenceBuffers<#module::Output, #buffers>,
        }
    }
}

/// The gradients struct, a field per layer with parameters named as the layer, and its
/// parameter-set impl (every field, prefixed with its layer's name).
fn grads_struct(names: &Names) -> TokenStream {
    let Names {
        net, grads, module, ..
    } = names;
    let (vis, name) = (&net.vis, &net.name);
    let prefix = quote!(#module::);
    let fields = param_layers(net).into_iter().map(|layer| {
        let (field, ty, name) = (&layer.field, layer_type_in(layer, &prefix), &layer.name);
        quote!(#field: #ty = #name)
    });
    quote!(#module::network_grads!(#vis #grads of #name { #(#fields),* });)
}

/// `field: "name"` for each of `layers`, comma-separated: what the runtime's macros read.
fn named_fields(layers: Vec<&Layer>) -> TokenStream {
    let fields = layers.iter().map(|layer| &layer.field);
    let names = layers.iter().map(|layer| &layer.name);
    quote!(#(#fields: #names),*)
}

/// What a network offers without a trait in scope: `new`, `infer`, `summary`, `plan` and its
/// parameter count; and the workspace's constructor and the filter memory it keeps.
fn inherent_impls(names: &Names) -> TokenStream {
    let Names {
        net,
        plan,
        workspace,
        input_ty,
        output_ty,
        ..
    } = names;
    let name = &net.name;
    let constructors = net.layers.iter().map(|layer| {
        let (field, constructor) = (&layer.field, constructor(layer));
        quote!(#field: #constructor,)
    });
    let seed_rng = if net.layers.iter().any(needs_rng) {
        quote!(let mut rng = cn::seeded_rng(seed);)
    } else {
        quote!(let _ = seed;)
    };
    let conv_states = plan
        .states()
        .into_iter()
        .filter_map(|(field, of)| match of {
            StateOf::Layer(layer) if matches!(layer.kind, LayerKind::Conv { .. }) => Some(field),
            _ => None,
        });
    quote! {
        impl #name {
            /// Trainable parameters, as Keras's summary counts them.
            pub const PARAMS: usize = <Self as cn::Network>::TOTALS.params;

            /// The network with its weights drawn from a generator seeded with `seed`.
            pub fn new(seed: u64) -> Self {
                #seed_rng
                Self { #(#constructors)* }
            }

            /// The network's output for `input`, kept in `workspace`.
            pub fn infer<'w>(&self, input: &cn::Batch<#input_ty>, workspace: &'w mut #workspace) -> &'w cn::Batch<#output_ty> {
                cn::on_pool::<Self, _>(input.len(), || self.run_inference(input, workspace));
                workspace.inference.output()
            }

            /// The layer table, as Keras's `model.summary()` prints it.
            pub fn summary() -> ::std::string::String {
                <Self as cn::Network>::summary()
            }

            /// What `network!` compiled, and the memory it needs at `batch` samples.
            pub fn plan(batch: usize) -> ::std::string::String {
                <Self as cn::Network>::plan(batch)
            }
        }

        impl #workspace {
            /// An empty workspace; the first call at a batch size allocates what it needs.
            pub fn new() -> Self {
                Self::default()
            }

            /// Bytes of transformed convolution filters kept between calls (the plan table's
            /// figure, once a call has run).
            pub fn filter_bytes(&self) -> usize {
                0 #( + self.#conv_states.cache.filter_bytes() )*
            }
        }
    }
}

/// The passes the plan lists (training forward, backward, inference) and `Clone`.
fn passes(names: &Names) -> TokenStream {
    let Names {
        net,
        plan,
        workspace,
        grads,
        input_ty,
        ..
    } = names;
    let name = &net.name;
    let train = &plan.train;
    let train_forward_ops = train.ops.iter().map(|op| train_forward(train, op));
    let backward_ops = train.ops.iter().enumerate().rev().map(|(index, op)| {
        let backward = train_backward(train, op);
        let shares = skip_gradients(train, index);
        quote!(#backward #shares)
    });
    let infer_ops = infer_body(plan, &names.infer_slots);
    let grads_arg = param_name("grads", !param_layers(net).is_empty());
    quote! {
        impl #name {
            /// Training forward pass through every op up to the logits (a pass: see `on_pool`).
            fn train_layers(&mut self, input: &cn::Batch<#input_ty>, ws: &mut #workspace) {
                #( #train_forward_ops )*
            }

            /// Backward pass from the gradient in the logits op's state, last op first (a pass).
            fn backward_layers(
                &self,
                input: &cn::Batch<#input_ty>,
                ws: &mut #workspace,
                mut grad_input: cn::Option<&mut cn::Batch<#input_ty>>,
                #grads_arg: &mut #grads,
            ) {
                #( #backward_ops )*
            }

            /// Inference through every op of the plan into `ws.inference` (a pass).
            fn run_inference(&self, input: &cn::Batch<#input_ty>, ws: &mut #workspace) {
                #infer_ops
            }
        }

    }
}

/// The network as one `Layer`: its whole function, head included.
fn layer_impl(names: &Names) -> TokenStream {
    let Names {
        net,
        plan,
        workspace,
        grads,
        input_ty,
        output_ty,
        ..
    } = names;
    let name = &net.name;
    let logits = names.logits();
    let logits_value = train_value(&plan.train, plan.train.result());
    let (forward_train_tail, backward_head) = match plan.head {
        Some(head) => {
            let sm = &head.field;
            (
                quote! {
                    ws.#sm.forward_train(&mut self.#sm, #logits_value);
                    output.copy_from(&ws.#sm.output);
                },
                quote! {
                    cn::Layer::backward(
                        &self.#sm,
                        #logits_value,
                        &ws.#sm.output,
                        grad_output,
                        &mut ws.#sm.cache,
                        cn::Some(&mut ws.#logits.grad_output),
                        &mut cn::NoParams,
                    );
                },
            )
        }
        None => (
            quote!(output.copy_from(&ws.#logits.output);),
            quote!(ws.#logits.grad_output.copy_from(grad_output);),
        ),
    };
    let params = named_fields(param_layers(net));
    let buffers = named_fields(buffer_layers(net));
    quote! {
        impl cn::Layer for #name {
            type Input = #input_ty;
            type Output = #output_ty;
            type Grads = #grads;
            type Cache = #workspace;
            const PARAMS: usize = <Self as cn::Network>::TOTALS.params;
            const BUFFERS: usize = <Self as cn::Network>::TOTALS.buffers;
            const MULS: usize = <Self as cn::Network>::TOTALS.muls;
            const SCRATCH: usize = <Self as cn::Network>::TOTALS.scratch;

            fn forward(
                &self,
                input: &cn::Batch<#input_ty>,
                output: &mut cn::Batch<#output_ty>,
                ws: &mut #workspace,
            ) {
                output.copy_from(Self::infer(self, input, ws));
            }

            fn forward_train(
                &mut self,
                input: &cn::Batch<#input_ty>,
                output: &mut cn::Batch<#output_ty>,
                ws: &mut #workspace,
            ) {
                cn::on_pool::<Self, _>(input.len(), || self.train_layers(input, ws));
                #forward_train_tail
            }

            fn backward(
                &self,
                input: &cn::Batch<#input_ty>,
                _output: &cn::Batch<#output_ty>,
                grad_output: &cn::Batch<#output_ty>,
                ws: &mut #workspace,
                grad_input: cn::Option<&mut cn::Batch<#input_ty>>,
                grads: &mut #grads,
            ) {
                #backward_head
                let pass = || self.backward_layers(input, ws, grad_input, grads);
                cn::on_pool::<Self, _>(input.len(), pass);
            }

            cn::network_params!(#grads { #params } buffers { #buffers });
        }
    }
}

/// The rows of the layer table for `steps`: a layer's row, or a block's layers (named
/// `res1.conv1`), its shortcut (`res1.shortcut`) and its addition (`res1`).
fn layer_rows(net: &Network, steps: &[Step]) -> Vec<TokenStream> {
    let layer_row = |layer: &Layer| {
        let (ty, name, spec) = (layer_type(layer), &layer.name, &layer.spec);
        quote!(cn::LayerInfo::of::<#ty>(#name, #spec))
    };
    let mut rows = Vec::new();
    for step in steps {
        match step {
            Step::Layer(index) => rows.push(layer_row(&net.layers[*index])),
            Step::Residual(block) => {
                rows.extend(layer_rows(net, &block.body));
                rows.extend(block.shortcut.map(|index| layer_row(&net.layers[index])));
                let (name, output) = (&block.name, shape_type(block.output));
                rows.push(quote!(cn::LayerInfo::addition::<#output>(#name)));
            }
        }
    }
    rows
}

/// The inference graph's nodes for `steps` fed value `input` (value 0 is the network's input,
/// node `i` writes value `i + 1`), appended to `nodes`; returns the value the steps produce.
/// A layer's node reads its kind from the layer itself (`Layer::kind`), so the attributes it
/// keeps at run time (batch normalisation's epsilon) are current, and a user's layer says what
/// it is.
fn graph_nodes(net: &Network, steps: &[Step], input: usize, nodes: &mut Vec<TokenStream>) -> usize {
    let push_layer = |nodes: &mut Vec<TokenStream>, layer: &Layer, input: usize| {
        let (name, field) = (&layer.name, &layer.field);
        nodes.push(quote!(cn::Node::of(#name, &self.#field, &[#input])));
        nodes.len()
    };
    let mut current = input;
    for step in steps {
        current = match step {
            Step::Layer(index) => push_layer(nodes, &net.layers[*index], current),
            Step::Residual(block) => {
                let body = graph_nodes(net, &block.body, current, nodes);
                let skip = match block.shortcut {
                    Some(index) => push_layer(nodes, &net.layers[index], current),
                    None => current,
                };
                let (name, output) = (&block.name, shape_type(block.output));
                nodes.push(quote!(cn::Node::addition::<#output>(#name, &[#body, #skip])));
                nodes.len()
            }
        };
    }
    current
}

/// The `Network` impl: the layer and plan tables, the constructor, inference, the logits path.
fn network_impl(names: &Names) -> TokenStream {
    let Names {
        net,
        plan,
        infer_slots,
        workspace,
        grads,
        input_ty,
        output_ty,
        ..
    } = names;
    let name = &net.name;
    let name_str = name.to_string();
    let layer_rows = layer_rows(net, &net.steps);
    let mut graph = Vec::new();
    graph_nodes(net, &net.steps, 0, &mut graph);
    let head = match plan.head.map(|layer| &layer.kind) {
        Some(LayerKind::Softmax) => quote!(Softmax),
        Some(_) => quote!(Sigmoid),
        None => quote!(Linear),
    };
    let op_infos = plan
        .infer
        .ops
        .iter()
        .map(|op| op_info(&plan.infer, infer_slots, op));
    let (visited_fields, visited_names): (Vec<_>, Vec<_>) =
        plan.trained_states().into_iter().unzip();
    let training_values = plan.training_values();
    let logits = names.logits();
    quote! {
        impl cn::Network for #name {
            const NAME: &'static str = #name_str;
            const LAYERS: &'static [cn::LayerInfo] = &[ #( #layer_rows, )* ];
            type Head = cn::head::#head;
            const PLAN: &'static [cn::OpInfo] = &[ #( #op_infos, )* ];
            const TRAINING_VALUES: usize = #training_values;

            fn new(seed: u64) -> Self {
                Self::new(seed)
            }

            fn infer<'w>(&self, input: &cn::Batch<#input_ty>, ws: &'w mut #workspace) -> &'w cn::Batch<#output_ty> {
                Self::infer(self, input, ws)
            }

            fn forward_logits<'w>(
                &mut self,
                input: &cn::Batch<#input_ty>,
                ws: &'w mut #workspace,
            ) -> &'w cn::Batch<#output_ty> {
                cn::on_pool::<Self, _>(input.len(), || self.train_layers(input, ws));
                &ws.#logits.output
            }

            fn graph(&self) -> ::std::vec::Vec<cn::Node> {
                ::std::vec::Vec::from([ #( #graph ),* ])
            }

            fn visit_activations(
                ws: &#workspace,
                visit: &mut cn::ActivationVisitor<'_>,
            ) {
                #( cn::visit_activations(#visited_names, &ws.#visited_fields, visit); )*
            }

            fn backward_logits(
                &self,
                input: &cn::Batch<#input_ty>,
                grad_logits: &cn::Batch<#output_ty>,
                ws: &mut #workspace,
                grad_input: cn::Option<&mut cn::Batch<#input_ty>>,
                grads: &mut #grads,
            ) {
                ws.#logits.grad_output.copy_from(grad_logits);
                let pass = || self.backward_layers(input, ws, grad_input, grads);
                cn::on_pool::<Self, _>(input.len(), pass);
            }
        }
    }
}
