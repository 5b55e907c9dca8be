//! An int8 network ([`Quantized`]) as an ONNX model in the QDQ form ONNX Runtime's quantizer
//! writes: every tensor the int8 network keeps in bytes is a `QuantizeLinear` to `uint8` and a
//! `DequantizeLinear` back, with its scale and zero point; weights are `int8` initializers with
//! a scale per output channel, biases `int32` in units of input scale × weight scale, each read
//! through a `DequantizeLinear`; between them the `f32` operators of the network. A runtime
//! that fuses the pattern runs it in int8, as ONNX Runtime does.

use std::path::Path;

use constnet_onnx_proto as proto;

use super::{Builder, OnnxError, Value, flat_value, float, image_value, int, ints};
use crate::loss::OutputActivation;
use crate::network::Network;
use crate::quant::Quantized;
use crate::quant::float::{Elementwise, Window};
use crate::quant::ops::{LinearOutput, Op};
use crate::quant::scheme::Quantization;
use crate::quant::{LinearParams, Step};
use crate::shape::Shape;

/// Writes `network` to `path` as a QDQ ONNX model, atomically.
///
/// # Errors
/// [`OnnxError::Io`] if the file cannot be written.
pub fn export_quantized<N: Network>(
    network: &Quantized<N>,
    path: impl AsRef<Path>,
) -> Result<(), OnnxError> {
    let path = path.as_ref();
    let bytes = quantized_to_bytes(network);
    crate::files::write_atomically(path, &bytes).map_err(|source| OnnxError::Io {
        file: path.to_path_buf(),
        source,
    })
}

/// The QDQ ONNX model of `network`, serialised: what [`export_quantized`] writes.
pub fn quantized_to_bytes<N: Network>(network: &Quantized<N>) -> Vec<u8> {
    let mut builder = Builder::new(Default::default());
    let input = builder.input(N::Input::DIMS);
    let mut value = builder.qdq(&input, "input", network.input);
    let mut quantization = network.input;
    for step in &network.steps {
        value = builder.step(step, &value, quantization);
        if let Op::Conv {
            pool: Some(window), ..
        } = &step.op
        {
            // The pooling in the convolution's epilogue, on the bytes it keeps.
            let key = format!("{}.max", step.key);
            let pooled = builder.pool(&key, true, window, &value);
            value = builder.qdq(&pooled, &key, step.output);
        }
        quantization = step.output;
    }
    value = match network.head {
        OutputActivation::Identity => value,
        OutputActivation::Softmax => builder.softmax(&value, "softmax"),
        OutputActivation::Sigmoid => {
            builder.push("Sigmoid", &[&value.name], "sigmoid", vec![]);
            Value {
                name: "sigmoid".into(),
                layout: value.layout,
            }
        }
    };
    builder.model(&format!("{} (int8)", N::NAME), N::Input::DIMS, &value)
}

impl Builder {
    /// The nodes of one int8 step reading `input` (of quantization `quantization`).
    fn step(&mut self, step: &Step, input: &Value, quantization: Quantization) -> Value {
        let key = step.key.as_str();
        let (value, relu) = match (&step.op, &step.linear) {
            (Op::Conv { window, output, .. }, Some(linear)) => {
                let weight = self.conv_weight(key, window, linear);
                let bias = self.quantized_bias(key, linear, quantization);
                let name = format!("{key}.conv");
                let attributes = window_attributes(window);
                self.push("Conv", &[&input.name, &weight, &bias], &name, attributes);
                let dims = [window.output[0], window.output[1], linear.bias.len()];
                (image_value(name, &dims), relu_of(output))
            }
            (Op::Dense { output, .. }, Some(linear)) => {
                let source = self.nhwc_name(input, key);
                let flat = format!("{key}.flat");
                self.push("Flatten", &[&source], &flat, vec![int("axis", 1)]);
                let weight = self.dense_weight(key, linear);
                let bias = self.quantized_bias(key, linear, quantization);
                let name = format!("{key}.gemm");
                self.push("Gemm", &[&flat, &weight, &bias], &name, vec![]);
                (flat_value(name, &[linear.bias.len()]), relu_of(output))
            }
            (Op::Pool { max, window }, _) => (self.pool(key, *max, window, input), false),
            (Op::GlobalPool { max, channels, .. }, _) => {
                let (pooled, name) = (format!("{key}.pooled"), format!("{key}.pool"));
                let op = if *max {
                    "GlobalMaxPool"
                } else {
                    "GlobalAveragePool"
                };
                self.push(op, &[&input.name], &pooled, vec![]);
                self.push("Flatten", &[&pooled], &name, vec![int("axis", 1)]);
                (flat_value(name, &[*channels]), false)
            }
            (Op::Lookup { function, .. }, _) => (self.elementwise(key, *function, input), false),
            _ => unreachable!("a convolution or dense layer always has integer parameters"),
        };
        let value = if relu {
            let name = format!("{key}.relu");
            self.push("Relu", &[&value.name], &name, vec![]);
            Value {
                name,
                layout: value.layout,
            }
        } else {
            value
        };
        match step.op {
            Op::Conv {
                output: LinearOutput::F32(_),
                ..
            }
            | Op::Dense {
                output: LinearOutput::F32(_),
                ..
            } => value,
            _ => self.qdq(&value, key, step.output),
        }
    }

