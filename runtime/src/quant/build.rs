//! How a network's `f32` steps become int8 steps, for calibration and for loading alike: the
//! ranges calibration observes, each layer's integer weights and bias, its packed weights and
//! the epilogue that requantizes (or dequantizes) its sums, with the range checks that keep
//! every integer inside its type.

use super::float::{FloatOp, FloatStep, FloatSteps};
use super::ops::{self, LinearOutput, Op};
use super::scheme::{self, Quantization, QuantizedWeights, Range};
use super::{LinearParams, QuantizeError, Step};
use crate::kernels::int8::{Dequantization, LANES, PackedWeights, Requantization, Requantizer};

/// Calibration samples run through the `f32` network at a time.
const CALIBRATION_BATCH: usize = 64;

/// What quantization decided for one step.
pub(super) struct StepParams {
    pub output: Quantization,
    pub linear: Option<LinearParams>,
}

/// Runs the calibration samples through the `f32` steps; the range of the input (index 0) and
/// of each step's output.
pub(super) fn observe_ranges(
    float: &FloatSteps,
    samples: &[f32],
) -> Result<Vec<Range>, QuantizeError> {
    let mut ranges = vec![Range::default(); float.steps.len() + 1];
    let mut problem = None;
    for chunk in samples.chunks(CALIBRATION_BATCH * float.input_len) {
        let count = chunk.len() / float.input_len;
        float.run(chunk, count, &mut |step, values| {
            let (index, name) = match step {
                None => (0, "input"),
                Some(i) => (i + 1, float.steps[i].name.as_str()),
            };
            if problem.is_none() {
                problem = ranges[index].observe(name, values).err();
            }
        });
        if let Some(error) = problem {
            return Err(error);
        }
    }
    Ok(ranges)
}

/// The quantization of `step`'s output: its input's for a pooling (a maximum or mean of bytes
/// is a byte of the same scale), else the range calibration saw.
pub(super) fn output_quantization(
    step: &FloatStep,
    input: Quantization,
    range: Range,
) -> Quantization {
    if step.op.keeps_input_quantization() {
        input
    } else {
        range.quantization()
    }
}

/// Whether `step`, as the last, writes `f32` directly: a convolution or dense layer without a
/// fused ReLU (whose clamp is applied to bytes).
pub(super) fn writes_f32(step: &FloatStep) -> bool {
    matches!(
        step.op,
        FloatOp::Conv { relu: false, .. } | FloatOp::Dense { relu: false, .. }
    )
}

/// The integer weights and bias of a convolution or dense layer reading `input`.
pub(super) fn quantize_linear(
    step: &FloatStep,
    input: Quantization,
) -> Result<Option<LinearParams>, QuantizeError> {
    let (weight, bias) = match &step.op {
        FloatOp::Conv { weight, bias, .. } | FloatOp::Dense { weight, bias, .. } => (weight, bias),
        _ => return Ok(None),
    };
    let weights = QuantizedWeights::of(weight, bias.len());
    let bias = scheme::quantize_bias(&step.name, bias, input.scale, &weights.scales)?;
    Ok(Some(LinearParams { weights, bias }))
}

/// Most rows of a product: `K · 255 · 127` must stay below 2^30 so a sum and its offset fit in
/// `i32` and their product with a multiplier in `i64`.
const MAX_PRODUCT_ROWS: usize = (1 << 30) / (255 * 127);

/// The op of `step` reading `input`, writing `params.output` (or `f32` when `f32_output`).
pub(super) fn build_step(
    step: &FloatStep,
    input: Quantization,
    params: StepParams,
    f32_output: bool,
) -> Result<Step, QuantizeError> {
    let key = step.name.split('+').next().unwrap_or_default().to_string();
    let op = match (&step.op, &params.linear) {
        (FloatOp::Conv { window, relu, .. }, Some(linear)) => {
            let (weights, output) = linear_op(step, input, &params, linear, *relu, f32_output)?;
            Op::Conv {
                window: *window,
                weights,
                output,
                pool: None,
                rows: ops::ProductRows::of(window, linear.bias.len(), None),
            }
        }
        (FloatOp::Dense { relu, .. }, Some(linear)) => {
            let (weights, output) = linear_op(step, input, &params, linear, *relu, f32_output)?;
            Op::Dense { weights, output }
        }
        (FloatOp::Pool { max, window }, _) => Op::Pool {
            max: *max,
            window: *window,
        },
        (
            FloatOp::GlobalPool {
                max,
                pixels,
                channels,
            },
            _,
        ) => Op::GlobalPool {
            max: *max,
            pixels: *pixels,
            channels: *channels,
        },
        (FloatOp::Activation(function), _) => Op::Lookup {
            function: *function,
            table: ops::lookup_table(*function, input, params.output),
        },
        _ => unreachable!("a convolution or dense layer always has integer parameters"),
    };
    Ok(Step {
        name: step.name.clone(),
        key,
        op,
        output: params.output,
        output_len: step.output_len,
        linear: params.linear,
    })
}

