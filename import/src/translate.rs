//! From [`Step`]s to `network!` layers with their weights in constnet's layouts ([`Item`]),
//! following each value's shape and layout from the input on.
//!
//! ONNX's `Conv` and pooling read NCHW; constnet's layers read NHWC. A value is tracked with the
//! order its producer left it in ([`Order`]): a `Transpose` only changes that order, a
//! convolution's kernel is transposed from OIHW to `[kh, kw, in, out]`, and a dense layer after a
//! flatten of NCHW values gets its rows reordered from CHW to constnet's HWC. So the network
//! takes NHWC input whatever the model's layout, and computes what the model computes.

use constnet_catalogue::{ArgValue, Args, Entry, LayerKind, Padding, Pads, Shape};
use constnet_onnx_proto as proto;

use crate::ImportError;
use std::collections::HashMap;

use crate::model::{Constant, Model, node_error};
use crate::shapes;
use crate::structure::Step;

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

/// How an ONNX value's elements are laid out, against constnet's view of the same value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// An image, `[N, C, H, W]` in ONNX.
    ChannelsFirst,
    /// An image, `[N, H, W, C]` in ONNX: constnet's own layout.
    ChannelsLast,
    /// A vector in constnet's order.
    Flat,
    /// A vector flattened from a `(h, w, c)` image in ONNX's CHW order.
    FlatChw(usize, usize, usize),
    /// `[N, C, 1, 1]` from a global pooling, which constnet keeps as a vector of `C`.
    Pooled,
}

/// A value as the walk sees it: constnet's shape and ONNX's layout of it.
#[derive(Clone, Copy, Debug)]
struct Value {
    shape: Shape,
    order: Order,
}

impl Value {
    /// Its dimensions in ONNX, the batch first.
    fn onnx_dims(self) -> Vec<i64> {
        let dims: Vec<usize> = match (self.shape, self.order) {
            (Shape::Image(h, w, c), Order::ChannelsFirst) => vec![c, h, w],
            (Shape::Image(h, w, c), _) => vec![h, w, c],
            (Shape::Flat(c), Order::Pooled) => vec![c, 1, 1],
            (Shape::Flat(n), _) => vec![n],
        };
        [shapes::BATCH]
            .into_iter()
            .chain(dims.into_iter().map(|d| d as i64))
            .collect()
    }
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

/// How the model first reads its input, past element-wise steps.
#[derive(Debug, PartialEq)]
enum FirstRead {
    /// A `Transpose` from NHWC to NCHW.
    FromNhwc,
    /// An operator that reads NCHW images (a convolution, a pooling, ...).
    AsNchw,
    /// As a sequence of values only (a flatten, a reshape): the layout is not the model's to say.
    AsValues,
}

fn first_read(model: &Model, steps: &[Step]) -> FirstRead {
    first_read_of(model, steps).unwrap_or(FirstRead::AsValues)
}

/// [`first_read`], `None` where `steps` hold only element-wise steps.
fn first_read_of(model: &Model, steps: &[Step]) -> Option<FirstRead> {
    let node_read = |index: usize| {
        let node = &model.nodes[index];
        match node.op_type.as_str() {
            "Relu" | "LeakyRelu" | "Sigmoid" | "Tanh" | "Gelu" | "Dropout" | "Identity" => None,
            "Transpose" if ints(node, "perm") == Some(vec![0, 3, 1, 2]) => {
                Some(FirstRead::FromNhwc)
            }
            "Flatten" | "Reshape" | "Gemm" | "MatMul" | "Softmax" => Some(FirstRead::AsValues),
            _ => Some(FirstRead::AsNchw),
        }
    };
    steps.iter().find_map(|step| match *step {
        Step::Node(index) => node_read(index),
        Step::Block {
            ref body,
            ref shortcut,
            ..
        } => first_read_of(model, body).or_else(|| shortcut.first().and_then(|&n| node_read(n))),
        Step::Gelu | Step::Swish { .. } | Step::Affine { .. } => None,
        Step::MatMulAdd { .. } => Some(FirstRead::AsValues),
    })
}

/// The input's constnet dimensions and value. An image the model transposes from NHWC, or
/// only ever reads as a sequence of values, is taken as NHWC in the model's order (so a flatten
/// keeps it); one the model's first operator reads as NCHW is taken as NCHW.
fn input_value(model: &Model, steps: &[Step]) -> (Vec<usize>, Value) {
    let dims = &model.input_dims;
    if let [n] = dims.as_slice() {
        let value = Value {
            shape: Shape::Flat(*n),
            order: Order::Flat,
        };
        return (vec![*n], value);
    }
    let (h, w, c, order) = match first_read(model, steps) {
        FirstRead::FromNhwc | FirstRead::AsValues => {
            (dims[0], dims[1], dims[2], Order::ChannelsLast)
        }
        FirstRead::AsNchw => (dims[1], dims[2], dims[0], Order::ChannelsFirst),
    };
    let value = Value {
        shape: Shape::Image(h, w, c),
        order,
    };
    (vec![h, w, c], value)
}

struct Translator<'m> {
    model: &'m Model,
    /// The ONNX dimensions of every value passed so far, by name ([`shapes::BATCH`] for the
    /// batch), for `Reshape`s whose target the graph computes from them.
    dims: HashMap<String, Vec<i64>>,
}