    /// A max or average pooling of `input` under `window`, named after `key`.
    fn pool(&mut self, key: &str, max: bool, window: &Window, input: &Value) -> Value {
        let name = format!("{key}.pool");
        let op = if max { "MaxPool" } else { "AveragePool" };
        self.push(op, &[&input.name], &name, window_attributes(window));
        let dims = [window.output[0], window.output[1], window.input[2]];
        image_value(name, &dims)
    }

    /// `value` quantized to `uint8` by `quantization` and dequantized again, named after `key`.
    fn qdq(&mut self, value: &Value, key: &str, quantization: Quantization) -> Value {
        let (scale, zero) = (format!("{key}.scale"), format!("{key}.zero_point"));
        self.initializer(&scale, &[], vec![quantization.scale]);
        self.bytes(&zero, &[], proto::UINT8, vec![quantization.zero_point]);
        let (quantized, dequantized) = (format!("{key}.q"), format!("{key}.dq"));
        self.push(
            "QuantizeLinear",
            &[&value.name, &scale, &zero],
            &quantized,
            vec![],
        );
        self.push(
            "DequantizeLinear",
            &[&quantized, &scale, &zero],
            &dequantized,
            vec![],
        );
        Value {
            name: dequantized,
            layout: value.layout,
        }
    }

    /// A convolution's `int8` kernel, transposed from `[k, k, in, out]` to OIHW, and its
    /// per-filter dequantization; returns the dequantized kernel's name.
    fn conv_weight(&mut self, key: &str, window: &Window, linear: &LinearParams) -> String {
        let (kernel, channels, filters) = (window.size, window.input[2], linear.bias.len());
        let mut oihw = vec![0u8; linear.weights.values.len()];
        for (index, &value) in linear.weights.values.iter().enumerate() {
            let (rest, o) = (index / filters, index % filters);
            let (rest, i) = (rest / channels, rest % channels);
            let (ky, kx) = (rest / kernel, rest % kernel);
            oihw[((o * channels + i) * kernel + ky) * kernel + kx] = value as u8;
        }
        let dims = [filters, channels, kernel, kernel];
        self.dequantized_weight(key, &dims, oihw, &linear.weights.scales, 0)
    }

    /// A dense layer's `int8` weight `[in, out]` and its per-column dequantization.
    fn dense_weight(&mut self, key: &str, linear: &LinearParams) -> String {
        let units = linear.bias.len();
        let dims = [linear.weights.values.len() / units, units];
        let bytes = linear.weights.values.iter().map(|&v| v as u8).collect();
        self.dequantized_weight(key, &dims, bytes, &linear.weights.scales, 1)
    }

