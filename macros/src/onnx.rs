//! `onnx_network!("model.onnx", pub Net)`: the network an ONNX model computes, read when the
//! crate is compiled. The model's path is relative to the crate's `Cargo.toml`; the file is
//! included in the build, so the network is rebuilt when it changes. The layer list comes from
//! `constnet-import` (as its command-line tool writes it) and is then checked and expanded as
//! `network!` checks and expands a list written by hand.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, LitStr, Token, Visibility};

/// `#[attributes] "path/to/model.onnx", pub Name`.
pub struct OnnxNetworkDef {
    attrs: Vec<Attribute>,
    path: LitStr,
    vis: Visibility,
    name: Ident,
}

impl Parse for OnnxNetworkDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let path: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the model's path: `\"models/net.onnx\", pub Net`",
            )
        })?;
        input.parse::<Token![,]>()?;
        let vis = input.parse()?;
        let name = input.parse()?;
        Ok(Self {
            attrs,
            path,
            vis,
            name,
        })
    }
}

/// The `network!` definition of the model, and the file's inclusion in the build.
pub fn expand(def: OnnxNetworkDef) -> syn::Result<TokenStream> {
    let OnnxNetworkDef {
        attrs,
        path,
        vis,
        name,
    } = def;
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let file = std::path::Path::new(&manifest).join(path.value());
    let imported = constnet_import::import_file(&file)
        .map_err(|error| syn::Error::new_spanned(&path, format!("{}: {error}", path.value())))?;
    let list: TokenStream = imported
        .layer_list(" ")
        .parse()
        .map_err(|_| syn::Error::new_spanned(&path, "the imported layer list is not tokens"))?;
    let doc = format!("Imported from `{}`.", path.value());
    let network: crate::ast::NetworkDef = syn::parse2(quote! {
        #(#attrs)*
        #[doc = #doc]
        #vis #name<#list>
    })?;
    let network = crate::valid::validate(network)?;
    let expansion = crate::expand::expand(&network);
    let file = file.display().to_string();
    Ok(quote! {
        const _: &[u8] = include_bytes!(#file);
        #expansion
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compile error of `onnx_network!` on `path` (relative to this crate).
    fn error(path: &str) -> String {
        let def: OnnxNetworkDef = syn::parse_str(&format!("{path:?}, pub Net")).unwrap();
        expand(def).unwrap_err().to_string()
    }

    #[test]
    fn a_model_network_cannot_express_is_a_compile_error_naming_the_node() {
        let message = error("../tests/fixtures/onnx/unsupported_op.onnx");
        assert!(
            message.contains("node `lrn_4` (LRN): the operator LRN has no equivalent"),
            "{message}"
        );
        let message = error("../tests/fixtures/onnx/shape_mismatch.onnx");
        assert!(
            message.contains("has a weight for 30 inputs, but its input has 32 values"),
            "{message}"
        );
        let message = error("no/such/model.onnx");
        assert!(message.starts_with("no/such/model.onnx: "), "{message}");
    }

    #[test]
    fn an_imported_model_expands_to_a_network() {
        let def: OnnxNetworkDef =
            syn::parse_str(r#""../tests/fixtures/onnx/keras_nhwc.onnx", pub Net"#).unwrap();
        let tokens = expand(def).unwrap().to_string();
        assert!(
            tokens.contains("include_bytes"),
            "the model is part of the build"
        );
        assert!(tokens.contains("pub struct Net"), "{tokens}");
    }
}
