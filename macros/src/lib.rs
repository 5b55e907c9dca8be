//! The `network!` procedural macro of constnet.
//!
//! `network! { pub MnistCnn<input(28, 28, 1) conv(32, 3) relu ... dense(10) softmax> }` parses
//! the layer list ([`ast`]), checks every argument and infers every shape at expansion time
//! ([`valid`]), compiles the network into ops after fusion and the buffers they use ([`plan`]),
//! and writes a statically shaped network of `constnet` runtime layers with straight-line
//! passes ([`expand`]). A mistake becomes a `compile_error!` on the layer (or
//! argument) at fault, saying what shape reached it.

mod ast;
mod expand;
mod plan;
mod valid;

use proc_macro::TokenStream;

/// Defines a network from its layer list; see the `constnet` crate's documentation for the
/// grammar and what is generated.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    let def = syn::parse_macro_input!(input as ast::NetworkDef);
    match valid::validate(def) {
        Ok(network) => expand::expand(&network).into(),
        Err(error) => error.to_compile_error().into(),
    }
}
