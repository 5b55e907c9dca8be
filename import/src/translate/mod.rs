//! From [`Step`]s to `network!` layers with their weights in constnet's layouts ([`Item`]),
//! following each value's shape and layout from the input on ([`layout`]); each operator's
//! translation is in [`ops`], its window's in [`window`].
//!
//! ONNX's `Conv` and pooling read NCHW; constnet's layers read NHWC. A value is tracked with the
//! order its producer left it in ([`Order`]): a `Transpose` only changes that order, a
//! convolution's kernel is transposed from OIHW to `[kh, kw, in, out]`, and a dense layer after a
//! flatten of NCHW values gets its rows reordered from CHW to constnet's HWC. So the network
//! takes NHWC input whatever the model's layout, and computes what the model computes.

mod layout;
mod ops;
mod window;

use std::collections::HashMap;

use constnet_catalogue::{ArgValue, Args, Entry, LayerKind, Shape};
use constnet_onnx_proto as proto;

use crate::ImportError;
use crate::attributes::float;
use crate::model::{Constant, Model, node_error};
use crate::structure::Step;
use layout::{Order, Value, image, input_value, transpose};
use window::stride_text;

/// One layer of the list: how it is written, and its tensors in constnet's layouts.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Its grammar name (`conv`), which numbers it (`conv1`, `conv2`).
    pub name: &'static str,
    /// As written in the list: `conv(64, 3, padding = 1)`.
    pub spec: String,
    /// What it computes.
    pub kind: LayerKind,
    /// Its tensors: name within the layer (`weight`), dimensions, values.
    pub tensors: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
}

/// One item of the list.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A layer.
    Layer(Layer),
    /// A residual block, with its learned projection (a 1x1 convolution) if it has one.
    Block {
        /// The block's layers.
        body: Vec<Item>,
        /// The shortcut's projection, `None` for the identity.
        projection: Option<Layer>,
    },
}

/// The network's input shape (constnet's, NHWC) and its layer list.
pub struct Translation {
    /// `[h, w, c]` or `[n]`.
    pub input: Vec<usize>,
    /// The layers.
    pub items: Vec<Item>,
}

/// Translates `steps` of `model`.
pub fn translate(model: &Model, steps: &[Step]) -> Result<Translation, ImportError> {
    let (input, value) = input_value(model, steps);
    let mut translator = Translator {
        model,
        dims: HashMap::from([(model.input.clone(), value.onnx_dims())]),
    };
    let (items, _) = translator.steps(steps, value)?;
    Ok(Translation { input, items })
}

struct Translator<'m> {
    model: &'m Model,
    /// The ONNX dimensions of every value passed so far, by name ([`shapes::BATCH`] for the
    /// batch), for `Reshape`s whose target the graph computes from them.
    dims: HashMap<String, Vec<i64>>,
}

type Translated = Result<(Vec<Item>, Value), ImportError>;

impl<'m> Translator<'m> {
    fn steps(&mut self, steps: &[Step], mut value: Value) -> Translated {
        let mut items = Vec::new();
        for step in steps {
            let (mut more, next) = self.step(step, value)?;
            items.append(&mut more);
            value = next;
            if let Some(output) = self.output_of(step) {
                self.dims.insert(output, value.onnx_dims());
            }
        }
        Ok((items, value))
    }

    /// The name of the value `step` makes (`None` for GELU's nodes, which no shape reads).
    fn output_of(&self, step: &Step) -> Option<String> {
        let node = match *step {
            Step::Node(node) | Step::MatMulAdd { add: node, .. } => node,
            Step::Affine {
                add: Some(node), ..
            }
            | Step::Affine {
                mul: Some(node), ..
            } => node,
            Step::Affine { .. } => return None,
            Step::Swish { mul: node, .. } | Step::Block { add: node, .. } => node,
            Step::Gelu => return None,
        };
        self.model.nodes[node].output.first().cloned()
    }

    fn step(&mut self, step: &Step, value: Value) -> Translated {
        match *step {
            Step::Node(index) => self.node(&self.model.nodes[index], value),
            Step::MatMulAdd { matmul, add } => {
                let (node, add) = (&self.model.nodes[matmul], &self.model.nodes[add]);
                let weight = self.weight_input(node, 1)?;
                let bias = Some(self.bias_input(add)?);
                self.dense(node, value, weight, false, bias)
            }
            Step::Gelu => Ok((vec![Item::Layer(plain_layer("gelu"))], value)),
            Step::Affine { mul, add } => {
                let [mul, add] = [mul, add].map(|n| n.map(|n| &self.model.nodes[n]));
                self.affine(mul, add, value)
            }
            Step::Swish { .. } => Ok((vec![Item::Layer(plain_layer("swish"))], value)),
            Step::Block {
                ref body,
                ref shortcut,
                add,
            } => self.block(body, shortcut, &self.model.nodes[add], value),
        }
    }

