//! An ONNX model as read ([`Model`]): its nodes in order, its constants by name, the one data
//! input with its shape, and the one output. Reading checks what later steps rely on: the opset,
//! that every node reads only values made before it (so the graph has no cycle), that every
//! constant holds as many values as its dimensions say. Nothing is allocated beyond the size of
//! the file: a tensor's values are decoded only after its dimensions are checked against the
//! bytes it holds.

use std::collections::HashMap;

use constnet_onnx_proto as proto;
use proto::Message;

use crate::ImportError;

/// The oldest default-domain opset imported: 13 fixed the attributes and inputs read here
/// (`Squeeze`'s axes as an input, `Softmax` on one axis).
pub const MIN_OPSET: i64 = 13;

/// A constant tensor: its dimensions and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    /// Its dimensions.
    pub dims: Vec<usize>,
    /// Its values, as floats (integer tensors converted).
    pub values: Vec<f32>,
    /// Its values as integers, for integer tensors (shapes, axes).
    pub ints: Vec<i64>,
}

/// A model's graph as read.
pub struct Model {
    /// The nodes, in an order where every node comes after the nodes whose outputs it reads.
    pub nodes: Vec<proto::Node>,
    /// Initializers and `Constant` nodes' values, by name.
    pub constants: HashMap<String, Constant>,
    /// The data input's name.
    pub input: String,
    /// Its dimensions after the batch (a batch dimension of any size or name is dropped).
    pub input_dims: Vec<usize>,
    /// The output's name.
    pub output: String,
    /// The node that makes each value, by index.
    producers: HashMap<String, usize>,
}

/// Most values a declared dimension list may describe (a model with a larger tensor is refused
/// before anything is allocated for it).
const MAX_DIMENSION: usize = 1 << 31;

impl Model {
    /// Reads a model from the bytes of an ONNX file.
    pub fn read(bytes: &[u8]) -> Result<Self, ImportError> {
        let model = proto::Model::decode(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
        check_opset(&model)?;
        let graph = model
            .graph
            .ok_or_else(|| ImportError::Model("has no graph".into()))?;
        let mut constants = HashMap::new();
        for tensor in &graph.initializer {
            constants.insert(tensor.name.clone(), constant(tensor)?);
        }
        let mut nodes = Vec::with_capacity(graph.node.len());
        for node in graph.node {
            if node.op_type == "Constant" {
                let (name, value) = constant_node(&node)?;
                constants.insert(name, value);
            } else {
                nodes.push(node);
            }
        }
        let (input, input_dims) = data_input(&graph.input, &constants)?;
        let output = match graph.output.as_slice() {
            [output] => output.name.clone(),
            outputs => {
                return Err(ImportError::Model(format!(
                    "has {} outputs; a network has one",
                    outputs.len()
                )));
            }
        };
        let mut model = Model {
            nodes,
            constants,
            input,
            input_dims,
            output,
            producers: HashMap::new(),
        };
        model.producers = model.check_order()?;
        Ok(model)
    }

    /// Checks that every node reads only the input, constants and earlier nodes' outputs, and
    /// that no value is made twice: then the graph has no cycle, and following a value back to
    /// the node that made it always ends. Returns the node that makes each value.
    fn check_order(&self) -> Result<HashMap<String, usize>, ImportError> {
        let mut made: HashMap<&str, usize> = HashMap::new();
        for (index, node) in self.nodes.iter().enumerate() {
            for input in node.input.iter().filter(|i| !i.is_empty()) {
                let known = made.contains_key(input.as_str())
                    || self.constants.contains_key(input)
                    || *input == self.input;
                if !known {
                    return Err(node_error(
                        node,
                        format!(
                            "reads `{input}`, which no earlier node makes: the graph is out of \
                             order, has a cycle, or reads a value it does not define"
                        ),
                    ));
                }
            }
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                let defined = self.constants.contains_key(output) || *output == self.input;
                if made.insert(output, index).is_some() || defined {
                    return Err(node_error(node, format!("makes `{output}` a second time")));
                }
            }
        }
        if !made.contains_key(self.output.as_str()) && self.output != self.input {
            return Err(ImportError::Model(format!(
                "declares the output `{}`, which no node makes",
                self.output
            )));
        }
        Ok(made
            .into_iter()
            .map(|(value, node)| (value.to_string(), node))
            .collect())
    }

    /// The node that makes `value`, by index, if a node does.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.producers.get(value).copied()
    }

    /// The constant named `name`.
    pub fn constant(&self, name: &str) -> Option<&Constant> {
        self.constants.get(name)
    }
}

/// The error of `node`, named by its name (or its first output's).
pub fn node_error(node: &proto::Node, problem: String) -> ImportError {
    ImportError::Node {
        node: node_name(node),
        op: node.op_type.clone(),
        problem,
    }
}

/// A node's name, or its first output's where it has none.
pub fn node_name(node: &proto::Node) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

fn check_opset(model: &proto::Model) -> Result<(), ImportError> {
    let default = model
        .opset_import
        .iter()
        .find(|set| set.domain.is_empty() || set.domain == "ai.onnx");
    match default {
        Some(set) if set.version >= MIN_OPSET => Ok(()),
        Some(set) => Err(ImportError::Model(format!(
            "uses opset {}; import reads opset {MIN_OPSET} or newer (upgrade it with \
             onnx.version_converter)",
            set.version
        ))),
        None => Err(ImportError::Model(
            "names no opset of the default domain".into(),
        )),
    }
}

