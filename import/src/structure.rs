//! The shape of a model's graph as a layer list ([`Step`]s): a chain of nodes from the input to
//! the output, where the only join is an `Add` of a residual block, its branch and its shortcut
//! (the block's input, or a projection of it) meeting again. Found by walking back from the
//! output: each node's one data input leads to the node before it, and an `Add` of two data
//! inputs leads to the value both sides start from. A graph of any other shape (a value read
//! by two chains that never meet, a node reading two values outside a block) is refused with
//! the node at fault.

use std::collections::HashSet;

use crate::ImportError;
use crate::model::{Model, node_error};

/// One item of the layer list, in input-to-output order.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A node of one data input (its index in [`Model::nodes`]).
    Node(usize),
    /// `MatMul` by a constant, then `Add` of a constant: a dense layer.
    MatMulAdd {
        /// The `MatMul` node.
        matmul: usize,
        /// The `Add` node.
        add: usize,
    },
    /// `x · scale + shift` by constants, per channel (either may be left out): batch
    /// normalisation at inference, as tf2onnx writes it.
    Affine {
        /// The `Mul` node.
        mul: Option<usize>,
        /// The `Add` node.
        add: Option<usize>,
    },
    /// `x · (1 + erf(x / √2)) / 2`, as constnet and PyTorch export it: GELU.
    Gelu,
    /// `Mul(x, Sigmoid(x))`: swish.
    Swish {
        /// The `Mul` node.
        mul: usize,
    },
    /// A residual block: `body` applied to the block's input, added to the input or to its
    /// projection by the `shortcut` nodes.
    Block {
        /// The branch, from the block's input to the `Add`.
        body: Vec<Step>,
        /// The shortcut's nodes, in order (none for the identity).
        shortcut: Vec<usize>,
        /// The `Add` node.
        add: usize,
    },
}

/// The model's layer list, from its input to its output.
pub fn steps(model: &Model) -> Result<Vec<Step>, ImportError> {
    trace(model, &model.output, &model.input)
}

/// The steps that turn `start` into `value`.
fn trace(model: &Model, value: &str, start: &str) -> Result<Vec<Step>, ImportError> {
    let mut steps = Vec::new();
    let mut current = value.to_string();
    while current != start {
        let index = model.producer(&current).ok_or_else(|| {
            ImportError::Model(format!(
                "computes `{current}` from something other than its input `{start}`"
            ))
        })?;
        let node = &model.nodes[index];
        let inputs = data_inputs(model, index);
        let (step, before) = match (node.op_type.as_str(), inputs.as_slice()) {
            ("Add", [a, b]) => residual_block(model, index, a, b)?,
            ("Mul", [a, b]) => match gelu_input(model, index) {
                Some(x) => (Step::Gelu, x),
                None => swish(model, index, a, b)?,
            },
            ("Mul", [x]) => match gelu_input(model, index) {
                Some(input) => (Step::Gelu, input),
                None => (
                    Step::Affine {
                        mul: Some(index),
                        add: None,
                    },
                    x.clone(),
                ),
            },
            ("Add", [x]) => match (matmul_before(model, x), scale_before(model, x)) {
                (Some(matmul), _) => {
                    let before = data_inputs(model, matmul)[0].clone();
                    (Step::MatMulAdd { matmul, add: index }, before)
                }
                (None, Some(mul)) => {
                    let before = data_inputs(model, mul)[0].clone();
                    let (mul, add) = (Some(mul), Some(index));
                    (Step::Affine { mul, add }, before)
                }
                (None, None) => (
                    Step::Affine {
                        mul: None,
                        add: Some(index),
                    },
                    x.clone(),
                ),
            },
            (_, [x]) => (Step::Node(index), x.clone()),
            (_, inputs) => {
                return Err(node_error(
                    node,
                    format!(
                        "reads {} values that are not constants; a layer reads one, and only an \
                         `Add` ending a residual block joins two",
                        inputs.len()
                    ),
                ));
            }
        };
        steps.push(step);
        current = before;
    }
    steps.reverse();
    Ok(steps)
}

/// The inputs of node `index` that are not constants. A `Reshape`'s target shape is read as
/// a constant even when the graph computes it from shapes: the translation evaluates it.
fn data_inputs(model: &Model, index: usize) -> Vec<String> {
    let node = &model.nodes[index];
    let inputs = if node.op_type == "Reshape" {
        &node.input[..node.input.len().min(1)]
    } else {
        &node.input[..]
    };
    inputs
        .iter()
        .filter(|input| !input.is_empty() && model.constant(input).is_none())
        .cloned()
        .collect()
}

/// The `MatMul` by a constant that makes `value`, if one does.
fn matmul_before(model: &Model, value: &str) -> Option<usize> {
    let index = model.producer(value)?;
    let node = &model.nodes[index];
    (node.op_type == "MatMul" && data_inputs(model, index).len() == 1).then_some(index)
}

/// The `x` of GELU's nodes ending in the `Mul` node `index`, in either form exporters write:
/// `x · ((1 + erf(x · (1/√2))) · 0.5)` (constnet) or `(x · (1 + erf(x / √2))) · 0.5` (PyTorch).
fn gelu_input(model: &Model, index: usize) -> Option<String> {
    let halved_cdf = |cdf: &str| {
        let half = model.producer(cdf)?;
        let plus_one = single_input(model, half)?;
        let is_half = model.nodes[half].op_type == "Mul" && constant_is(model, half, 0.5);
        is_half.then(|| erf_input(model, &plus_one))?
    };
    product_of_input(model, index, halved_cdf).or_else(|| {
        let product = single_input(model, index)?;
        let is_half = model.nodes[index].op_type == "Mul" && constant_is(model, index, 0.5);
        let times = model.producer(&product).filter(|_| is_half)?;
        product_of_input(model, times, |plus_one| erf_input(model, plus_one))
    })
}

