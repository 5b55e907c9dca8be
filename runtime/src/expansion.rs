//! Every item `network!`'s expansion names, in one module, so the generated code refers to
//! them by one short path (`cn::Layer::forward`, `cn::Batch<cn::Input>`): the traits it
//! implements, the types of its tables and states, the fused ops and passes it calls, and the
//! layer types. Not an API of its own: what it holds follows what the macro writes.

pub use crate::catalogue::LayerKind;
pub use crate::graph::Node;
pub use crate::init::{next_seed, seeded_rng};
pub use crate::kernels::elementwise::ActivationKind;
pub use crate::layers::*;
pub use crate::loss::head;
pub use crate::network::{
    ActivationVisitor, LayerInfo, LayerState, LayerTotals, Network, visit_activations,
};
pub use crate::plan::{InferenceBuffers, InferenceSlot, OpInfo, on_pool};
pub use crate::shape::{Flat, Hwc, Shape};
pub use crate::tensor::Batch;
pub use crate::{__network_grads as network_grads, __network_param_methods as network_params};
pub use std::option::Option::{self, None, Some};

/// A network's gradients struct `$grads` and its [`ParamSet`] impl: field `$field` holds the
/// gradients of the parameters of `$net`'s layer named `$name`, of type `$layer`, and each
/// tensor is named `$name.<tensor>`.
#[doc(hidden)]
#[macro_export]
macro_rules! __network_grads {
    ($vis:vis $grads:ident of $net:ident { $($field:ident: $layer:ty = $name:literal),* $(,)? }) => {
        #[doc = concat!(
            "Gradients of [`", stringify!($net), "`]'s parameters, one field per layer that has ",
            "any, named as the layer."
        )]
        #[derive(Clone, Debug)]
        $vis struct $grads {
            $(
                #[doc = concat!("Gradients of `", $name, "`'s parameters.")]
                pub $field: <$layer as $crate::layers::Layer>::Grads,
            )*
        }

        impl $crate::layers::ParamSet for $grads {
            fn zeros_like(&self) -> Self {
                Self { $($field: $crate::layers::ParamSet::zeros_like(&self.$field),)* }
            }
            fn visit(&self, _visit: &mut $crate::layers::TensorVisitor<'_>) {
                $($crate::layers::visit_prefixed($name, &self.$field, _visit);)*
            }
            fn visit_mut(&mut self, _visit: &mut $crate::layers::TensorVisitorMut<'_>) {
                $($crate::layers::visit_mut_prefixed($name, &mut self.$field, _visit);)*
            }
            fn zip_mut(
                &mut self,
                _other: &Self,
                _visit: &mut $crate::layers::UpdateVisitor<'_>,
            ) {
                $($crate::layers::zip_mut_prefixed(
                    $name, &mut self.$field, &_other.$field, _visit
                );)*
            }
        }
    };
}

/// The parameter and buffer methods of a network's [`Layer`] impl: the layer in field `$field`,
/// named `$name`, has parameters (their gradients in the same field of `$grads`); the one in
/// `$buffer_field`, named `$buffer_name`, has buffers. Each tensor is named `$name.<tensor>`.
#[doc(hidden)]
#[macro_export]
macro_rules! __network_param_methods {
    (
        $grads:ident { $($field:ident: $name:literal),* $(,)? }
        buffers { $($buffer_field:ident: $buffer_name:literal),* $(,)? }
    ) => {
        fn new_grads(&self) -> $grads {
            $grads { $($field: $crate::layers::Layer::new_grads(&self.$field),)* }
        }
        fn visit_params(&self, _visit: &mut $crate::layers::TensorVisitor<'_>) {
            $($crate::layers::visit_layer_params($name, &self.$field, _visit);)*
        }
        fn visit_params_mut(&mut self, _visit: &mut $crate::layers::TensorVisitorMut<'_>) {
            $($crate::layers::visit_layer_params_mut($name, &mut self.$field, _visit);)*
        }
        fn update_params(
            &mut self,
            _grads: &$grads,
            _update: &mut $crate::layers::UpdateVisitor<'_>,
        ) {
            $($crate::layers::update_layer_params(
                $name, &mut self.$field, &_grads.$field, _update
            );)*
        }
        fn visit_buffers(&self, _visit: &mut $crate::layers::TensorVisitor<'_>) {
            $($crate::layers::visit_layer_buffers($buffer_name, &self.$buffer_field, _visit);)*
        }
        fn visit_buffers_mut(&mut self, _visit: &mut $crate::layers::TensorVisitorMut<'_>) {
            $($crate::layers::visit_layer_buffers_mut(
                $buffer_name, &mut self.$buffer_field, _visit
            );)*
        }
    };
}
