//! A quantized network in safetensors, as [`crate::weights`] keeps an `f32` one: for each
//! convolution and dense layer its weights in signed bytes with the `f32` layer's dimensions
//! (`conv1.weight`, `I8`), their scale per output channel (`conv1.weight_scale`, `F32`) and its
//! bias in sum units (`conv1.bias`, `I32`); for each step that makes a new quantization (every
//! one but poolings) its output's scale and zero point (`conv1.output_scale`, `F32 [1]`;
//! `conv1.output_zero_point`, `U8 [1]`); and the input's (`input.scale`, `input.zero_point`).
//! A step is named by its first layer. Loading checks every tensor before it builds anything
//! and lists each problem.

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::build::StepParams;
use super::float::{FloatOp, FloatStep, FloatSteps};
use super::scheme::{Quantization, QuantizedWeights};
use super::{LinearParams, QuantizeError, Quantized};
use crate::network::Network;
use crate::weights::{self, Origin, WeightsError};

/// One tensor to write: name, type, dimensions, little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

impl<N: Network> Quantized<N> {
    /// The quantized network as the bytes of a safetensors file.
    ///
    /// # Errors
    /// [`QuantizeError::Weights`] if the serialiser refuses the tensors (it never has for a
    /// network's own).
    pub fn to_bytes(&self) -> Result<Vec<u8>, QuantizeError> {
        let mut entries = vec![
            scalar(
                "input.scale",
                Dtype::F32,
                self.input.scale.to_le_bytes().to_vec(),
            ),
            scalar("input.zero_point", Dtype::U8, vec![self.input.zero_point]),
        ];
        for step in &self.steps {
            if let Some(linear) = &step.linear {
                let dims = step_weight_dims(&step.op);
                let weight = linear.weights.values.iter().map(|&v| v as u8).collect();
                entries.push((format!("{}.weight", step.key), Dtype::I8, dims, weight));
                let scales = linear
                    .weights
                    .scales
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect();
                entries.push((
                    format!("{}.weight_scale", step.key),
                    Dtype::F32,
                    vec![linear.bias.len()],
                    scales,
                ));
                let bias = linear.bias.iter().flat_map(|b| b.to_le_bytes()).collect();
                entries.push((
                    format!("{}.bias", step.key),
                    Dtype::I32,
                    vec![linear.bias.len()],
                    bias,
                ));
            }
            if makes_quantization(&step.op) {
                entries.push(scalar(
                    &format!("{}.output_scale", step.key),
                    Dtype::F32,
                    step.output.scale.to_le_bytes().to_vec(),
                ));
                entries.push(scalar(
                    &format!("{}.output_zero_point", step.key),
                    Dtype::U8,
                    vec![step.output.zero_point],
                ));
            }
        }
        let views = entries.iter().map(|(name, dtype, dims, data)| {
            let view = TensorView::new(*dtype, dims.clone(), data)
                .expect("dimensions match the data they describe");
            (name.as_str(), view)
        });
        safetensors::serialize(views, None).map_err(|e| {
            QuantizeError::Weights(WeightsError::Format {
                origin: Origin::Bytes,
                problem: e.to_string(),
            })
        })
    }

    /// Saves the quantized network to `path`, atomically (a crash leaves the old file or the
    /// new one).
    ///
    /// # Errors
    /// [`QuantizeError::Weights`] naming the file if it cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), QuantizeError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        crate::files::write_atomically(path, &bytes).map_err(|source| {
            QuantizeError::Weights(WeightsError::Io {
                origin: path.into(),
                source,
            })
        })
    }

    /// Loads a quantized network saved by [`Quantized::save`] for network `N`.
    ///
    /// # Errors
    /// [`QuantizeError::Weights`] naming the file: it cannot be read, is not safetensors, or
    /// its tensors do not fit `N` (each problem listed); [`QuantizeError::Unsupported`] if `N`
    /// cannot be quantized.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, QuantizeError> {
        let path = path.as_ref();
        let float = FloatSteps::of(&N::new(0))?;
        let bytes = weights::read_bounded(path, expected_bytes(&float))?;
        Self::from_checked(&float, &bytes, path.into())
    }

    /// Loads a quantized network from the bytes [`Quantized::to_bytes`] wrote, checked as
    /// [`Quantized::load`] checks a file.
    ///
    /// # Errors
    /// As [`Quantized::load`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuantizeError> {
        let float = FloatSteps::of(&N::new(0))?;
        Self::from_checked(&float, bytes, Origin::Bytes)
    }

    /// The network of steps `float` from the safetensors `bytes` read from `origin`.
    fn from_checked(
        float: &FloatSteps,
        bytes: &[u8],
        origin: Origin,
    ) -> Result<Self, QuantizeError> {
        let file = weights::parse(&origin, bytes)?;
        let mut reader = Reader {
            file: &file,
            problems: Vec::new(),
            read: Vec::new(),
        };
        let input = reader.quantization("input.scale", "input.zero_point");
        let mut params = Vec::new();
        let mut step_input = input;
        for step in &float.steps {
            let key = step.name.split('+').next().unwrap_or_default();
            let output = if step.op.keeps_input_quantization() {
                step_input
            } else {
                reader.quantization(
                    &format!("{key}.output_scale"),
                    &format!("{key}.output_zero_point"),
                )
            };
            let linear = reader.linear(step, key);
            params.push(StepParams { output, linear });
            step_input = output;
        }
        let mut extra: Vec<&str> = file
            .names()
            .into_iter()
            .filter(|name| !reader.read.contains(&name.to_string()))
            .collect();
        extra.sort_unstable();
        reader.problems.extend(
            extra
                .iter()
                .map(|name| format!("`{name}` is not a tensor of this network")),
        );
        if !reader.problems.is_empty() {
            return Err(QuantizeError::Weights(WeightsError::Mismatch {
                origin,
                problems: reader.problems,
            }));
        }
        Self::build(float, input, params)
    }
}

