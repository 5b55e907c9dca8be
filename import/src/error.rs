//! What can go wrong when a model is imported ([`ImportError`]): each error names the file, the
//! node (and its operator) or the tensor at fault, and what was expected.

use std::path::PathBuf;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// The model as a whole is outside what can be imported (no graph, an old opset, several
    /// inputs or outputs, a graph that is not in order).
    #[error("the model {0}")]
    Model(String),
    /// A node whose operator, attributes or inputs have no equivalent in `network!`.
    #[error("node `{node}` ({op}): {problem}")]
    Node {
        /// The node's name (or its first output's, for a node without one).
        node: String,
        /// Its operator.
        op: String,
        /// Why it cannot be imported.
        problem: String,
    },
    /// A weight tensor that is missing or not what its node needs.
    #[error("tensor `{tensor}`: {problem}")]
    Tensor {
        /// The tensor's name.
        tensor: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The network name given is not a Rust type name.
    #[error("`{0}` is not a network name: use a Rust type name such as `Net` or `ResNet18`")]
    Name(String),
}
