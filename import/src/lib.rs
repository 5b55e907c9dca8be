//! Turns an ONNX model into a constnet network: the `network!` layer list that computes what
//! the model computes, and its weights in constnet's layouts, named as `network!` names them.
//!
//! ```text
//! cargo run -p constnet-import -- model.onnx --name Net --out src/net
//! ```
//! writes `src/net/net.rs` (one `network!` defining `pub Net<...>`) and `src/net/net.safetensors`
//! (its weights, for `constnet::weights::load`). The same translation runs at compile time in
//! `constnet::onnx_network!`.
//!
//! The model may take NCHW input (as PyTorch exports) or NHWC (as tf2onnx does); the network
//! always takes constnet's NHWC, and a model's image output comes back NHWC. What is read:
//! `Conv` (with `group` equal to the channels for depthwise), `Gemm`, `MatMul` + `Add`, `Relu`,
//! `LeakyRelu`, `Sigmoid`, `Tanh`, `Gelu`, `x · Sigmoid(x)`, `MaxPool`, `AveragePool`,
//! `GlobalAveragePool`, `GlobalMaxPool`, `BatchNormalization` (its epsilon kept), `Mul` and
//! `Add` of one constant per channel (batch normalisation as tf2onnx writes it), `Flatten`,
//! `Reshape` to a vector (its shape a constant or computed from shapes, as tf2onnx writes
//! Keras's `Flatten`), `Add` ending a residual block (its shortcut the identity, or a 1x1
//! convolution with an optional batch normalisation, folded into it), `Softmax`, `Dropout`,
//! `Identity`, nearest `Resize` by a whole factor, and `Transpose` between NCHW and NHWC.
//! Anything else is refused with an [`ImportError`] naming the node, its operator and why: an
//! import never yields a network that computes something else.
#![warn(missing_docs)]

mod attributes;
mod error;
mod model;
mod shapes;
mod structure;
mod translate;

use std::path::Path;

use constnet_catalogue::names::{self, Numbering};

pub use error::ImportError;
pub use model::MIN_OPSET;
pub use translate::{Item, Layer};

/// Most bytes of a model file read (a file claiming more is refused before it is read whole).
pub const MAX_MODEL_BYTES: u64 = 1 << 31;

/// An imported model: the network's input shape and layers, with their weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The input's dimensions in constnet's order: `[h, w, c]` or `[n]`.
    pub input: Vec<usize>,
    /// The layer list.
    pub items: Vec<Item>,
}