/// The one graph input that is not a constant, and its dimensions after the batch.
fn data_input(
    inputs: &[proto::ValueInfo],
    constants: &HashMap<String, Constant>,
) -> Result<(String, Vec<usize>), ImportError> {
    let data: Vec<&proto::ValueInfo> = inputs
        .iter()
        .filter(|input| !constants.contains_key(&input.name))
        .collect();
    let [input] = data.as_slice() else {
        return Err(ImportError::Model(format!(
            "has {} data inputs; a network has one",
            data.len()
        )));
    };
    let dims = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|shape| shape.dim.as_slice())
        .unwrap_or_default();
    let problem = |why: &str| {
        ImportError::Model(format!(
            "input `{}` {why}: a network's input is [batch, values], [batch, channels, height, \
             width] or [batch, height, width, channels], with every size but the batch fixed",
            input.name
        ))
    };
    let Some((_batch, rest)) = dims.split_first() else {
        return Err(problem("has no shape"));
    };
    if !(1..=3).contains(&rest.len()) || rest.len() == 2 {
        return Err(problem(&format!("has {} dimensions", dims.len())));
    }
    let sizes = rest
        .iter()
        .map(|dim| match dim.dim_value {
            Some(size) if size > 0 && (size as u64) < MAX_DIMENSION as u64 => Ok(size as usize),
            _ => Err(problem("has a size that is not a fixed positive number")),
        })
        .collect::<Result<_, _>>()?;
    Ok((input.name.clone(), sizes))
}

/// The value of a `Constant` node, by its output's name.
fn constant_node(node: &proto::Node) -> Result<(String, Constant), ImportError> {
    let value = node
        .attribute
        .iter()
        .find(|a| a.name == "value")
        .and_then(|a| a.t.as_ref())
        .ok_or_else(|| node_error(node, "holds no tensor `value`".into()))?;
    let name = node
        .output
        .first()
        .ok_or_else(|| node_error(node, "has no output".into()))?;
    Ok((name.clone(), constant(value)?))
}

/// A tensor's dimensions and values, checked against each other before the values are decoded.
fn constant(tensor: &proto::Tensor) -> Result<Constant, ImportError> {
    let problem = |problem: String| ImportError::Tensor {
        tensor: tensor.name.clone(),
        problem,
    };
    let dims = tensor
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d < MAX_DIMENSION))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| problem(format!("has dimensions {:?}", tensor.dims)))?;
    let len = dims
        .iter()
        .try_fold(1usize, |len, &d| {
            len.checked_mul(d).filter(|&l| l < MAX_DIMENSION)
        })
        .ok_or_else(|| problem(format!("has dimensions {:?}, too many values", tensor.dims)))?;
    let (values, ints) = match tensor.data_type {
        proto::FLOAT => (float_values(tensor, len).map_err(problem)?, Vec::new()),
        proto::INT64 | proto::INT32 => {
            let ints = int_values(tensor, len).map_err(problem)?;
            (ints.iter().map(|&i| i as f32).collect(), ints)
        }
        other => {
            return Err(problem(format!(
                "has data type {other}; import reads float (1), int32 (6) and int64 (7) tensors"
            )));
        }
    };
    Ok(Constant { dims, values, ints })
}

/// The `len` values of a float tensor, from `float_data` or `raw_data`.
fn float_values(tensor: &proto::Tensor, len: usize) -> Result<Vec<f32>, String> {
    if !tensor.float_data.is_empty() {
        return exactly(tensor.float_data.clone(), len);
    }
    if tensor.raw_data.len() != len * 4 {
        return Err(format!(
            "holds {} bytes for {len} floats",
            tensor.raw_data.len()
        ));
    }
    Ok(tensor
        .raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The `len` values of an int64 or int32 tensor, from `int64_data`, `int32_data` or
/// `raw_data`.
fn int_values(tensor: &proto::Tensor, len: usize) -> Result<Vec<i64>, String> {
    let wide = tensor.data_type == proto::INT64;
    if wide && !tensor.int64_data.is_empty() {
        return exactly(tensor.int64_data.clone(), len);
    }
    if !wide && !tensor.int32_data.is_empty() {
        return exactly(
            tensor.int32_data.iter().map(|&i| i64::from(i)).collect(),
            len,
        );
    }
    let size = if wide { 8 } else { 4 };
    if tensor.raw_data.len() != len * size {
        return Err(format!(
            "holds {} bytes for {len} integers of {size} bytes",
            tensor.raw_data.len()
        ));
    }
    Ok(tensor
        .raw_data
        .chunks_exact(size)
        .map(|b| match *b {
            [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
            _ => i64::from_le_bytes(b.try_into().expect("chunks of 8")),
        })
        .collect())
}

fn exactly<T>(values: Vec<T>, len: usize) -> Result<Vec<T>, String> {
    if values.len() == len {
        Ok(values)
    } else {
        Err(format!(
            "holds {} values where its dimensions say {len}",
            values.len()
        ))
    }
}
