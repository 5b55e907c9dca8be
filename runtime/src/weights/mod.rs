//! Weights in the safetensors format, in files or in memory: one `F32` tensor per parameter
//! and buffer, named as the network names them (`conv1.weight`, `batchnorm1.running_mean`,
//! ...), with the layer's dimensions. [`save`] and [`load`] take a file; [`to_bytes`] and
//! [`from_bytes`] the same bytes in memory, for weights built into a program with
//! `include_bytes!`.
//!
//! Saving writes a temporary file beside the destination, syncs it and renames it over the
//! destination, so a crash leaves either the old file or the new one, never a torn one. Loading
//! checks every tensor first and changes nothing unless all match, listing every mismatch.
//! [`load_pytorch`] reads weights saved from PyTorch, converting its layouts.

mod pytorch;

pub use pytorch::{TorchNames, load_pytorch};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::layers::{Layer, TensorVisitor};

/// Where weights were read from or written to, as an error names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A weight file.
    File(PathBuf),
    /// Bytes in memory ([`to_bytes`], [`from_bytes`]).
    Bytes,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Bytes => f.write_str("the weight bytes"),
        }
    }
}

impl From<&Path> for Origin {
    fn from(path: &Path) -> Self {
        Origin::File(path.to_path_buf())
    }
}

/// What can go wrong saving or loading weights; every variant names the file (or the bytes).
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("{origin}: {source}")]
    Io {
        /// The file.
        origin: Origin,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file or bytes are not readable safetensors.
    #[error("{origin}: not a valid safetensors file: {problem}")]
    Format {
        /// The file or the bytes.
        origin: Origin,
        /// What the parser said.
        problem: String,
    },
    /// The tensors do not fit the network; nothing was loaded.
    #[error("{origin}: the weights do not fit this network (nothing was loaded):\n  - {}", problems.join("\n  - "))]
    Mismatch {
        /// The file or the bytes.
        origin: Origin,
        /// One line per missing, extra or misshapen tensor.
        problems: Vec<String>,
    },
}

/// Visits every tensor of `network` that a weight file holds: parameters, then buffers.
fn visit_tensors<L: Layer>(network: &L, visit: &mut TensorVisitor<'_>) {
    network.visit_params(visit);
    network.visit_buffers(visit);
}

/// Every parameter and buffer of `network`, as the bytes of a safetensors file.
///
/// # Errors
/// [`WeightsError::Format`] if the serialiser refuses the tensors (it never has for a
/// network's own).
pub fn to_bytes<L: Layer>(network: &L) -> Result<Vec<u8>, WeightsError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    visit_tensors(network, &mut |name, dims, values| {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name.to_string(), dims.to_vec(), data));
    });
    let views = tensors.iter().map(|(name, dims, data)| {
        let view = TensorView::new(Dtype::F32, dims.clone(), data)
            .expect("dimensions match the data they describe");
        (name.as_str(), view)
    });
    safetensors::serialize(views, None).map_err(|e| WeightsError::Format {
        origin: Origin::Bytes,
        problem: e.to_string(),
    })
}

/// Saves every parameter and buffer of `network` to `path`, atomically.
///
/// # Errors
/// [`WeightsError::Io`] naming the file if it cannot be written.
pub fn save<L: Layer>(network: &L, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = to_bytes(network)?;
    crate::files::write_atomically(path, &bytes).map_err(|source| WeightsError::Io {
        origin: path.into(),
        source,
    })
}

/// The largest safetensors header accepted, as the `safetensors` crate bounds it (100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Loads every parameter and buffer of `network` from `path`. If any tensor is missing, extra,
/// of another type or of another shape, nothing is changed and the error lists each problem.
///
/// A file longer than this network's tensors and the largest header is refused before it is
/// read, so memory stays within the network's own size (plus the header) whatever the file.
///
/// # Errors
/// [`WeightsError`] naming the file: it cannot be read, is not safetensors, or does not fit.
pub fn load<L: Layer>(network: &mut L, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = read_bounded(path, 4 * (L::PARAMS + L::BUFFERS) as u64)?;
    load_checked(network, &bytes, path.into())
}

/// Loads every parameter and buffer of `network` from the bytes of a safetensors file (what
/// [`to_bytes`] or [`save`] wrote), checked as [`load`] checks a file: nothing changes unless
/// every tensor fits.
///
/// ```
/// use constnet_runtime::init::seeded_rng;
/// use constnet_runtime::layers::Dense;
/// use constnet_runtime::weights;
///
/// let trained = Dense::<4, 2>::new(&mut seeded_rng(1));
/// let bytes = weights::to_bytes(&trained)?; // or include_bytes!("net.safetensors")
/// let mut served = Dense::<4, 2>::new(&mut seeded_rng(2));
/// weights::from_bytes(&mut served, &bytes)?;
/// assert_eq!(served.params.weight, trained.params.weight);
/// assert!(weights::from_bytes(&mut Dense::<3, 2>::new(&mut seeded_rng(3)), &bytes).is_err());
/// # Ok::<(), weights::WeightsError>(())
/// ```
///
/// # Errors
/// [`WeightsError::Format`] if the bytes are not safetensors, [`WeightsError::Mismatch`] if
/// their tensors do not fit.
pub fn from_bytes<L: Layer>(network: &mut L, bytes: &[u8]) -> Result<(), WeightsError> {
    load_checked(network, bytes, Origin::Bytes)
}

/// Loads `network` from the safetensors `bytes` read from `origin`, after checking every tensor.
fn load_checked<L: Layer>(
    network: &mut L,
    bytes: &[u8],
    origin: Origin,
) -> Result<(), WeightsError> {
    let file = parse(&origin, bytes)?;
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
        return Err(WeightsError::Mismatch { origin, problems });
    }
    let mut copy = |name: &str, target: &mut [f32]| target.copy_from_slice(&values[name]);
    network.visit_params_mut(&mut copy);
    network.visit_buffers_mut(&mut copy);
    Ok(())
}

/// Reads `path` whole, unless it is longer than `tensor_bytes` of tensors and the largest
/// header allow: memory stays within the network's own size (plus the header) whatever the file.
pub(crate) fn read_bounded(path: &Path, tensor_bytes: u64) -> Result<Vec<u8>, WeightsError> {
    let io = |source| WeightsError::Io {
        origin: path.into(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > tensor_bytes + 8 + MAX_HEADER_BYTES {
        return Err(WeightsError::Format {
            origin: path.into(),
            problem: format!(
                "the file is {size} bytes, more than this network's {tensor_bytes} bytes of \
                 tensors and the largest header allow"
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// The safetensors file in `bytes`, read from `origin`.
pub(crate) fn parse<'a>(origin: &Origin, bytes: &'a [u8]) -> Result<SafeTensors<'a>, WeightsError> {
    SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format {
        origin: origin.clone(),
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