/// The steps with each max pooling that can run in the epilogue of the convolution before it
/// ([`ops::is_fusable_pool`]) folded into that convolution's step, which then writes the
/// pooled bytes (a pooling keeps its input's quantization, so the step's is unchanged).
pub(super) fn fuse_max_pools(steps: Vec<Step>) -> Vec<Step> {
    let mut fused: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if let (
            Some(Step {
                op:
                    Op::Conv {
                        window: conv_window,
                        output: LinearOutput::U8(_),
                        pool: pool @ None,
                        rows,
                        ..
                    },
                name,
                output_len,
                ..
            }),
            Op::Pool { max: true, window },
        ) = (fused.last_mut(), &step.op)
            && ops::is_fusable_pool(window)
        {
            *pool = Some(Box::new(*window));
            *rows = ops::ProductRows::of(conv_window, window.input[2], Some(window));
            name.push('+');
            name.push_str(&step.name);
            *output_len = step.output_len;
            continue;
        }
        fused.push(step);
    }
    fused
}

/// The packed weights of a convolution or dense layer reading `input`, and how it stores its
/// sums.
fn linear_op(
    step: &FloatStep,
    input: Quantization,
    params: &StepParams,
    linear: &LinearParams,
    relu: bool,
    f32_output: bool,
) -> Result<(PackedWeights, LinearOutput), QuantizeError> {
    let weights = pack(step, linear)?;
    let output = linear_output(
        step,
        input,
        params.output,
        linear,
        &weights,
        relu,
        f32_output,
    )?;
    Ok((weights, output))
}

/// The packed weights of a convolution or dense layer. A convolution that reads its windows
/// in place has zero rows after each kernel row's weights, up to the run of bytes its product
/// reads ([`ops::in_place_run`]).
fn pack(step: &FloatStep, linear: &LinearParams) -> Result<PackedWeights, QuantizeError> {
    let n = linear.bias.len();
    let values = match &step.op {
        FloatOp::Conv { window, .. } => match ops::in_place_run(window, n) {
            Some(run) => with_zero_rows(
                &linear.weights.values,
                window.size * window.input[2],
                run,
                n,
            ),
            None => linear.weights.values.clone(),
        },
        _ => linear.weights.values.clone(),
    };
    let k = values.len() / n.max(1);
    if k > MAX_PRODUCT_ROWS {
        return Err(QuantizeError::OutOfRange {
            layer: step.name.clone(),
            what: format!(
                "its products sum {k} values, more than the {MAX_PRODUCT_ROWS} int8 sums hold"
            ),
        });
    }
    Ok(PackedWeights::pack(&values, k, n))
}

/// `weights` (row-major, `n` columns) with each block of `rows` rows followed by zero rows up
/// to `run` rows.
fn with_zero_rows(weights: &[i8], rows: usize, run: usize, n: usize) -> Vec<i8> {
    let zeros = (run - rows) * n;
    let blocks = weights.chunks(rows * n);
    blocks
        .flat_map(|block| block.iter().copied().chain(std::iter::repeat_n(0, zeros)))
        .collect()
}

/// How a convolution or dense layer reading `input`, its weights `packed`, stores its sums: requantized to `output`
/// (clamped at its zero point for a fused ReLU), or scaled to `f32`.
#[allow(clippy::too_many_arguments)]
fn linear_output(
    step: &FloatStep,
    input: Quantization,
    output: Quantization,
    linear: &LinearParams,
    packed: &PackedWeights,
    relu: bool,
    f32_output: bool,
) -> Result<LinearOutput, QuantizeError> {
    let padded_cols = packed.panels() * LANES;
    let zero = i64::from(input.zero_point);
    let mut offset = vec![0i32; padded_cols];
    for ((offset, &bias), &sum) in offset
        .iter_mut()
        .zip(&linear.bias)
        .zip(&packed.column_sums())
    {
        let value = i64::from(bias) - zero * i64::from(sum);
        if value.abs() >= 1 << 30 {
            return Err(QuantizeError::OutOfRange {
                layer: step.name.clone(),
                what: "its bias and input zero point make an offset beyond 2^30".to_string(),
            });
        }
        *offset = value as i32;
    }
    let column_scale = |j: usize| {
        f64::from(input.scale) * f64::from(linear.weights.scales.get(j).copied().unwrap_or(0.0))
    };
    if f32_output {
        let scale = (0..padded_cols).map(|j| column_scale(j) as f32).collect();
        return Ok(LinearOutput::F32(Dequantization { offset, scale }));
    }
    let mut requantizer = vec![Requantizer::from_scale(1.0); padded_cols];
    for (j, requantizer) in requantizer.iter_mut().enumerate().take(linear.bias.len()) {
        let scale = column_scale(j) / f64::from(output.scale);
        if !(scale > 0.0 && scale < f64::from(1 << 30)) {
            return Err(QuantizeError::OutOfRange {
                layer: step.name.clone(),
                what: format!("output channel {j} needs a requantization scale of {scale}"),
            });
        }
        *requantizer = Requantizer::from_scale(scale);
    }
    Ok(LinearOutput::U8(Requantization::new(
        offset,
        &requantizer,
        output.zero_point,
        relu,
    )))
}
