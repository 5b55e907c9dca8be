//! Export to ONNX (with the `onnx` feature): [`export`] writes a network's inference graph and
//! weights as an ONNX model (opset 17), which ONNX Runtime, tract, OpenVINO and others run.
//!
//! The model takes the network's own input layout: images NHWC (`[batch, h, w, c]`, the batch
//! size free), vectors `[batch, n]`. Inside, a `Transpose` turns images to the NCHW layout of
//! ONNX's `Conv` and pooling operators; convolution kernels are written OIHW, depthwise kernels
//! as grouped convolutions, and `flatten` transposes back to NHWC first, so dense layers keep
//! the row order constnet trained them with. Dropout is left out (it is the identity at
//! inference); batch normalisation uses its running statistics. A network whose output is an
//! image gives it back NHWC. A layer type of the user's (`layer(T)`) cannot be described, and
//! is refused with an error naming it.
//!
//! [`export_quantized`] writes an int8 network ([`crate::quant::Quantized`]) in the QDQ form
//! ONNX Runtime's quantizer writes.

mod quantized;

pub use quantized::{export_quantized, quantized_to_bytes};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use constnet_onnx_proto::{self as proto, Message};

use crate::catalogue::{LayerKind, OnnxOp, Padding};
use crate::graph::Node;
use crate::network::Network;
use crate::shape::Shape;

/// The ONNX operator set the exported nodes follow.
pub const OPSET: i64 = 17;

/// The ONNX IR version of opset 17.
const IR_VERSION: i64 = 8;

/// Why a network could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A layer ONNX export cannot describe.
    #[error("cannot export `{layer}` to ONNX: {reason}")]
    Unsupported {
        /// The layer's name (`layer1`).
        layer: String,
        /// Why.
        reason: String,
    },
    /// The file could not be written; nothing was left at its path.
    #[error("cannot write {file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Writes `network`'s inference graph and weights to `path` as an ONNX model, atomically (a
/// failed write leaves any earlier file in place).
///
/// ```no_run
/// # use constnet_runtime as constnet;
/// # fn run<N: constnet::network::Network>(net: &N) -> Result<(), constnet::onnx::OnnxError> {
/// constnet::onnx::export(net, std::path::Path::new("mnist.onnx"))?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`OnnxError::Unsupported`] for a layer of the user's; [`OnnxError::Io`] if the file cannot
/// be written.
pub fn export<N: Network>(network: &N, path: impl AsRef<Path>) -> Result<(), OnnxError> {
    let path = path.as_ref();
    let bytes = to_bytes(network)?;
    crate::files::write_atomically(path, &bytes).map_err(|source| OnnxError::Io {
        file: path.to_path_buf(),
        source,
    })
}

/// The ONNX model of `network`, serialised: what [`export`] writes.
///
/// # Errors
/// [`OnnxError::Unsupported`] for a layer of the user's.
pub fn to_bytes<N: Network>(network: &N) -> Result<Vec<u8>, OnnxError> {
    let mut tensors = HashMap::new();
    let mut collect = |name: &str, dims: &[usize], values: &[f32]| {
        tensors.insert(name.to_string(), (dims.to_vec(), values.to_vec()));
    };
    network.visit_params(&mut collect);
    network.visit_buffers(&mut collect);
    let mut builder = Builder::new(tensors);
    let input = builder.input(N::Input::DIMS);
    let mut values = vec![input];
    for node in network.graph() {
        let inputs: Vec<Value> = node.inputs.iter().map(|&i| values[i].clone()).collect();
        let value = builder.node(&node, &inputs)?;
        values.push(value);
    }
    let output = values.last().expect("value 0 is the input").clone();
    Ok(builder.model(N::NAME, N::Input::DIMS, &output))
}

/// A value of the exported graph: its ONNX name and layout.
#[derive(Clone, Debug)]
struct Value {
    name: String,
    layout: Layout,
}

/// How a value's samples are laid out in the exported graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// An image, `[batch, c, h, w]`; fields are `h, w, c`.
    Nchw(usize, usize, usize),
    /// A vector, `[batch, n]`.
    Flat(usize),
}