    fn block(
        &mut self,
        body: &[Step],
        shortcut: &[usize],
        add: &proto::Node,
        value: Value,
    ) -> Translated {
        let (body, output) = self.steps(body, value)?;
        let projection = match shortcut {
            [] => None,
            nodes => Some(self.projection(nodes, value, output)?),
        };
        if projection.is_some() && output.shape == value.shape && output.order == value.order {
            return Err(node_error(
                add,
                format!(
                    "adds a projection of the block's input to a branch that keeps its shape \
                     ({}); a residual block of `network!` adds its input itself when the shape \
                     is kept",
                    value.shape
                ),
            ));
        }
        if output.order != value.order || (projection.is_none() && output.shape != value.shape) {
            return Err(node_error(
                add,
                format!(
                    "adds values of different shapes or layouts ({} and {})",
                    value.shape, output.shape
                ),
            ));
        }
        Ok((vec![Item::Block { body, projection }], output))
    }

    /// A shortcut's 1x1 convolution (and a batch normalisation folded into it) from `input` to
    /// `output`, the projection `network!` gives a block (stride `s` with `ceil(in / s)` out).
    fn projection(
        &mut self,
        nodes: &[usize],
        input: Value,
        output: Value,
    ) -> Result<Layer, ImportError> {
        let conv = &self.model.nodes[nodes[0]];
        let refuse = |why: &str| {
            Err(node_error(
                conv,
                format!("is a residual block's shortcut, which imports only as {why}"),
            ))
        };
        if let ("Gemm" | "MatMul", [_]) = (conv.op_type.as_str(), nodes) {
            return match self.node(conv, input)?.0.pop() {
                Some(Item::Layer(layer)) if matches!(output.shape, Shape::Flat(_)) => Ok(layer),
                _ => refuse("a dense layer onto the block's output"),
            };
        }
        if conv.op_type != "Conv" {
            return refuse("a 1x1 convolution, perhaps followed by a batch normalisation");
        }
        let (mut items, projected) = self.node(conv, input)?;
        let Some(Item::Layer(mut layer)) = items.pop() else {
            return refuse("one convolution");
        };
        let (Shape::Image(h, w, _), Shape::Image(out_h, out_w, filters)) =
            (input.shape, output.shape)
        else {
            return refuse("a convolution between images");
        };
        let stride = match layer.kind {
            LayerKind::Conv { stride, .. } => stride,
            _ => return refuse("a convolution of every channel"),
        };
        let is_projection = layer.spec == format!("conv({filters}, 1{})", stride_text(stride, 1))
            && h.div_ceil(stride) == out_h
            && w.div_ceil(stride) == out_w
            && projected.shape == output.shape;
        if !is_projection {
            return refuse(&format!(
                "`conv({filters}, 1, stride = s)` without padding onto the block's output \
                 ({})",
                output.shape
            ));
        }
        if let Some(&bn) = nodes.get(1) {
            let bn = &self.model.nodes[bn];
            if bn.op_type != "BatchNormalization" {
                return refuse("a convolution and a batch normalisation");
            }
            self.fold_batchnorm(bn, &mut layer)?;
        }
        Ok(layer)
    }