/// The `x` of the `Mul` node `index` of two values, `x` and one that `made_from` (given that
/// value) finds computed from `x`.
fn product_of_input(
    model: &Model,
    index: usize,
    made_from: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let [a, b] = <[String; 2]>::try_from(data_inputs(model, index)).ok()?;
    if model.nodes[index].op_type != "Mul" {
        return None;
    }
    [(a.clone(), b.clone()), (b, a)]
        .into_iter()
        .find(|(x, other)| made_from(other).as_ref() == Some(x))
        .map(|(x, _)| x)
}

/// The one input of node `index` that is not a constant, if it has exactly one.
fn single_input(model: &Model, index: usize) -> Option<String> {
    let [input] = <[String; 1]>::try_from(data_inputs(model, index)).ok()?;
    Some(input)
}

/// The `x` of `1 + erf(x · (1/√2))` or `1 + erf(x / √2)` making `value`.
fn erf_input(model: &Model, value: &str) -> Option<String> {
    let add = model.producer(value)?;
    let erf_out = single_input(model, add)?;
    if model.nodes[add].op_type != "Add" || !constant_is(model, add, 1.0) {
        return None;
    }
    let erf = model.producer(&erf_out)?;
    let scale = model.producer(&single_input(model, erf)?)?;
    let x = single_input(model, scale)?;
    let scales = match model.nodes[scale].op_type.as_str() {
        "Mul" => constant_is(model, scale, std::f32::consts::FRAC_1_SQRT_2),
        "Div" => constant_is(model, scale, std::f32::consts::SQRT_2),
        _ => false,
    };
    (model.nodes[erf].op_type == "Erf" && scales).then_some(x)
}

/// Whether node `index` reads a one-value constant within 1e-6 of `value`.
fn constant_is(model: &Model, index: usize, value: f32) -> bool {
    model.nodes[index].input.iter().any(|input| {
        model
            .constant(input)
            .is_some_and(|c| matches!(c.values[..], [v] if (v - value).abs() <= 1e-6))
    })
}

/// The `Mul` by a constant that makes `value`, if one does.
fn scale_before(model: &Model, value: &str) -> Option<usize> {
    let index = model.producer(value)?;
    let node = &model.nodes[index];
    (node.op_type == "Mul" && data_inputs(model, index).len() == 1).then_some(index)
}

/// `Mul(x, Sigmoid(x))` (either order) at node `mul`: swish, and `x`.
fn swish(model: &Model, mul: usize, a: &str, b: &str) -> Result<(Step, String), ImportError> {
    for (x, s) in [(a, b), (b, a)] {
        let Some(sigmoid) = model.producer(s) else {
            continue;
        };
        let node = &model.nodes[sigmoid];
        if node.op_type == "Sigmoid" && node.input.first().map(String::as_str) == Some(x) {
            return Ok((Step::Swish { mul }, x.to_string()));
        }
    }
    Err(node_error(
        &model.nodes[mul],
        "multiplies two values, which a layer list has only as `x · sigmoid(x)` (swish)".into(),
    ))
}

/// The residual block ending in the `Add` node `add` of `a` and `b`, and its input.
fn residual_block(
    model: &Model,
    add: usize,
    a: &str,
    b: &str,
) -> Result<(Step, String), ImportError> {
    for (branch, skip) in [(a, b), (b, a)] {
        let ancestors = ancestors(model, branch);
        if let Some((input, shortcut)) = shortcut_path(model, skip, &ancestors) {
            let body = trace(model, branch, &input)?;
            if body.is_empty() {
                continue;
            }
            let step = Step::Block {
                body,
                shortcut,
                add,
            };
            return Ok((step, input));
        }
    }
    Err(node_error(
        &model.nodes[add],
        "adds two values that do not start from one block input (through a projection of at \
         most a convolution and a batch normalisation); a layer list joins values only at the \
         end of a residual block"
            .into(),
    ))
}

/// Every value `value` is computed from, itself included.
fn ancestors<'m>(model: &'m Model, value: &'m str) -> HashSet<&'m str> {
    let mut seen = HashSet::new();
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        if !seen.insert(value) {
            continue;
        }
        if let Some(index) = model.producer(value) {
            let node = &model.nodes[index];
            pending.extend(
                node.input
                    .iter()
                    .filter(|i| !i.is_empty() && model.constant(i).is_none())
                    .map(String::as_str),
            );
        }
    }
    seen
}

/// Most nodes a shortcut's projection has: a convolution and a batch normalisation.
const MAX_SHORTCUT_NODES: usize = 2;

/// Walks back from `skip` through nodes of one data input until a value of `ancestors` (the
/// branch's): that value is the block's input, and the nodes walked its shortcut.
fn shortcut_path(
    model: &Model,
    skip: &str,
    ancestors: &HashSet<&str>,
) -> Option<(String, Vec<usize>)> {
    let mut nodes = Vec::new();
    let mut current = skip.to_string();
    loop {
        if ancestors.contains(current.as_str()) {
            nodes.reverse();
            return Some((current, nodes));
        }
        if nodes.len() == MAX_SHORTCUT_NODES {
            return None;
        }
        let index = model.producer(&current)?;
        let input = single_input(model, index)?;
        nodes.push(index);
        current = input;
    }
}