/// Imports the model in the ONNX file at `path`.
///
/// # Errors
/// [`ImportError::Io`] if the file cannot be read, and the errors of [`import_bytes`].
pub fn import_file(path: impl AsRef<Path>) -> Result<Imported, ImportError> {
    let path = path.as_ref();
    let io = |source| ImportError::Io {
        path: path.into(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_MODEL_BYTES {
        return Err(ImportError::Model(format!(
            "file {} holds {len} bytes, more than the {MAX_MODEL_BYTES} import reads",
            path.display()
        )));
    }
    import_bytes(&std::fs::read(path).map_err(io)?)
}

/// Imports the model in the bytes of an ONNX file.
///
/// # Errors
/// [`ImportError::Decode`] if they are not an ONNX model, [`ImportError::Model`] if the model's
/// graph is not a network's (several inputs, an opset older than [`MIN_OPSET`], nodes out of
/// order), [`ImportError::Node`] for a node `network!` has no equivalent of, and
/// [`ImportError::Tensor`] for a weight that does not hold what its dimensions say.
pub fn import_bytes(bytes: &[u8]) -> Result<Imported, ImportError> {
    let model = model::Model::read(bytes)?;
    let steps = structure::steps(&model)?;
    let translation = translate::translate(&model, &steps)?;
    Ok(Imported {
        input: translation.input,
        items: translation.items,
    })
}

impl Imported {
    /// The layer list as `network!` reads it, one item per line after `input(...)`, each
    /// line indented by `indent`.
    pub fn layer_list(&self, indent: &str) -> String {
        let dims: Vec<String> = self.input.iter().map(usize::to_string).collect();
        let mut lines = vec![format!("input({})", dims.join(", "))];
        list_lines(&self.items, &mut lines);
        lines.join(&format!("\n{indent}"))
    }

    /// The Rust source of a file defining the network `pub {name}`, imported from `source`.
    ///
    /// # Errors
    /// [`ImportError::Name`] if `name` is not a type name.
    pub fn network_source(&self, name: &str, source: &str) -> Result<String, ImportError> {
        check_name(name)?;
        let indent = " ".repeat(8 + name.len());
        Ok(format!(
            "// Written by constnet-import from `{source}`; its weights are in the safetensors\n\
             // file beside it.\n\
             constnet::network! {{\n    \
             /// Imported from `{source}`.\n    \
             pub {name}<{}>\n\
             }}\n",
            self.layer_list(&indent)
        ))
    }

    /// The weights, each named as `network!` names the layer's tensor (`conv1.weight`,
    /// `res2.shortcut.bias`), in constnet's layouts.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut tensors = Vec::new();
        visit_named(&self.items, &mut Numbering::top(), &mut |name, layer| {
            for (tensor, dims, values) in &layer.tensors {
                tensors.push((format!("{name}.{tensor}"), dims.clone(), values.clone()));
            }
        });
        tensors
    }

    /// Every layer with the name `network!` gives it (`conv1`, `res1.conv2`, `res1.shortcut`),
    /// in the list's order (a block's projection after its layers).
    pub fn layers(&self) -> Vec<(String, &Layer)> {
        let mut layers = Vec::new();
        visit_named(&self.items, &mut Numbering::top(), &mut |name, layer| {
            layers.push((name, layer))
        });
        layers
    }

    /// The weights as the bytes of a safetensors file, which `constnet::weights::from_bytes`
    /// (or `load`, from a file) reads into the network.
    ///
    /// # Errors
    /// [`ImportError::Tensor`] if the serialiser refuses a tensor.
    pub fn safetensors(&self) -> Result<Vec<u8>, ImportError> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors()
            .into_iter()
            .map(|(name, dims, values)| {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, dims, bytes)
            })
            .collect();
        let mut views = Vec::with_capacity(tensors.len());
        for (name, dims, bytes) in &tensors {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims.clone(), bytes)
                    .map_err(|e| ImportError::Tensor {
                        tensor: name.clone(),
                        problem: e.to_string(),
                    })?;
            views.push((name.as_str(), view));
        }
        safetensors::serialize(views, None).map_err(|e| ImportError::Tensor {
            tensor: "(all)".into(),
            problem: e.to_string(),
        })
    }

    /// Writes `dir/{file}.rs` and `dir/{file}.safetensors`, `file` being `name` in snake case,
    /// creating `dir` if needed. Returns the two paths.
    ///
    /// # Errors
    /// [`ImportError::Name`] for a name that is not a type name, [`ImportError::Io`] if a file
    /// cannot be written.
    pub fn write(
        &self,
        dir: impl AsRef<Path>,
        name: &str,
        source: &str,
    ) -> Result<[std::path::PathBuf; 2], ImportError> {
        let dir = dir.as_ref();
        let file = names::snake_case(name);
        let rust = dir.join(format!("{file}.rs"));
        let weights = dir.join(format!("{file}.safetensors"));
        let source = self.network_source(name, source)?;
        let bytes = self.safetensors()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImportError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::write(&rust, source).map_err(io(&rust))?;
        std::fs::write(&weights, bytes).map_err(io(&weights))?;
        Ok([rust, weights])
    }
}

fn list_lines(items: &[Item], lines: &mut Vec<String>) {
    for item in items {
        match item {
            Item::Layer(layer) => lines.push(layer.spec.clone()),
            Item::Block { body, projection } => {
                let mut inner = Vec::new();
                list_lines(body, &mut inner);
                let shortcut = if projection.is_some() {
                    ", shortcut = project"
                } else {
                    ""
                };
                lines.push(format!("residual({}{shortcut})", inner.join(" ")));
            }
        }
    }
}

/// Calls `visit` with each layer and its name, as `network!` names it ([`names`]).
fn visit_named<'a>(
    items: &'a [Item],
    names: &mut Numbering,
    visit: &mut impl FnMut(String, &'a Layer),
) {
    for item in items {
        match item {
            Item::Layer(layer) => visit(names.next(layer.name), layer),
            Item::Block { body, projection } => {
                let block = names.next(names::BLOCK);
                visit_named(body, &mut Numbering::inside(&block), visit);
                if let Some(projection) = projection {
                    visit(names::shortcut(&block), projection);
                }
            }
        }
    }
}

/// A network name must be a Rust type name: a letter, then letters, digits or `_`.
fn check_name(name: &str) -> Result<(), ImportError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_uppercase());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(ImportError::Name(name.into()))
    }
}