    /// Folds the batch normalisation `bn` into the convolution `layer` before it: `w · s`,
    /// `(b − mean) · s + beta`, with `s = gamma / sqrt(var + epsilon)` per output channel.
    fn fold_batchnorm(&self, bn: &proto::Node, layer: &mut Layer) -> Result<(), ImportError> {
        let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| self.input_constant(bn, i));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let epsilon = float(bn, "epsilon").unwrap_or(1e-5);
        let scale: Vec<f32> = gamma
            .values
            .iter()
            .zip(&var.values)
            .map(|(g, v)| g / (v + epsilon).sqrt())
            .collect();
        let [(_, _, weight), (_, _, bias)] = layer.tensors.as_mut_slice() else {
            unreachable!("a convolution has a weight and a bias")
        };
        let filters = bias.len();
        let vectors = [&gamma, &beta, &mean, &var];
        if vectors.iter().any(|t| t.values.len() != filters) {
            return Err(node_error(bn, "has vectors of the wrong length".into()));
        }
        for (index, w) in weight.iter_mut().enumerate() {
            *w *= scale[index % filters];
        }
        for (f, b) in bias.iter_mut().enumerate() {
            *b = (*b - mean.values[f]) * scale[f] + beta.values[f];
        }
        Ok(())
    }

    fn node(&mut self, node: &proto::Node, value: Value) -> Translated {
        let one = |layer: Layer, value: Value| Ok((vec![Item::Layer(layer)], value));
        let none = |value: Value| Ok((Vec::new(), value));
        match node.op_type.as_str() {
            "Conv" => self.conv(node, value),
            "MaxPool" | "AveragePool" => self.pool(node, value),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let (_, _, c) = image(node, value, Order::ChannelsFirst)?;
                let name = if node.op_type == "GlobalMaxPool" {
                    "globalmaxpool"
                } else {
                    "globalavgpool"
                };
                let value = Value {
                    shape: Shape::Flat(c),
                    order: Order::Pooled,
                };
                one(plain_layer(name), value)
            }
            "BatchNormalization" => self.batchnorm(node, value),
            "Relu" => one(plain_layer("relu"), value),
            "Sigmoid" => one(plain_layer("sigmoid"), value),
            "Tanh" => one(plain_layer("tanh"), value),
            "Gelu" => self.gelu(node, value),
            "LeakyRelu" => {
                let alpha = float(node, "alpha").unwrap_or(0.01);
                let layer = Layer {
                    name: "leaky_relu",
                    spec: format!("leaky_relu({alpha:?})"),
                    kind: checked_kind(node, "leaky_relu", vec![number(alpha)], vec![])?,
                    tensors: Vec::new(),
                };
                one(layer, value)
            }
            "Softmax" => self.softmax(node, value),
            "Dropout" => {
                let rate = match node.input.get(1).filter(|i| !i.is_empty()) {
                    Some(_) => self.input_constant(node, 1)?.values.first().copied(),
                    None => float(node, "ratio"),
                };
                let rate = rate.unwrap_or(0.5);
                let layer = Layer {
                    name: "dropout",
                    spec: format!("dropout({rate:?})"),
                    kind: checked_kind(node, "dropout", vec![number(rate)], vec![])?,
                    tensors: Vec::new(),
                };
                one(layer, value)
            }
            "Identity" => none(value),
            "Transpose" => none(transpose(node, value)?),
            "Flatten" | "Reshape" | "Squeeze" => self.flatten(node, value),
            "Gemm" => self.gemm(node, value),
            "MatMul" => {
                let weight = self.weight_input(node, 1)?;
                self.dense(node, value, weight, false, None)
            }
            "Resize" | "Upsample" => self.upsample(node, value),
            op => Err(node_error(
                node,
                format!(
                    "the operator {op} has no equivalent in `network!` (import reads Conv, \
                     Gemm, MatMul, Add, the activations, the poolings, BatchNormalization, \
                     Flatten, Reshape, Softmax, Dropout, Identity, Transpose and Resize)"
                ),
            )),
        }
    }

    fn input_constant(
        &self,
        node: &proto::Node,
        input: usize,
    ) -> Result<&'m Constant, ImportError> {
        let name = node
            .input
            .get(input)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| node_error(node, format!("has no input {input}")))?;
        self.model.constant(name).ok_or_else(|| {
            node_error(
                node,
                format!("reads `{name}` as a weight, but it is computed, not a constant"),
            )
        })
    }

    /// Input `input` of `node`, a constant matrix.
    fn weight_input(&self, node: &proto::Node, input: usize) -> Result<&'m Constant, ImportError> {
        let weight = self.input_constant(node, input)?;
        if weight.dims.len() != 2 {
            return Err(node_error(
                node,
                format!("has a weight of dimensions {:?}, not a matrix", weight.dims),
            ));
        }
        Ok(weight)
    }

    /// The bias a bias `Add` adds: its constant input, one value per unit.
    fn bias_input(&self, add: &proto::Node) -> Result<Vec<f32>, ImportError> {
        let constant = add
            .input
            .iter()
            .find_map(|input| self.model.constant(input))
            .ok_or_else(|| node_error(add, "adds no constant bias".into()))?;
        Ok(constant.values.clone())
    }
}

/// The kind the grammar's entry `name` builds from these arguments, refusing what `network!`
/// would refuse (pads larger than a window allows, a dropout rate of 1, a negative slope).
fn checked_kind(
    node: &proto::Node,
    name: &str,
    positional: Vec<ArgValue>,
    options: Vec<Option<ArgValue>>,
) -> Result<LayerKind, ImportError> {
    let entry = Entry::named(name).expect("a layer of the grammar");
    (entry.build)(&Args {
        positional,
        options,
    })
    .map_err(|problem| node_error(node, format!("as `{name}`: {}", problem.message)))
}

/// A number argument, as the grammar decodes `0.1`.
fn number(value: f32) -> ArgValue {
    ArgValue::Number(value as f64)
}

/// A layer without arguments or tensors: `relu`.
fn plain_layer(name: &'static str) -> Layer {
    let entry = Entry::named(name).expect("a layer of the grammar");
    let kind = (entry.build)(&Args::default()).expect("a layer without arguments");
    Layer {
        name,
        spec: name.to_string(),
        kind,
        tensors: Vec::new(),
    }
}

/// The shape `kind` makes of `input`, or the node's error.
fn output_shape(node: &proto::Node, kind: LayerKind, input: Shape) -> Result<Shape, ImportError> {
    kind.output_shape(input).map_err(|problem| {
        node_error(
            node,
            problem.message(&format!("{kind:?}"), input, "its input"),
        )
    })
}