    /// `int8` weights `bytes` of `dims` with `scales` along `axis`, through a
    /// `DequantizeLinear`; returns its output's name.
    fn dequantized_weight(
        &mut self,
        key: &str,
        dims: &[usize],
        bytes: Vec<u8>,
        scales: &[f32],
        axis: i64,
    ) -> String {
        let [quantized, scale, zero, weight] = [
            "weight_quantized",
            "weight_scale",
            "weight_zero_point",
            "weight",
        ]
        .map(|what| format!("{key}.{what}"));
        self.bytes(&quantized, dims, proto::INT8, bytes);
        self.initializer(&scale, &[scales.len()], scales.to_vec());
        self.bytes(&zero, &[scales.len()], proto::INT8, vec![0; scales.len()]);
        let attributes = vec![int("axis", axis)];
        self.push(
            "DequantizeLinear",
            &[&quantized, &scale, &zero],
            &weight,
            attributes,
        );
        weight
    }

    /// The `int32` bias of a layer reading values of `input` quantization, through a
    /// `DequantizeLinear` of scale input scale × weight scale; returns its output's name.
    fn quantized_bias(&mut self, key: &str, linear: &LinearParams, input: Quantization) -> String {
        let [quantized, scale, zero, bias] =
            ["bias_quantized", "bias_scale", "bias_zero_point", "bias"]
                .map(|what| format!("{key}.{what}"));
        let units = linear.bias.len();
        self.initializers.push(proto::Tensor {
            dims: vec![units as i64],
            data_type: proto::INT32,
            int32_data: linear.bias.clone(),
            name: quantized.clone(),
            ..proto::Tensor::default()
        });
        let scales = linear
            .weights
            .scales
            .iter()
            .map(|s| input.scale * s)
            .collect();
        self.initializer(&scale, &[units], scales);
        self.initializers.push(proto::Tensor {
            dims: vec![units as i64],
            data_type: proto::INT32,
            int32_data: vec![0; units],
            name: zero.clone(),
            ..proto::Tensor::default()
        });
        self.push(
            "DequantizeLinear",
            &[&quantized, &scale, &zero],
            &bias,
            vec![int("axis", 0)],
        );
        bias
    }

    /// An element-wise activation of `input`, named after `key`.
    fn elementwise(&mut self, key: &str, function: Elementwise, input: &Value) -> Value {
        let name = format!("{key}.activation");
        match function {
            Elementwise::Relu => self.push("Relu", &[&input.name], &name, vec![]),
            Elementwise::LeakyRelu(alpha) => self.push(
                "LeakyRelu",
                &[&input.name],
                &name,
                vec![float("alpha", alpha)],
            ),
            Elementwise::Sigmoid => self.push("Sigmoid", &[&input.name], &name, vec![]),
            Elementwise::Tanh => self.push("Tanh", &[&input.name], &name, vec![]),
            Elementwise::Gelu => {
                self.gelu(&input.name, &name);
            }
            Elementwise::Swish => {
                let sigmoid = format!("{key}.sigmoid");
                self.push("Sigmoid", &[&input.name], &sigmoid, vec![]);
                self.push("Mul", &[&input.name, &sigmoid], &name, vec![]);
            }
        }
        Value {
            name,
            layout: input.layout,
        }
    }

    /// An initializer of 8-bit values (`INT8` or `UINT8`) kept as raw bytes.
    fn bytes(&mut self, name: &str, dims: &[usize], data_type: i32, bytes: Vec<u8>) {
        self.initializers.push(proto::Tensor {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            raw_data: bytes,
            name: name.into(),
            ..proto::Tensor::default()
        });
    }
}

/// Whether a convolution's or dense layer's output has a fused ReLU (its bytes are clamped at
/// the zero point).
fn relu_of(output: &LinearOutput) -> bool {
    match output {
        LinearOutput::U8(requantization) => requantization.relu(),
        LinearOutput::F32(_) => false,
    }
}

/// `kernel_shape`, `strides` and `pads` of `window`.
fn window_attributes(window: &Window) -> Vec<proto::Attribute> {
    let pads = window.pads;
    vec![
        ints("kernel_shape", &[window.size, window.size]),
        ints("strides", &[window.stride, window.stride]),
        ints("pads", &[pads.top, pads.left, pads.bottom, pads.right]),
    ]
}
