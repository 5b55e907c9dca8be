//! The `network!` procedural macro of constnet.
//!
//! `network! { pub MnistCnn<input(28, 28, 1) conv(32, 3) relu ... dense(10) softmax> }` parses
//! the layer list (`ast`), checks every argument and infers every shape at expansion time
//! (`valid`), compiles the network into ops after fusion and the buffers they use (`plan`),
//! and writes a statically shaped network of `constnet` runtime layers with straight-line
//! passes (`expand`). A mistake becomes a `compile_error!` on the layer (or
//! argument) at fault, saying what shape reached it.

#![warn(missing_docs)]

mod ast;
mod expand;
#[cfg(feature = "onnx")]
mod onnx;
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

/// Defines the network an ONNX model computes, read when the crate is compiled:
/// `onnx_network!("models/net.onnx", pub Net)`, the path relative to the crate's `Cargo.toml`.
/// The network is what `constnet-import` writes for the model, checked as `network!` checks a
/// layer list; load the model's weights with `constnet::import`. A model `network!` cannot
/// express is a compile error naming the node at fault.
#[cfg(feature = "onnx")]
#[proc_macro]
pub fn onnx_network(input: TokenStream) -> TokenStream {
    let def = syn::parse_macro_input!(input as onnx::OnnxNetworkDef);
    match onnx::expand(def) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// `docs/expanded-mnist-cnn.rs` is what `network!` writes for the README's network, so a
    /// reader can see what the plan produced. Regenerate it with
    /// `CONSTNET_BLESS=1 cargo test -p constnet-macros`.
    #[test]
    fn the_documented_expansion_is_current() {
        let tokens = quote::quote! {
            pub MnistCnn<input(28, 28, 1) conv(32, 3) relu conv(64, 3) relu maxpool(2) dropout(0.25)
                         flatten dense(128) relu dropout(0.5) dense(10) softmax>
        };
        let def: crate::ast::NetworkDef = syn::parse2(tokens).expect("the README network parses");
        let network = crate::valid::validate(def).expect("the README network is valid");
        let file = syn::parse2(crate::expand::expand(&network)).expect("the expansion is Rust");
        let expanded = format!(
            "// What `network!` writes for the README's network (`cargo test -p constnet-macros`\n\
             // checks it is current; `CONSTNET_BLESS=1` regenerates it).\n\n{}",
            prettyplease::unparse(&file)
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/expanded-mnist-cnn.rs");
        if std::env::var_os("CONSTNET_BLESS").is_some() {
            std::fs::write(&path, &expanded).expect("docs/ is writable");
        }
        let documented = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            documented == expanded,
            "{} is not what network! writes now: regenerate it with \
             `CONSTNET_BLESS=1 cargo test -p constnet-macros`",
            path.display()
        );
    }
}
