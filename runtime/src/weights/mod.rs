//! Weight files in the safetensors format: one `F32` tensor per parameter and buffer, named as
//! the network names them (`conv1.weight`, `batchnorm1.running_mean`, ...), with the layer's
//! dimensions.
//!
//! Saving writes a temporary file beside the destination, syncs it and renames it over the
//! destination, so a crash leaves either the old file or the new one, never a torn one. Loading
//! checks every tensor first and changes nothing unless all match, listing every mismatch.
//! [`load_pytorch`] reads weights saved from PyTorch, converting its layouts.

mod pytorch;

pub use pytorch::{TorchNames, load_pytorch};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::layers::{Layer, TensorVisitor};

/// What can go wrong saving or loading weights; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file.
    #[error("{}: not a valid safetensors file: {problem}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// What the parser said.
        problem: String,
    },
    /// The file's tensors do not fit the network; nothing was loaded.
    #[error("{}: the weights do not fit this network (nothing was loaded):\n  - {}", file.display(), problems.join("\n  - "))]
    Mismatch {
        /// The file.
        file: PathBuf,
        /// One line per missing, extra or misshapen tensor.
        problems: Vec<String>,
    },
}

/// Visits every tensor of `network` that a weight file holds: parameters, then buffers.
fn visit_tensors<L: Layer>(network: &L, visit: &mut TensorVisitor<'_>) {
    network.visit_params(visit);
    network.visit_buffers(visit);
}

/// Saves every parameter and buffer of `network` to `path`, atomically.
pub fn save<L: Layer>(network: &L, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let io = |source| WeightsError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    visit_tensors(network, &mut |name, dims, values| {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((name.to_string(), dims.to_vec(), data));
    });
    let views = bytes.iter().map(|(name, dims, data)| {
        let view = TensorView::new(Dtype::F32, dims.clone(), data)
            .expect("dimensions match the data they describe");
        (name.as_str(), view)
    });
    let serialized = safetensors::serialize(views, None).map_err(|e| WeightsError::Format {
        file: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    crate::files::write_atomically(path, &serialized).map_err(io)
}

/// The largest safetensors header accepted, as the `safetensors` crate bounds it (100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Loads every parameter and buffer of `network` from `path`. If any tensor is missing, extra,
/// of another type or of another shape, nothing is changed and the error lists each problem.
///
/// A file longer than this network's tensors and the largest header is refused before it is
/// read, so memory stays within the network's own size (plus the header) whatever the file.
pub fn load<L: Layer>(network: &mut L, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = read_bounded(path, 4 * (L::PARAMS + L::BUFFERS) as u64)?;
    let file = parse(path, &bytes)?;
    let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
    visit_tensors(network, &mut |name, dims, _| {
        expected.push((name.to_string(), dims.to_vec()))
    });
    let mut problems = Vec::new();
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    for (name, dims) in &expected {
        match file.tensor(name) {
            Err(_) => problems.push(format!("`{name}` {dims:?} is missing")),
            Ok(view) if view.dtype() != Dtype::F32 => {
                problems.push(format!("`{name}` is {:?}, not F32", view.dtype()))
            }
            Ok(view) if view.shape() != dims.as_slice() => problems.push(format!(
                "`{name}` is {:?} in the file but {dims:?} in this network",
                view.shape()
            )),
            Ok(view) => {
                values.insert(name.clone(), f32_values(&view));
            }
        }
    }
    let mut extra: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|name| !expected.iter().any(|(n, _)| n == name))
        .collect();
    extra.sort_unstable();
    problems.extend(
        extra
            .iter()
            .map(|name| format!("`{name}` is not a tensor of this network")),
    );
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch {
            file: path.to_path_buf(),
            problems,
        });
    }
    let mut copy = |name: &str, target: &mut [f32]| target.copy_from_slice(&values[name]);
    network.visit_params_mut(&mut copy);
    network.visit_buffers_mut(&mut copy);
    Ok(())
}

/// Reads `path` whole, unless it is longer than `tensor_bytes` of tensors and the largest
/// header allow: memory stays within the network's own size (plus the header) whatever the file.
fn read_bounded(path: &Path, tensor_bytes: u64) -> Result<Vec<u8>, WeightsError> {
    let io = |source| WeightsError::Io {
        file: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > tensor_bytes + 8 + MAX_HEADER_BYTES {
        return Err(WeightsError::Format {
            file: path.to_path_buf(),
            problem: format!(
                "the file is {size} bytes, more than this network's {tensor_bytes} bytes of \
                 tensors and the largest header allow"
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// The safetensors file in `bytes`, read from `path`.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, WeightsError> {
    SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format {
        file: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// The values of an `F32` tensor (safetensors stores them little-endian).
fn f32_values(view: &TensorView<'_>) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