impl Value {
    /// The sample dimensions in constnet's order (`[h, w, c]` or `[n]`).
    fn dims(&self) -> Vec<usize> {
        match self.layout {
            Layout::Nchw(h, w, c) => vec![h, w, c],
            Layout::Flat(n) => vec![n],
        }
    }
}

/// The nodes and weights of the graph being written.
struct Builder {
    /// Every parameter and buffer of the network by name: dimensions and values.
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    nodes: Vec<proto::Node>,
    initializers: Vec<proto::Tensor>,
}

impl Builder {
    /// A builder with the network's tensors `tensors` to write.
    fn new(tensors: HashMap<String, (Vec<usize>, Vec<f32>)>) -> Self {
        Builder {
            tensors,
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    /// The serialised model named `name`, its graph the nodes written, reading an input of
    /// `input` dimensions and giving `output`.
    fn model(mut self, name: &str, input: &[usize], output: &Value) -> Vec<u8> {
        let output_name = self.output(output);
        let graph = proto::Graph {
            node: self.nodes,
            name: name.to_string(),
            initializer: self.initializers,
            input: vec![value_info("input", input)],
            output: vec![value_info(&output_name, &output.dims())],
        };
        let layout = if input.len() == 3 {
            "NHWC"
        } else {
            "batch, features"
        };
        let model = proto::Model {
            ir_version: IR_VERSION,
            producer_name: "constnet".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: format!(
                "{name}: input {input:?} ({layout}), output {:?}",
                output.dims()
            ),
            graph: Some(graph),
            opset_import: vec![proto::OperatorSetId {
                domain: String::new(),
                version: OPSET,
            }],
        };
        model.encode_to_vec()
    }

    /// The graph's input, as an image transposed to NCHW or a vector.
    fn input(&mut self, dims: &[usize]) -> Value {
        match *dims {
            [h, w, c] => {
                let name = "input.nchw".to_string();
                self.push(
                    "Transpose",
                    &["input"],
                    &name,
                    vec![ints("perm", &[0, 3, 1, 2])],
                );
                Value {
                    name,
                    layout: Layout::Nchw(h, w, c),
                }
            }
            [n] => Value {
                name: "input".into(),
                layout: Layout::Flat(n),
            },
            _ => unreachable!("shapes are images or vectors"),
        }
    }

    /// The name of the graph's output: `value`, transposed back to NHWC if it is an image, or
    /// an `Identity` of the input when the network only passes it on (dropout alone).
    fn output(&mut self, value: &Value) -> String {
        match value.layout {
            Layout::Nchw(..) => {
                self.push(
                    "Transpose",
                    &[&value.name],
                    "output",
                    vec![ints("perm", &[0, 2, 3, 1])],
                );
                "output".into()
            }
            Layout::Flat(_) if value.name == "input" => {
                self.push("Identity", &["input"], "output", vec![]);
                "output".into()
            }
            Layout::Flat(_) => value.name.clone(),
        }
    }

    /// The ONNX nodes of one graph node reading `inputs`; returns its output value.
    fn node(&mut self, node: &Node, inputs: &[Value]) -> Result<Value, OnnxError> {
        let input = &inputs[0];
        let name = node.name.to_string();
        let same_layout = |name: String| Value {
            name,
            layout: input.layout,
        };
        let elementwise = |builder: &mut Self, op: &str, attributes| {
            builder.push(op, &[&input.name], &name, attributes);
            Ok(same_layout(name.clone()))
        };
        match node.op {
            LayerKind::Conv {
                filters,
                kernel,
                stride,
                padding,
            } => {
                let window = Window {
                    kernel,
                    stride,
                    padding,
                };
                Ok(self.conv(node, input, filters, window, false))
            }
            LayerKind::DepthwiseConv {
                kernel,
                stride,
                padding,
            } => {
                let channels = match input.layout {
                    Layout::Nchw(_, _, c) => c,
                    Layout::Flat(_) => unreachable!("checked by network!"),
                };
                let window = Window {
                    kernel,
                    stride,
                    padding,
                };
                Ok(self.conv(node, input, channels, window, true))
            }
            LayerKind::Pool {
                size,
                stride,
                padding,
                ..
            } => {
                let op = operator(&node.op);
                let window = Window {
                    kernel: size,
                    stride,
                    padding,
                };
                let attributes = window.attributes(input);
                self.push(op, &[&input.name], &name, attributes);
                Ok(image_value(name, node.output))
            }
            LayerKind::GlobalPool { .. } => {
                let OnnxOp::Nodes(&[pool, flatten]) = node.op.onnx() else {
                    unreachable!("global pooling is written as pooling and a flatten")
                };
                let pooled = format!("{name}.pooled");
                self.push(pool, &[&input.name], &pooled, vec![]);
                self.push(flatten, &[&pooled], &name, vec![int("axis", 1)]);
                Ok(flat_value(name, node.output))
            }
            LayerKind::Upsample { factor } => {
                // Resize's defaults (nearest, half_pixel, round_prefer_floor) pick input pixel
                // i for each of its k copies: their source coordinates
                // i + (2j + 1 − k) / 2k, j < k, lie strictly within half a pixel of i.
                let scales = format!("{name}.scales");
                let factor = factor as f32;
                self.initializer(&scales, &[4], vec![1.0, 1.0, factor, factor]);
                self.push(
                    operator(&node.op),
                    &[&input.name, "", &scales],
                    &name,
                    vec![],
                );
                Ok(image_value(name, node.output))
            }
            LayerKind::Dense { .. } => {
                let (weight, bias) = (self.param(node, "weight"), self.param(node, "bias"));
                self.push(
                    operator(&node.op),
                    &[&input.name, &weight, &bias],
                    &name,
                    vec![],
                );
                Ok(flat_value(name, node.output))
            }
            LayerKind::Flatten => {
                let source = self.nhwc_name(input, &name);
                self.push(operator(&node.op), &[&source], &name, vec![int("axis", 1)]);
                Ok(flat_value(name, node.output))
            }
            LayerKind::Relu | LayerKind::Sigmoid | LayerKind::Tanh => {
                elementwise(self, operator(&node.op), vec![])
            }
            LayerKind::LeakyRelu { alpha } => {
                elementwise(self, operator(&node.op), vec![float("alpha", alpha)])
            }
            LayerKind::Gelu => Ok(same_layout(self.gelu(&input.name, &name))),
            LayerKind::Swish => {
                let OnnxOp::Nodes(&[sigmoid_op, mul]) = node.op.onnx() else {
                    unreachable!("swish is written as a sigmoid and a product")
                };
                let sigmoid = format!("{name}.sigmoid");
                self.push(sigmoid_op, &[&input.name], &sigmoid, vec![]);
                self.push(mul, &[&input.name, &sigmoid], &name, vec![]);
                Ok(same_layout(name))
            }
            LayerKind::Softmax => Ok(self.softmax(input, &name)),
            LayerKind::Dropout { .. } => Ok(input.clone()),
            LayerKind::BatchNorm { epsilon } => {
                let names =
                    ["weight", "bias", "running_mean", "running_var"].map(|t| self.param(node, t));
                let [scale, shift, mean, var] = names.each_ref().map(String::as_str);
                let inputs = [input.name.as_str(), scale, shift, mean, var];
                self.push(
                    operator(&node.op),
                    &inputs,
                    &name,
                    vec![float("epsilon", epsilon)],
                );
                Ok(same_layout(name))
            }
            LayerKind::Add => {
                let operands = [inputs[0].name.as_str(), &inputs[1].name];
                self.push(operator(&node.op), &operands, &name, vec![]);
                Ok(same_layout(name))
            }
            LayerKind::Custom => Err(OnnxError::Unsupported {
                layer: name,
                reason: "a layer type of your own (`layer(T)`) has no ONNX description".into(),
            }),
        }
    }

    /// A convolution of `filters` filters sliding `window` (or, `depthwise`, one filter per
    /// channel) as ONNX's `Conv`, its kernel transposed from `[k, k, in, out]` (or `[k, k, c]`)
    /// to OIHW.
    fn conv(
        &mut self,
        node: &Node,
        input: &Value,
        filters: usize,
        window: Window,
        depthwise: bool,
    ) -> Value {
        let kernel = window.kernel;
        let Layout::Nchw(_, _, channels) = input.layout else {
            unreachable!("network! checks that convolutions read images")
        };
        let in_per_filter = if depthwise { 1 } else { channels };
        let weight = format!("{}.weight", node.name);
        let (_, hwio) = self.take(&weight);
        let mut oihw = vec![0.0; hwio.len()];
        for (index, &value) in hwio.iter().enumerate() {
            let (ky, kx, i, o) = if depthwise {
                let (rest, c) = (index / channels, index % channels);
                (rest / kernel, rest % kernel, 0, c)
            } else {
                let (rest, o) = (index / filters, index % filters);
                let (rest, i) = (rest / channels, rest % channels);
                (rest / kernel, rest % kernel, i, o)
            };
            oihw[((o * in_per_filter + i) * kernel + ky) * kernel + kx] = value;
        }
        self.initializer(&weight, &[filters, in_per_filter, kernel, kernel], oihw);
        let bias = self.param(node, "bias");
        let mut attributes = window.attributes(input);
        if depthwise {
            attributes.push(int("group", channels as i64));
        }
        let name = node.name.to_string();
        let op = operator(&node.op);
        self.push(op, &[&input.name, &weight, &bias], &name, attributes);
        image_value(name, node.output)
    }

    /// Softmax over the innermost axis, as constnet computes it: a vector's values, or an
    /// image's channels at each pixel (axis 1 of NCHW).
    fn softmax(&mut self, input: &Value, name: &str) -> Value {
        let axis = match input.layout {
            Layout::Flat(_) => -1,
            Layout::Nchw(..) => 1,
        };
        let op = operator(&LayerKind::Softmax);
        self.push(op, &[&input.name], name, vec![int("axis", axis)]);
        Value {
            name: name.into(),
            layout: input.layout,
        }
    }

    /// GELU of `input` into `name`, as constnet computes it: `x · ((1 + erf(x · (1/√2))) · 0.5)`
    /// (opset 17 has no `Gelu`); returns `name`.
    fn gelu(&mut self, input: &str, name: &str) -> String {
        let constant = |builder: &mut Self, what: &str, value: f32| {
            let constant = format!("{name}.{what}");
            builder.initializer(&constant, &[], vec![value]);
            constant
        };
        let inv_sqrt2 = constant(self, "inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
        let (one, half) = (constant(self, "one", 1.0), constant(self, "half", 0.5));
        let [scaled, erf, plus_one, cdf] =
            ["scaled", "erf", "plus_one", "cdf"].map(|step| format!("{name}.{step}"));
        let OnnxOp::Nodes(&[scale, erf_op, add, times_half, times_input]) = LayerKind::Gelu.onnx()
        else {
            unreachable!("GELU is written as five operators")
        };
        self.push(scale, &[input, &inv_sqrt2], &scaled, vec![]);
        self.push(erf_op, &[&scaled], &erf, vec![]);
        self.push(add, &[&erf, &one], &plus_one, vec![]);
        self.push(times_half, &[&plus_one, &half], &cdf, vec![]);
        self.push(times_input, &[input, &cdf], name, vec![]);
        name.to_string()
    }

    /// The name of a value holding `value` NHWC: itself if it is a vector, a transposition
    /// (named after `for_node`) if it is an image.
    fn nhwc_name(&mut self, value: &Value, for_node: &str) -> String {
        match value.layout {
            Layout::Flat(_) => value.name.clone(),
            Layout::Nchw(..) => {
                let name = format!("{for_node}.nhwc");
                self.push(
                    "Transpose",
                    &[&value.name],
                    &name,
                    vec![ints("perm", &[0, 2, 3, 1])],
                );
                name
            }
        }
    }

    /// Moves the network's tensor `{node}.{tensor}` into the model as a weight as it is (each
    /// tensor is written once); returns its name.
    fn param(&mut self, node: &Node, tensor: &str) -> String {
        let name = format!("{}.{tensor}", node.name);
        let (dims, values) = self.take(&name);
        self.initializer(&name, &dims, values);
        name
    }

    /// The network's tensor `name`, which every layer of its graph has.
    fn take(&mut self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.tensors
            .remove(name)
            .expect("Network::graph names layers whose tensors the network visits")
    }

    fn initializer(&mut self, name: &str, dims: &[usize], values: Vec<f32>) {
        self.initializers.push(proto::Tensor {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: proto::FLOAT,
            float_data: values,
            name: name.into(),
            ..proto::Tensor::default()
        });
    }

    fn push(&mut self, op: &str, inputs: &[&str], output: &str, attribute: Vec<proto::Attribute>) {
        self.nodes.push(proto::Node {
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute,
        });
    }
}

/// A convolution's or pooling's window: its size, its stride, and its padding.
#[derive(Clone, Copy)]
struct Window {
    kernel: usize,
    stride: usize,
    padding: Padding,
}

impl Window {
    /// `kernel_shape`, `strides` and `pads` for a window over `input`, an image. `same` is
    /// written as the pads it makes (ONNX's `SAME_UPPER` is not read by every runtime) and
    /// explicit pads as given, ONNX's order being `[top, left, bottom, right]`.
    fn attributes(self, input: &Value) -> Vec<proto::Attribute> {
        let Layout::Nchw(h, w, _) = input.layout else {
            unreachable!("network! checks that windows slide over images")
        };
        let pads = self.padding.pads((h, w), self.kernel, self.stride);
        vec![
            ints("kernel_shape", &[self.kernel, self.kernel]),
            ints("strides", &[self.stride, self.stride]),
            ints("pads", &[pads.top, pads.left, pads.bottom, pads.right]),
        ]
    }
}

/// The operator the catalogue writes a layer of `kind` as, for kinds written as one node.
fn operator(kind: &LayerKind) -> &'static str {
    match kind.onnx() {
        OnnxOp::Node(op) => op,
        form => unreachable!("{kind:?} is written as {form:?}, not one node"),
    }
}

/// An image value named `name` of constnet dimensions `dims` (`[h, w, c]`).
fn image_value(name: String, dims: &[usize]) -> Value {
    let [h, w, c] = dims else {
        unreachable!("an image has three dimensions")
    };
    Value {
        name,
        layout: Layout::Nchw(*h, *w, *c),
    }
}

/// A vector value named `name` of `dims` (`[n]`).
fn flat_value(name: String, dims: &[usize]) -> Value {
    Value {
        name,
        layout: Layout::Flat(dims.iter().product()),
    }
}

fn int(name: &str, value: i64) -> proto::Attribute {
    proto::Attribute {
        name: name.into(),
        i: value,
        r#type: proto::ATTRIBUTE_INT,
        ..proto::Attribute::default()
    }
}

fn ints(name: &str, values: &[usize]) -> proto::Attribute {
    proto::Attribute {
        name: name.into(),
        ints: values.iter().map(|&v| v as i64).collect(),
        r#type: proto::ATTRIBUTE_INTS,
        ..proto::Attribute::default()
    }
}

fn float(name: &str, value: f32) -> proto::Attribute {
    proto::Attribute {
        name: name.into(),
        f: value,
        r#type: proto::ATTRIBUTE_FLOAT,
        ..proto::Attribute::default()
    }
}

/// A graph input or output named `name` holding samples of constnet dimensions `dims` (NHWC
/// for images) with a free batch size.
fn value_info(name: &str, dims: &[usize]) -> proto::ValueInfo {
    let batch = proto::Dimension {
        dim_value: None,
        dim_param: Some("batch".into()),
    };
    let sizes = dims.iter().map(|&d| proto::Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    });
    proto::ValueInfo {
        name: name.into(),
        r#type: Some(proto::Type {
            tensor_type: Some(proto::TensorType {
                elem_type: proto::FLOAT,
                shape: Some(proto::Shape {
                    dim: std::iter::once(batch).chain(sizes).collect(),
                }),
            }),
        }),
    }
}
