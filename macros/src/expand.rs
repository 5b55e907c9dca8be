//! Code generation: a checked network becomes a struct of runtime layers with straight-line
//! passes. Everything numeric happens in the runtime; this module only writes the calls.
//!
//! For `pub MnistCnn<...>` it writes:
//! - `pub struct MnistCnn`, one public field per layer (`conv1`, `relu1`, ..., `dense2`);
//! - `pub struct MnistCnnWorkspace`, one `LayerState` (output, cache, output gradient) per layer;
//! - `pub struct MnistCnnGrads`, one gradient field per layer with parameters;
//! - `impl Layer for MnistCnn` (the whole function, final softmax included) and
//!   `impl Network for MnistCnn` (logits path, layer table, constructor).

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::valid::{Kind, Layer, Network, Shape};

fn shape_type(shape: Shape) -> TokenStream {
    match shape {
        Shape::Flat(n) => {
            let n = Literal::usize_unsuffixed(n);
            quote!(::constnet::Flat<#n>)
        }
        Shape::Image(h, w, c) => {
            let (h, w, c) = (
                Literal::usize_unsuffixed(h),
                Literal::usize_unsuffixed(w),
                Literal::usize_unsuffixed(c),
            );
            quote!(::constnet::Hwc<#h, #w, #c>)
        }
    }
}

fn layer_type(layer: &Layer) -> TokenStream {
    let input = shape_type(layer.input);
    let output = shape_type(layer.output);
    let number = Literal::usize_unsuffixed;
    match &layer.kind {
        Kind::Conv {
            kernel,
            stride,
            same,
            ..
        } => {
            let (kernel, stride) = (number(*kernel), number(*stride));
            let padding = if *same { quote!(Same) } else { quote!(Valid) };
            quote!(::constnet::layers::Conv2d<#input, #output, #kernel, #stride, ::constnet::layers::#padding>)
        }
        Kind::Pool { max, size, stride } => {
            let (size, stride) = (number(*size), number(*stride));
            let pool = if *max {
                quote!(MaxPool2d)
            } else {
                quote!(AvgPool2d)
            };
            quote!(::constnet::layers::#pool<#input, #output, #size, #stride>)
        }
        Kind::Dense { units } => {
            let (inputs, units) = (number(layer.input.len()), number(*units));
            quote!(::constnet::layers::Dense<#inputs, #units>)
        }
        Kind::Flatten => {
            let len = number(layer.output.len());
            quote!(::constnet::layers::Flatten<#input, #len>)
        }
        Kind::Relu => quote!(::constnet::layers::Relu<#input>),
        Kind::LeakyRelu { .. } => quote!(::constnet::layers::LeakyRelu<#input>),
        Kind::Sigmoid => quote!(::constnet::layers::Sigmoid<#input>),
        Kind::Tanh => quote!(::constnet::layers::Tanh<#input>),
        Kind::Softmax => quote!(::constnet::layers::Softmax<#input>),
        Kind::Dropout { .. } => quote!(::constnet::layers::Dropout<#input>),
        Kind::BatchNorm => quote!(::constnet::layers::BatchNorm<#input>),
    }
}

/// How the generated constructor builds a layer (`rng` is the network's seeded generator).
fn constructor(layer: &Layer) -> TokenStream {
    let ty = layer_type(layer);
    match &layer.kind {
        Kind::Conv { .. } | Kind::Dense { .. } => quote!(<#ty>::new(&mut rng)),
        Kind::LeakyRelu { alpha } => quote!(<#ty>::leaky(#alpha)),
        Kind::Dropout { rate } => quote!(<#ty>::new(#rate, ::constnet::init::next_seed(&mut rng))),
        _ => quote!(<#ty>::new()),
    }
}

fn needs_rng(layer: &Layer) -> bool {
    matches!(
        layer.kind,
        Kind::Conv { .. } | Kind::Dense { .. } | Kind::Dropout { .. }
    )
}

/// `visit` when `used`, `_visit` otherwise, so the generated code has no unused variables.
fn param_name(name: &str, used: bool) -> proc_macro2::Ident {
    if used {
        format_ident!("{name}")
    } else {
        format_ident!("_{name}")
    }
}

pub fn expand(net: &Network) -> TokenStream {
    let Network {
        attrs, vis, name, ..
    } = net;
    let workspace = format_ident!("{name}Workspace");
    let grads = format_ident!("{name}Grads");
    let input_ty = shape_type(net.input);
    let output_ty = shape_type(net.layers.last().expect("validated: not empty").output);

    let fields: Vec<_> = net.layers.iter().map(|l| &l.field).collect();
    let types: Vec<_> = net.layers.iter().map(layer_type).collect();
    let field_docs: Vec<String> = net
        .layers
        .iter()
        .map(|l| format!("`{}`: {} → {}", l.spec, l.input, l.output))
        .collect();
    let constructors: Vec<_> = net.layers.iter().map(constructor).collect();
    let seed_rng = if net.layers.iter().any(needs_rng) {
        quote!(let mut rng = ::constnet::init::seeded_rng(seed);)
    } else {
        quote!(let _ = seed;)
    };

    // The layers trained up to the logits: all but a final softmax.
    let body_len = net.layers.len() - usize::from(net.ends_with_softmax());
    let body = &net.layers[..body_len];
    let last = &body
        .last()
        .expect("validated: a layer before softmax")
        .field;
    let source = |i: usize| -> TokenStream {
        match i {
            0 => quote!(input),
            _ => {
                let previous = &net.layers[i - 1].field;
                quote!(&workspace.#previous.output)
            }
        }
    };
    let sources: Vec<_> = (0..net.layers.len()).map(source).collect();
    let body_fields = &fields[..body_len];
    let body_sources = &sources[..body_len];

    let backward_calls = body.iter().enumerate().rev().map(|(i, layer)| {
        let field = &layer.field;
        let src = &sources[i];
        let grad_input = match i {
            0 => quote!(grad_input),
            _ => {
                let previous = &net.layers[i - 1].field;
                quote!(Some(&mut workspace.#previous.grad_output))
            }
        };
        let layer_grads = if layer.kind.has_params() {
            quote!(&mut grads.#field)
        } else {
            quote!(&mut ::constnet::layers::NoParams)
        };
        quote! {
            ::constnet::layers::Layer::backward(
                &self.#field,
                #src,
                &workspace.#field.output,
                &workspace.#field.grad_output,
                &mut workspace.#field.cache,
                #grad_input,
                #layer_grads,
            );
        }
    });

    let (forward_train_tail, backward_head) = match net.layers.last() {
        Some(softmax) if net.ends_with_softmax() => {
            let sm = &softmax.field;
            (
                quote! {
                    ::constnet::layers::Layer::forward_train(&mut self.#sm, &workspace.#last.output, &mut workspace.#sm.output, &mut workspace.#sm.cache);
                    output.copy_from(&workspace.#sm.output);
                },
                quote! {
                    ::constnet::layers::Layer::backward(
                        &self.#sm,
                        &workspace.#last.output,
                        &workspace.#sm.output,
                        grad_output,
                        &mut workspace.#sm.cache,
                        Some(&mut workspace.#last.grad_output),
                        &mut ::constnet::layers::NoParams,
                    );
                },
            )
        }
        _ => (
            quote!(output.copy_from(&workspace.#last.output);),
            quote!(workspace.#last.grad_output.copy_from(grad_output);),
        ),
    };
    let last_output = &net.layers.last().expect("not empty").field;

    let with_params: Vec<&Layer> = net.layers.iter().filter(|l| l.kind.has_params()).collect();
    let param_fields: Vec<_> = with_params.iter().map(|l| &l.field).collect();
    let param_names: Vec<String> = param_fields.iter().map(|f| f.to_string()).collect();
    let param_types: Vec<_> = with_params.iter().map(|l| layer_type(l)).collect();
    let with_buffers: Vec<&Layer> = net
        .layers
        .iter()
        .filter(|l| matches!(l.kind, Kind::BatchNorm))
        .collect();
    let buffer_fields: Vec<_> = with_buffers.iter().map(|l| &l.field).collect();
    let buffer_names: Vec<String> = buffer_fields.iter().map(|f| f.to_string()).collect();
    let visit = param_name("visit", !param_fields.is_empty());
    let update = param_name("update", !param_fields.is_empty());
    let other = param_name("other", !param_fields.is_empty());
    let grads_arg = param_name("grads", !param_fields.is_empty());
    let buffer_visit = param_name("visit", !buffer_fields.is_empty());

    let name_str = name.to_string();
    let specs: Vec<&str> = net.layers.iter().map(|l| l.spec.as_str()).collect();
    let field_names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let output_types: Vec<_> = net.layers.iter().map(|l| shape_type(l.output)).collect();
    let ends_with_softmax = net.ends_with_softmax();
    let struct_doc = format!(
        "\n\nGenerated by `network!` from {} layers; `{name}::summary()` prints the table.",
        net.layers.len()
    );
    let workspace_doc = format!(
        "What [`{name}`] keeps between passes: every layer's output, training cache and output \
         gradient. Reuse one across calls and nothing is allocated per sample."
    );
    let grads_doc = format!(
        "Gradients of [`{name}`]'s parameters, one field per layer that has any, named as the \
         layer."
    );

    quote! {
        #(#attrs)*
        #[doc = #struct_doc]
        #vis struct #name {
            #(
                #[doc = #field_docs]
                pub #fields: #types,
            )*
        }

        #[doc = #workspace_doc]
        #[derive(Default)]
        #vis struct #workspace {
            #(
                #[doc = #field_docs]
                pub #fields: ::constnet::network::LayerState<#types>,
            )*
        }

        #[doc = #grads_doc]
        #[derive(Clone, Debug)]
        #vis struct #grads {
            #(
                #[doc = "Gradients of this layer's parameters."]
                pub #param_fields: <#param_types as ::constnet::layers::Layer>::Grads,
            )*
        }

        impl ::constnet::layers::ParamSet for #grads {
            fn zeros_like(&self) -> Self {
                Self { #( #param_fields: ::constnet::layers::ParamSet::zeros_like(&self.#param_fields), )* }
            }
            fn visit(&self, #visit: &mut ::constnet::layers::TensorVisitor<'_>) {
                #( ::constnet::layers::visit_prefixed(#param_names, &self.#param_fields, visit); )*
            }
            fn visit_mut(&mut self, #visit: &mut ::constnet::layers::TensorVisitorMut<'_>) {
                #( ::constnet::layers::visit_mut_prefixed(#param_names, &mut self.#param_fields, visit); )*
            }
            fn zip_mut(&mut self, #other: &Self, #visit: &mut ::constnet::layers::UpdateVisitor<'_>) {
                #( ::constnet::layers::zip_mut_prefixed(#param_names, &mut self.#param_fields, &other.#param_fields, visit); )*
            }
        }

        impl #name {
            /// Trainable parameters, as Keras's summary counts them.
            pub const PARAMS: usize = <Self as ::constnet::layers::Layer>::PARAMS;

            /// The layer table, as Keras's `model.summary()` prints it.
            pub fn summary() -> ::std::string::String {
                <Self as ::constnet::network::Network>::summary()
            }

            /// Training forward pass through every layer up to the logits.
            fn train_layers(&mut self, input: &::constnet::Batch<#input_ty>, workspace: &mut #workspace) {
                #( ::constnet::layers::Layer::forward_train(&mut self.#body_fields, #body_sources, &mut workspace.#body_fields.output, &mut workspace.#body_fields.cache); )*
            }

            /// Backward pass from the gradient in `workspace.<last layer>.grad_output`, last layer first.
            fn backward_layers(
                &self,
                input: &::constnet::Batch<#input_ty>,
                workspace: &mut #workspace,
                grad_input: ::std::option::Option<&mut ::constnet::Batch<#input_ty>>,
                #grads_arg: &mut #grads,
            ) {
                #( #backward_calls )*
            }
        }

        impl ::std::clone::Clone for #name {
            fn clone(&self) -> Self {
                Self { #( #fields: ::std::clone::Clone::clone(&self.#fields), )* }
            }
        }

        impl ::constnet::layers::Layer for #name {
            type Input = #input_ty;
            type Output = #output_ty;
            type Grads = #grads;
            type Cache = #workspace;
            const PARAMS: usize = 0 #( + <#types as ::constnet::layers::Layer>::PARAMS )*;
            const BUFFERS: usize = 0 #( + <#types as ::constnet::layers::Layer>::BUFFERS )*;

            fn forward(
                &self,
                input: &::constnet::Batch<#input_ty>,
                output: &mut ::constnet::Batch<#output_ty>,
                workspace: &mut #workspace,
            ) {
                output.copy_from(::constnet::network::Network::infer(self, input, workspace));
            }

            fn forward_train(
                &mut self,
                input: &::constnet::Batch<#input_ty>,
                output: &mut ::constnet::Batch<#output_ty>,
                workspace: &mut #workspace,
            ) {
                self.train_layers(input, workspace);
                #forward_train_tail
            }

            fn backward(
                &self,
                input: &::constnet::Batch<#input_ty>,
                _output: &::constnet::Batch<#output_ty>,
                grad_output: &::constnet::Batch<#output_ty>,
                workspace: &mut #workspace,
                grad_input: ::std::option::Option<&mut ::constnet::Batch<#input_ty>>,
                grads: &mut #grads,
            ) {
                #backward_head
                self.backward_layers(input, workspace, grad_input, grads);
            }

            fn new_grads(&self) -> #grads {
                #grads { #( #param_fields: ::constnet::layers::Layer::new_grads(&self.#param_fields), )* }
            }

            fn visit_params(&self, #visit: &mut ::constnet::layers::TensorVisitor<'_>) {
                #( ::constnet::layers::visit_layer_params(#param_names, &self.#param_fields, visit); )*
            }

            fn visit_params_mut(&mut self, #visit: &mut ::constnet::layers::TensorVisitorMut<'_>) {
                #( ::constnet::layers::visit_layer_params_mut(#param_names, &mut self.#param_fields, visit); )*
            }

            fn update_params(&mut self, #grads_arg: &#grads, #update: &mut ::constnet::layers::UpdateVisitor<'_>) {
                #( ::constnet::layers::update_layer_params(#param_names, &mut self.#param_fields, &grads.#param_fields, update); )*
            }

            fn visit_buffers(&self, #buffer_visit: &mut ::constnet::layers::TensorVisitor<'_>) {
                #( ::constnet::layers::visit_layer_buffers(#buffer_names, &self.#buffer_fields, visit); )*
            }

            fn visit_buffers_mut(&mut self, #buffer_visit: &mut ::constnet::layers::TensorVisitorMut<'_>) {
                #( ::constnet::layers::visit_layer_buffers_mut(#buffer_names, &mut self.#buffer_fields, visit); )*
            }
        }

        impl ::constnet::network::Network for #name {
            const NAME: &'static str = #name_str;
            const LAYERS: &'static [::constnet::network::LayerInfo] = &[
                #(
                    ::constnet::network::LayerInfo {
                        name: #field_names,
                        spec: #specs,
                        output: <#output_types as ::constnet::Shape>::DIMS,
                        params: <#types as ::constnet::layers::Layer>::PARAMS,
                        buffers: <#types as ::constnet::layers::Layer>::BUFFERS,
                    },
                )*
            ];
            const ENDS_WITH_SOFTMAX: bool = #ends_with_softmax;

            fn new(seed: u64) -> Self {
                #seed_rng
                Self { #( #fields: #constructors, )* }
            }

            fn infer<'w>(
                &self,
                input: &::constnet::Batch<#input_ty>,
                workspace: &'w mut #workspace,
            ) -> &'w ::constnet::Batch<#output_ty> {
                #( ::constnet::layers::Layer::forward(&self.#fields, #sources, &mut workspace.#fields.output, &mut workspace.#fields.cache); )*
                &workspace.#last_output.output
            }

            fn forward_logits<'w>(
                &mut self,
                input: &::constnet::Batch<#input_ty>,
                workspace: &'w mut #workspace,
            ) -> &'w ::constnet::Batch<#output_ty> {
                self.train_layers(input, workspace);
                &workspace.#last.output
            }

            fn visit_activations(
                workspace: &#workspace,
                visit: &mut ::constnet::network::ActivationVisitor<'_>,
            ) {
                #( visit(#field_names, workspace.#fields.output.as_slice(), workspace.#fields.grad_output.as_slice()); )*
            }

            fn backward_logits(
                &self,
                input: &::constnet::Batch<#input_ty>,
                grad_logits: &::constnet::Batch<#output_ty>,
                workspace: &mut #workspace,
                grad_input: ::std::option::Option<&mut ::constnet::Batch<#input_ty>>,
                grads: &mut #grads,
            ) {
                workspace.#last.grad_output.copy_from(grad_logits);
                self.backward_layers(input, workspace, grad_input, grads);
            }
        }
    }
}