type Translated = Result<(Vec<Item>, Value), ImportError>;

impl Translator<'_> {
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
                let bias = self.bias_input(add)?;
                self.dense(node, value, weight, false, bias)
            }
            Step::Gelu => Ok((vec![Item::Layer(plain_layer("gelu"))], value)),
            Step::Affine { mul, add } => {
                let [mul, add] = [mul, add].map(|n| n.map(|n| &self.model.nodes[n]));
                self.affine(mul, add, value)
            }
            Step::Swish { mul, .. } => {
                let node = &self.model.nodes[mul];
                let layer = plain_layer("swish");
                Ok((vec![Item::Layer(layer)], same_value(node, value)?))
            }
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
            "Relu" => one(plain_layer("relu"), same_value(node, value)?),
            "Sigmoid" => one(plain_layer("sigmoid"), same_value(node, value)?),
            "Tanh" => one(plain_layer("tanh"), same_value(node, value)?),
            "Gelu" => self.gelu(node, value),
            "LeakyRelu" => {
                let alpha = float(node, "alpha").unwrap_or(0.01);
                let layer = Layer {
                    name: "leaky_relu",
                    spec: format!("leaky_relu({alpha:?})"),
                    kind: checked_kind(node, "leaky_relu", vec![number(alpha)], vec![])?,
                    tensors: Vec::new(),
                };
                one(layer, same_value(node, value)?)
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
                one(layer, same_value(node, value)?)
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

    fn conv(&mut self, node: &proto::Node, value: Value) -> Translated {
        let (h, w, c) = image(node, value, Order::ChannelsFirst)?;
        let weight = self.input_constant(node, 1)?;
        let [filters, per_group, kh, kw] = weight.dims[..] else {
            return Err(node_error(
                node,
                format!("has a kernel of dimensions {:?}", weight.dims),
            ));
        };
        let window = square_window(node, kh, kw)?;
        let group = int(node, "group").unwrap_or(1);
        let depthwise = group != 1;
        if depthwise && !(group == c as i64 && per_group == 1 && filters == c) {
            return Err(node_error(
                node,
                format!(
                    "is a grouped convolution ({group} groups of {c} channels into {filters}); \
                     import reads groups of 1 (`conv`) and one per channel (`dwconv`)"
                ),
            ));
        }
        if !depthwise && per_group != c {
            return Err(node_error(
                node,
                format!("reads {per_group} channels, but its input has {c}"),
            ));
        }
        let bias = match node.input.get(2).filter(|i| !i.is_empty()) {
            Some(_) => self.input_constant(node, 2)?.values.clone(),
            None => vec![0.0; filters],
        };
        if bias.len() != filters {
            return Err(node_error(
                node,
                format!("has {} biases for {filters} filters", bias.len()),
            ));
        }
        let kind = if depthwise {
            let positional = vec![ArgValue::Int(window.size)];
            checked_kind(node, "dwconv", positional, window.arguments())?
        } else {
            let positional = vec![ArgValue::Int(filters), ArgValue::Int(window.size)];
            checked_kind(node, "conv", positional, window.arguments())?
        };
        let shape = output_shape(node, kind, Shape::Image(h, w, c))?;
        let (name, spec, kernel) = if depthwise {
            let spec = format!("dwconv({}{})", window.size, window.options(1));
            (
                "dwconv",
                spec,
                depthwise_kernel(&weight.values, c, window.size),
            )
        } else {
            let spec = format!("conv({filters}, {}{})", window.size, window.options(1));
            (
                "conv",
                spec,
                conv_kernel(&weight.values, filters, c, window.size),
            )
        };
        let kernel_dims = if depthwise {
            vec![window.size, window.size, c]
        } else {
            vec![window.size, window.size, c, filters]
        };
        let layer = Layer {
            name,
            spec,
            kind,
            tensors: vec![
                ("weight", kernel_dims, kernel),
                ("bias", vec![filters], bias),
            ],
        };
        let value = Value {
            shape,
            order: Order::ChannelsFirst,
        };
        Ok((vec![Item::Layer(layer)], value))
    }

    fn pool(&mut self, node: &proto::Node, value: Value) -> Translated {
        let (h, w, c) = image(node, value, Order::ChannelsFirst)?;
        let [size, size_w] = ints(node, "kernel_shape")
            .and_then(|k| <[i64; 2]>::try_from(k).ok())
            .ok_or_else(|| node_error(node, "has no 2-D kernel_shape".into()))?;
        let window = square_window(node, size as usize, size_w as usize)?;
        let max = node.op_type == "MaxPool";
        if int(node, "ceil_mode").unwrap_or(0) != 0 {
            return Err(node_error(
                node,
                "rounds its output size up (ceil_mode = 1); `network!` pools round down".into(),
            ));
        }
        if !max && int(node, "count_include_pad").unwrap_or(0) != 0 && !window.padding.is_none() {
            return Err(node_error(
                node,
                "counts the padding in its means (count_include_pad = 1); `avgpool` averages \
                 the input values a window covers"
                    .into(),
            ));
        }
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(node_error(node, "also outputs the maxima's indices".into()));
        }
        let name = if max { "maxpool" } else { "avgpool" };
        let positional = vec![ArgValue::Int(window.size)];
        let kind = checked_kind(node, name, positional, window.arguments())?;
        let shape = output_shape(node, kind, Shape::Image(h, w, c))?;
        let layer = Layer {
            name,
            spec: format!("{name}({}{})", window.size, window.options(window.size)),
            kind,
            tensors: Vec::new(),
        };
        let value = Value {
            shape,
            order: Order::ChannelsFirst,
        };
        Ok((vec![Item::Layer(layer)], value))
    }

    fn batchnorm(&mut self, node: &proto::Node, value: Value) -> Translated {
        let channels = match (value.shape, value.order) {
            (Shape::Image(_, _, c), Order::ChannelsFirst) => c,
            (Shape::Flat(n), Order::Flat | Order::Pooled) => n,
            _ => {
                return Err(node_error(
                    node,
                    "normalises a value whose channels are not on axis 1 in constnet's order"
                        .into(),
                ));
            }
        };
        if int(node, "training_mode").unwrap_or(0) != 0 {
            return Err(node_error(node, "is in training mode".into()));
        }
        let names = ["weight", "bias", "running_mean", "running_var"];
        let mut tensors = Vec::new();
        for (input, name) in (1..=4).zip(names) {
            let tensor = self.input_constant(node, input)?;
            if tensor.values.len() != channels {
                return Err(node_error(
                    node,
                    format!(
                        "has {} values of `{name}` for {channels} channels",
                        tensor.values.len()
                    ),
                ));
            }
            tensors.push((name, vec![channels], tensor.values.clone()));
        }
        let epsilon = float(node, "epsilon").unwrap_or(1e-5);
        if epsilon.is_nan() || epsilon <= 0.0 {
            return Err(node_error(
                node,
                format!("has epsilon {epsilon}; it must be positive"),
            ));
        }
        let layer = Layer {
            name: "batchnorm",
            spec: format!("batchnorm(epsilon = {epsilon:?})"),
            kind: checked_kind(node, "batchnorm", vec![], vec![Some(number(epsilon))])?,
            tensors,
        };
        Ok((vec![Item::Layer(layer)], value))
    }

    /// `x · scale + shift` per channel, as a batch normalisation of mean 0 and variance
    /// `1 − epsilon` (whose square root with epsilon added is 1).
    fn affine(
        &mut self,
        mul: Option<&proto::Node>,
        add: Option<&proto::Node>,
        value: Value,
    ) -> Translated {
        let node = mul.or(add).expect("a scale or a shift");
        let channels = match (value.shape, value.order) {
            (Shape::Image(_, _, c), Order::ChannelsFirst | Order::ChannelsLast) => c,
            (Shape::Flat(n), Order::Flat | Order::Pooled) => n,
            _ => {
                return Err(node_error(
                    node,
                    "scales a vector flattened from NCHW values; import reads per-channel \
                     scales and shifts"
                        .into(),
                ));
            }
        };
        let per_channel = |node: Option<&proto::Node>,
                           identity: f32|
         -> Result<Vec<f32>, ImportError> {
            let Some(node) = node else {
                return Ok(vec![identity; channels]);
            };
            let constant = node
                .input
                .iter()
                .find_map(|input| self.model.constant(input))
                .expect("the structure found a constant");
            let axis_ok = match value.order {
                Order::ChannelsFirst => constant.dims.iter().rev().take(2).all(|&d| d == 1),
                _ => true,
            };
            let used: Vec<usize> = constant.dims.iter().copied().filter(|&d| d != 1).collect();
            match (constant.values.len(), axis_ok, used.as_slice()) {
                (1, _, _) => Ok(vec![constant.values[0]; channels]),
                (n, true, [c]) if n == channels && *c == channels => Ok(constant.values.clone()),
                _ => Err(node_error(
                    node,
                    format!(
                        "applies a constant of dimensions {:?}, not one value per channel of {channels}",
                        constant.dims
                    ),
                )),
            }
        };
        let (scale, shift) = (per_channel(mul, 1.0)?, per_channel(add, 0.0)?);
        let epsilon = constnet_catalogue::BATCHNORM_EPSILON;
        let layer = Layer {
            name: "batchnorm",
            spec: "batchnorm".into(),
            kind: checked_kind(node, "batchnorm", vec![], vec![None])?,
            tensors: vec![
                ("weight", vec![channels], scale),
                ("bias", vec![channels], shift),
                ("running_mean", vec![channels], vec![0.0; channels]),
                ("running_var", vec![channels], vec![1.0 - epsilon; channels]),
            ],
        };
        Ok((vec![Item::Layer(layer)], value))
    }

    fn gelu(&mut self, node: &proto::Node, value: Value) -> Translated {
        let approximate = node
            .attribute
            .iter()
            .find(|a| a.name == "approximate")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned());
        if approximate.is_some_and(|a| a != "none") {
            return Err(node_error(
                node,
                "is the tanh approximation of GELU; `gelu` is the exact form".into(),
            ));
        }
        Ok((
            vec![Item::Layer(plain_layer("gelu"))],
            same_value(node, value)?,
        ))
    }

    fn softmax(&mut self, node: &proto::Node, value: Value) -> Translated {
        let axis = int(node, "axis").unwrap_or(-1);
        let over_channels = match (value.shape, value.order) {
            (Shape::Flat(_), Order::Flat | Order::FlatChw(..) | Order::Pooled) => {
                axis == 1 || axis == -1
            }
            (Shape::Image(..), Order::ChannelsLast) => axis == 3 || axis == -1,
            (Shape::Image(..), Order::ChannelsFirst) => axis == 1,
            _ => false,
        };
        if !over_channels {
            return Err(node_error(
                node,
                format!("takes the softmax over axis {axis}; `softmax` takes it over the channels"),
            ));
        }
        let value = match value.order {
            Order::FlatChw(..) | Order::Pooled => Value {
                order: Order::Flat,
                ..value
            },
            _ => value,
        };
        Ok((vec![Item::Layer(plain_layer("softmax"))], value))
    }

    /// `Flatten`, `Reshape` to `[batch, n]`, or `Squeeze` of a global pooling's 1x1 image.
    fn flatten(&mut self, node: &proto::Node, value: Value) -> Translated {
        let len = value.shape.len();
        let to_vector = match node.op_type.as_str() {
            "Flatten" => int(node, "axis").unwrap_or(1) == 1,
            "Reshape" => {
                let target = node.input.get(1).map_or("", String::as_str);
                let shape = shapes::evaluate(self.model, &self.dims, target).ok_or_else(|| {
                    node_error(
                        node,
                        format!("reshapes to `{target}`, which is neither a constant nor computed from shapes"),
                    )
                })?;
                matches!(shape[..], [b, n] if (b == shapes::BATCH || b == -1 || b >= 0)
                    && (n == -1 || n == len as i64))
            }
            _ => value.order == Order::Pooled,
        };
        if !to_vector {
            return Err(node_error(
                node,
                "reshapes to something other than [batch, values]".into(),
            ));
        }
        let flat = |order| Value {
            shape: Shape::Flat(len),
            order,
        };
        match (value.shape, value.order) {
            (Shape::Flat(_), _) => Ok((Vec::new(), value)),
            (Shape::Image(h, w, c), order) => {
                let order = match order {
                    Order::ChannelsFirst if h * w > 1 => Order::FlatChw(h, w, c),
                    _ => Order::Flat,
                };
                Ok((vec![Item::Layer(plain_layer("flatten"))], flat(order)))
            }
        }
    }

    fn gemm(&mut self, node: &proto::Node, value: Value) -> Translated {
        let unsupported = [("alpha", 1.0), ("beta", 1.0)]
            .iter()
            .any(|&(name, one)| float(node, name).is_some_and(|v| v != one));
        if unsupported || int(node, "transA").unwrap_or(0) != 0 {
            return Err(node_error(
                node,
                "scales or transposes its input (alpha, beta or transA); a dense layer computes \
                 x · W + b"
                    .into(),
            ));
        }
        let weight = self.weight_input(node, 1)?;
        let transposed = int(node, "transB").unwrap_or(0) != 0;
        let bias = match node.input.get(2).filter(|i| !i.is_empty()) {
            Some(_) => Some(self.input_constant(node, 2)?.values.clone()),
            None => None,
        };
        self.dense(node, value, weight, transposed, bias)
    }

    /// A dense layer of `weight` (`[in, out]`, or `[out, in]` if `transposed`), its rows put
    /// in constnet's flatten order.
    fn dense(
        &mut self,
        node: &proto::Node,
        value: Value,
        weight: Constant,
        transposed: bool,
        bias: Option<Vec<f32>>,
    ) -> Translated {
        let Shape::Flat(inputs) = value.shape else {
            return Err(node_error(
                node,
                "multiplies an image; flatten it first".into(),
            ));
        };
        let [rows, columns] = weight.dims[..] else {
            return Err(node_error(
                node,
                format!("has a weight of dimensions {:?}", weight.dims),
            ));
        };
        let (weight_in, units) = if transposed {
            (columns, rows)
        } else {
            (rows, columns)
        };
        if weight_in != inputs {
            return Err(node_error(
                node,
                format!("has a weight for {weight_in} inputs, but its input has {inputs} values"),
            ));
        }
        let bias = bias.unwrap_or_else(|| vec![0.0; units]);
        if bias.len() != units {
            return Err(node_error(
                node,
                format!("has {} biases for {units} units", bias.len()),
            ));
        }
        let chw = match value.order {
            Order::FlatChw(h, w, c) => Some((h, w, c)),
            _ => None,
        };
        let mut kernel = vec![0.0; inputs * units];
        for row in 0..inputs {
            // Row `row` of constnet's weight is the value at HWC position `row`, which the
            // model's weight holds at its CHW position.
            let source = match chw {
                Some((h, w, c)) => {
                    let (pixel, channel) = (row / c, row % c);
                    channel * h * w + pixel
                }
                None => row,
            };
            for unit in 0..units {
                kernel[row * units + unit] = if transposed {
                    weight.values[unit * inputs + source]
                } else {
                    weight.values[source * units + unit]
                };
            }
        }
        let layer = Layer {
            name: "dense",
            spec: format!("dense({units})"),
            kind: LayerKind::Dense { units },
            tensors: vec![
                ("weight", vec![inputs, units], kernel),
                ("bias", vec![units], bias),
            ],
        };
        let value = Value {
            shape: Shape::Flat(units),
            order: Order::Flat,
        };
        Ok((vec![Item::Layer(layer)], value))
    }

    fn upsample(&mut self, node: &proto::Node, value: Value) -> Translated {
        let (h, w, c) = image(node, value, Order::ChannelsFirst)?;
        let text = |name: &str, default: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .map_or(default.to_string(), |a| {
                    String::from_utf8_lossy(&a.s).into_owned()
                })
        };
        let mode = text("mode", "nearest");
        let transform = text("coordinate_transformation_mode", "half_pixel");
        let rounding = text("nearest_mode", "round_prefer_floor");
        let repeats = matches!(
            (transform.as_str(), rounding.as_str()),
            ("half_pixel", "round_prefer_floor") | ("asymmetric", "floor")
        );
        let scales_at = if node.op_type == "Upsample" { 1 } else { 2 };
        let scales = self
            .input_constant(node, scales_at)
            .ok()
            .map(|s| s.values.clone());
        let factor = match scales.as_deref() {
            Some([1.0, 1.0, f, g]) if f == g && *f >= 1.0 && f.fract() == 0.0 => Some(*f as usize),
            _ => None,
        };
        let (true, Some(factor)) = (mode == "nearest" && repeats, factor) else {
            return Err(node_error(
                node,
                "is not a nearest-neighbour resize by one whole factor for height and width, \
                 which `upsample` is"
                    .into(),
            ));
        };
        let layer = Layer {
            name: "upsample",
            spec: format!("upsample({factor})"),
            kind: LayerKind::Upsample { factor },
            tensors: Vec::new(),
        };
        let shape = output_shape(node, LayerKind::Upsample { factor }, Shape::Image(h, w, c))?;
        let value = Value {
            shape,
            order: Order::ChannelsFirst,
        };
        Ok((vec![Item::Layer(layer)], value))
    }

    fn input_constant(&self, node: &proto::Node, input: usize) -> Result<Constant, ImportError> {
        let name = node
            .input
            .get(input)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| node_error(node, format!("has no input {input}")))?;
        self.model.constant(name).cloned().ok_or_else(|| {
            node_error(
                node,
                format!("reads `{name}` as a weight, but it is computed, not a constant"),
            )
        })
    }

    /// Input `input` of `node`, a constant matrix.
    fn weight_input(&self, node: &proto::Node, input: usize) -> Result<Constant, ImportError> {
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
    fn bias_input(&self, add: &proto::Node) -> Result<Option<Vec<f32>>, ImportError> {
        let constant = add
            .input
            .iter()
            .find_map(|input| self.model.constant(input))
            .ok_or_else(|| node_error(add, "adds no constant bias".into()))?;
        Ok(Some(constant.values.clone()))
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

/// An element-wise op keeps its input's shape and layout.
fn same_value(_node: &proto::Node, value: Value) -> Result<Value, ImportError> {
    Ok(value)
}

/// `(h, w, c)` of an image in `order`, or the node's error.
fn image(
    node: &proto::Node,
    value: Value,
    order: Order,
) -> Result<(usize, usize, usize), ImportError> {
    match value.shape {
        Shape::Image(h, w, c) if value.order == order => Ok((h, w, c)),
        Shape::Image(..) => Err(node_error(
            node,
            "reads an image in NHWC order; ONNX's convolutions and poolings read NCHW".into(),
        )),
        Shape::Flat(n) => Err(node_error(
            node,
            format!("needs an image, but receives a vector of {n}"),
        )),
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

/// A `Transpose` between NCHW and NHWC changes only the order a value is tracked in.
fn transpose(node: &proto::Node, value: Value) -> Result<Value, ImportError> {
    let perm = ints(node, "perm");
    let order = match (value.order, perm.as_deref()) {
        (Order::ChannelsFirst, Some([0, 2, 3, 1])) => Order::ChannelsLast,
        (Order::ChannelsLast, Some([0, 3, 1, 2])) => Order::ChannelsFirst,
        _ => {
            return Err(node_error(
                node,
                format!(
                    "permutes axes {perm:?} of a value laid out {:?}; import follows only \
                     NCHW ↔ NHWC",
                    value.order
                ),
            ));
        }
    };
    Ok(Value { order, ..value })
}

/// A convolution's or pooling's window, as `network!` writes it.
struct Window {
    size: usize,
    stride: usize,
    padding: Padding,
}

impl Window {
    /// The `stride` and `padding` options as the grammar's entries declare them.
    fn arguments(&self) -> Vec<Option<ArgValue>> {
        vec![
            Some(ArgValue::Int(self.stride)),
            Some(ArgValue::Padding(self.padding)),
        ]
    }

    /// `, stride = s, padding = p` where they differ from the layer's defaults.
    fn options(&self, default_stride: usize) -> String {
        let padding = match self.padding {
            Padding::Valid => String::new(),
            padding => format!(", padding = {padding}"),
        };
        format!("{}{padding}", stride_text(self.stride, default_stride))
    }
}

fn stride_text(stride: usize, default: usize) -> String {
    if stride == default {
        String::new()
    } else {
        format!(", stride = {stride}")
    }
}

/// A node's square window of `kh` x `kw` with its strides, pads and dilations.
fn square_window(node: &proto::Node, kh: usize, kw: usize) -> Result<Window, ImportError> {
    if kh != kw || kh == 0 {
        return Err(node_error(
            node,
            format!("has a {kh}x{kw} window; `network!` windows are square"),
        ));
    }
    let strides = ints(node, "strides").unwrap_or(vec![1, 1]);
    let stride = match strides[..] {
        [s, t] if s == t && s >= 1 => s as usize,
        _ => {
            return Err(node_error(
                node,
                format!("has strides {strides:?}; they must be equal"),
            ));
        }
    };
    if ints(node, "dilations").is_some_and(|d| d.iter().any(|&d| d != 1)) {
        return Err(node_error(
            node,
            "is dilated; `network!` windows are not".into(),
        ));
    }
    let auto_pad = node
        .attribute
        .iter()
        .find(|a| a.name == "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned());
    let padding = match auto_pad.as_deref() {
        None | Some("NOTSET") => explicit_pads(node)?,
        Some("VALID") => Padding::Valid,
        Some("SAME_UPPER") => Padding::Same,
        Some(other) => {
            return Err(node_error(
                node,
                format!("pads {other}; import reads NOTSET, VALID and SAME_UPPER"),
            ));
        }
    };
    Ok(Window {
        size: kh,
        stride,
        padding,
    })
}

/// The `pads` attribute, `[top, left, bottom, right]` in ONNX.
fn explicit_pads(node: &proto::Node) -> Result<Padding, ImportError> {
    let Some(pads) = ints(node, "pads") else {
        return Ok(Padding::Valid);
    };
    let [top, left, bottom, right] = pads[..] else {
        return Err(node_error(
            node,
            format!("has pads {pads:?}; a 2-D window has four"),
        ));
    };
    let pad = |p: i64| {
        usize::try_from(p).map_err(|_| node_error(node, format!("has a negative pad {p}")))
    };
    let pads = Pads {
        top: pad(top)?,
        bottom: pad(bottom)?,
        left: pad(left)?,
        right: pad(right)?,
    };
    Ok(if pads.is_zero() {
        Padding::Valid
    } else {
        Padding::Explicit(pads)
    })
}

/// An OIHW kernel as constnet's `[k, k, in, out]`.
fn conv_kernel(oihw: &[f32], filters: usize, channels: usize, k: usize) -> Vec<f32> {
    let mut kernel = vec![0.0; oihw.len()];
    for o in 0..filters {
        for i in 0..channels {
            for y in 0..k {
                for x in 0..k {
                    kernel[((y * k + x) * channels + i) * filters + o] =
                        oihw[((o * channels + i) * k + y) * k + x];
                }
            }
        }
    }
    kernel
}

/// A `[c, 1, k, k]` depthwise kernel as constnet's `[k, k, c]`.
fn depthwise_kernel(c1kk: &[f32], channels: usize, k: usize) -> Vec<f32> {
    let mut kernel = vec![0.0; c1kk.len()];
    for c in 0..channels {
        for y in 0..k {
            for x in 0..k {
                kernel[(y * k + x) * channels + c] = c1kk[(c * k + y) * k + x];
            }
        }
    }
    kernel
}

/// An `ints` attribute.
fn ints(node: &proto::Node, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

/// An `int` attribute.
fn int(node: &proto::Node, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// A `float` attribute.
fn float(node: &proto::Node, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}
