//! How values are laid out: constnet's shape of a value beside the order ONNX keeps its elements
//! in ([`Order`], [`Value`]), how the model first reads its input (which decides whether an
//! image input is NCHW or NHWC), the `Transpose`s that only change that order, and kernels
//! moved from ONNX's layouts to constnet's.

use constnet_catalogue::Shape;
use constnet_onnx_proto as proto;

use crate::attributes::ints;
use crate::model::{Model, node_error};
use crate::structure::Step;
use crate::{ImportError, shapes};

/// How an ONNX value's elements are laid out, against constnet's view of the same value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Order {
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
pub(super) struct Value {
    pub(super) shape: Shape,
    pub(super) order: Order,
}

impl Value {
    /// Its dimensions in ONNX, the batch first.
    pub(super) fn onnx_dims(self) -> Vec<i64> {
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

/// How the model first reads its input, past element-wise steps.
#[derive(Debug, PartialEq)]
pub(super) enum FirstRead {
    /// A `Transpose` from NHWC to NCHW.
    FromNhwc,
    /// An operator that reads NCHW images (a convolution, a pooling, ...).
    AsNchw,
    /// As a sequence of values only (a flatten, a reshape): the layout is not the model's to say.
    AsValues,
}

pub(super) fn first_read(model: &Model, steps: &[Step]) -> FirstRead {
    first_read_of(model, steps).unwrap_or(FirstRead::AsValues)
}

/// [`first_read`], `None` where `steps` hold only element-wise steps.
pub(super) fn first_read_of(model: &Model, steps: &[Step]) -> Option<FirstRead> {
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
pub(super) fn input_value(model: &Model, steps: &[Step]) -> (Vec<usize>, Value) {
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

/// `(h, w, c)` of an image in `order`, or the node's error.
pub(super) fn image(
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

/// A `Transpose` between NCHW and NHWC changes only the order a value is tracked in.
pub(super) fn transpose(node: &proto::Node, value: Value) -> Result<Value, ImportError> {
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

/// An OIHW kernel as constnet's `[k, k, in, out]`.
pub(super) fn conv_kernel(oihw: &[f32], filters: usize, channels: usize, k: usize) -> Vec<f32> {
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
pub(super) fn depthwise_kernel(c1kk: &[f32], channels: usize, k: usize) -> Vec<f32> {
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