/// A one-value tensor.
fn scalar(name: &str, dtype: Dtype, bytes: Vec<u8>) -> Entry {
    (name.to_string(), dtype, vec![1], bytes)
}

/// Whether an op makes its own quantization (every op but a pooling, which keeps its input's).
fn makes_quantization(op: &super::Op) -> bool {
    !matches!(op, super::Op::Pool { .. } | super::Op::GlobalPool { .. })
}

/// The `f32` layer's weight dimensions of a quantized convolution or dense layer.
fn step_weight_dims(op: &super::Op) -> Vec<usize> {
    match op {
        super::Op::Conv {
            window, weights, ..
        } => vec![window.size, window.size, window.input[2], weights.cols()],
        super::Op::Dense { weights, .. } => vec![weights.rows(), weights.cols()],
        _ => Vec::new(),
    }
}

/// The `f32` layer's weight dimensions: `[kernel, kernel, in, filters]` or `[in, units]`.
fn weight_dims(op: &FloatOp) -> Vec<usize> {
    match op {
        FloatOp::Conv {
            window, filters, ..
        } => vec![window.size, window.size, window.input[2], *filters],
        FloatOp::Dense { inputs, units, .. } => vec![*inputs, *units],
        _ => Vec::new(),
    }
}

/// Bytes of every tensor a file of `float` holds.
fn expected_bytes(float: &FloatSteps) -> u64 {
    let tensors: usize = float
        .steps
        .iter()
        .map(|step| {
            let weights: usize = weight_dims(&step.op).iter().product();
            let units = weight_dims(&step.op).last().copied().unwrap_or(0);
            weights + 8 * units + 5
        })
        .sum();
    (tensors + 5) as u64
}

/// Reads a file's tensors, noting each problem and each tensor read.
struct Reader<'a, 'f> {
    file: &'a SafeTensors<'f>,
    problems: Vec<String>,
    read: Vec<String>,
}

impl Reader<'_, '_> {
    /// Tensor `name`'s bytes if it is of `dtype` and `dims`, else a problem noted.
    fn tensor(&mut self, name: &str, dtype: Dtype, dims: &[usize]) -> Option<Vec<u8>> {
        self.read.push(name.to_string());
        match self.file.tensor(name) {
            Err(_) => self
                .problems
                .push(format!("`{name}` {dtype:?} {dims:?} is missing")),
            Ok(view) if view.dtype() != dtype => self
                .problems
                .push(format!("`{name}` is {:?}, not {dtype:?}", view.dtype())),
            Ok(view) if view.shape() != dims => self.problems.push(format!(
                "`{name}` is {:?} in the file but {dims:?} in this network",
                view.shape()
            )),
            Ok(view) => return Some(view.data().to_vec()),
        }
        None
    }

    /// `F32` values of `name`, each checked to be a positive finite scale.
    fn scales(&mut self, name: &str, len: usize) -> Option<Vec<f32>> {
        let bytes = self.tensor(name, Dtype::F32, &[len])?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if values.iter().all(|s| s.is_finite() && *s > 0.0) {
            Some(values)
        } else {
            self.problems.push(format!(
                "`{name}` holds a scale that is not a positive number"
            ));
            None
        }
    }

    /// The quantization in tensors `scale` and `zero_point`; a placeholder if either is wrong
    /// (the problem is noted, and nothing is built).
    fn quantization(&mut self, scale: &str, zero_point: &str) -> Quantization {
        let scale = self.scales(scale, 1).map_or(1.0, |s| s[0]);
        let zero_point = self.tensor(zero_point, Dtype::U8, &[1]).map_or(0, |z| z[0]);
        Quantization { scale, zero_point }
    }

    /// The integer weights and bias of `step`, a convolution or dense layer, under `key`.
    fn linear(&mut self, step: &FloatStep, key: &str) -> Option<LinearParams> {
        let dims = weight_dims(&step.op);
        let units = *dims.last()?;
        let values = self.tensor(&format!("{key}.weight"), Dtype::I8, &dims);
        let scales = self.scales(&format!("{key}.weight_scale"), units);
        let bias = self.tensor(&format!("{key}.bias"), Dtype::I32, &[units]);
        let values: Vec<i8> = values?.into_iter().map(|v| v as i8).collect();
        if values.contains(&i8::MIN) {
            self.problems.push(format!(
                "`{key}.weight` holds -128, which int8 weights never use"
            ));
            return None;
        }
        let bias = bias?
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Some(LinearParams {
            weights: QuantizedWeights {
                values,
                scales: scales?,
            },
            bias,
        })
    }
}
