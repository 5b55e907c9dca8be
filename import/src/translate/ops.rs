//! Each ONNX operator's translation into a layer of the list, with its weights moved to
//! constnet's layouts.

use constnet_catalogue::{ArgValue, LayerKind, Shape};
use constnet_onnx_proto as proto;

use super::layout::{Order, Value, conv_kernel, depthwise_kernel, image};
use super::window::square_window;
use super::{Item, Layer, Translated, Translator, checked_kind, number, output_shape, plain_layer};
use crate::attributes::{float, int, ints, text};
use crate::model::{Constant, node_error};
use crate::{ImportError, shapes};

impl Translator<'_> {
    pub(super) fn conv(&mut self, node: &proto::Node, value: Value) -> Translated {
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

    pub(super) fn pool(&mut self, node: &proto::Node, value: Value) -> Translated {
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

    pub(super) fn batchnorm(&mut self, node: &proto::Node, value: Value) -> Translated {
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
    pub(super) fn affine(
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

    pub(super) fn gelu(&mut self, node: &proto::Node, value: Value) -> Translated {
        let approximate = text(node, "approximate");
        if approximate.is_some_and(|a| a != "none") {
            return Err(node_error(
                node,
                "is the tanh approximation of GELU; `gelu` is the exact form".into(),
            ));
        }
        Ok((vec![Item::Layer(plain_layer("gelu"))], value))
    }

    pub(super) fn softmax(&mut self, node: &proto::Node, value: Value) -> Translated {
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
    pub(super) fn flatten(&mut self, node: &proto::Node, value: Value) -> Translated {
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

    pub(super) fn gemm(&mut self, node: &proto::Node, value: Value) -> Translated {
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
    pub(super) fn dense(
        &mut self,
        node: &proto::Node,
        value: Value,
        weight: &Constant,
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

    pub(super) fn upsample(&mut self, node: &proto::Node, value: Value) -> Translated {
        let (h, w, c) = image(node, value, Order::ChannelsFirst)?;
        let text = |name: &str, default: &str| text(node, name).unwrap_or(default.into());
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
}
