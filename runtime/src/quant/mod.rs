//! Int8 inference by post-training quantization: [`Quantized::calibrate`] turns a trained
//! network into its int8 form from a few hundred sample inputs, and [`Quantized::infer`] runs
//! it on the int8 kernels ([`crate::kernels::int8`]: AVX-512 VNNI, AVX2 or portable, chosen as
//! the f32 kernels are).
//!
//! The scheme ([`scheme`]) is the one ONNX Runtime's and TensorFlow Lite's quantizers use:
//! weights in signed bytes with a scale per output channel, every activation tensor in unsigned
//! bytes with a scale and zero point from the range calibration saw, biases in `i32`. Each
//! convolution and dense layer folds the batch normalisation after it into its weights,
//! multiplies bytes into exact `i32` sums, and requantizes them to its output's bytes with a
//! fixed-point multiplier per channel in the epilogue of its product, where a ReLU after it is
//! a clamp. Pooling works on the bytes; other activations are a table of 256 bytes. The input
//! is quantized on entry; the last dense layer's sums are scaled to `f32` and the network's
//! softmax or sigmoid applied to them.
//!
//! A quantized network is typed by its `f32` network: it takes and returns the same shapes,
//! and calibration data of another shape does not compile. Like the `f32` network it is
//! immutable while it runs (share it between threads), and its [`QuantizedWorkspace`] makes
//! repeated calls allocation-free. The README shows the whole path from a trained network to
//! its int8 accuracy.

mod build;
mod file;
pub(crate) mod float;
pub(crate) mod ops;
pub mod scheme;

use std::fmt::Write as _;
use std::marker::PhantomData;

use rayon::prelude::*;

use crate::data::Dataset;
use crate::kernels::int8::{self, GROUP, Int8Isa};
use crate::loss::{FitsHead, OutputActivation, SparseCategoricalCrossentropy};
use crate::metrics::Evaluation;
use crate::network::Network;
use crate::schedule::{self, Placement};
use crate::shape::{Flat, Shape};
use crate::tensor::Batch;
use crate::train::{BatchInference, TrainError};
use crate::weights::WeightsError;
use build::{
    StepParams, build_step, fuse_max_pools, observe_ranges, output_quantization, quantize_linear,
    writes_f32,
};
use float::FloatSteps;
use ops::{Destination, LinearOutput, Op, padded};
use scheme::{Quantization, QuantizedWeights};

/// What can go wrong quantizing a network.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// A layer int8 inference cannot run.
    #[error("layer `{layer}` ({op}) cannot be quantized: {reason}")]
    Unsupported {
        /// The layer's name.
        layer: String,
        /// What it computes.
        op: String,
        /// Why it cannot be quantized.
        reason: String,
    },
    /// No calibration samples.
    #[error("calibration needs at least one sample")]
    NoCalibrationData,
    /// A value calibration saw was NaN or infinite.
    #[error("calibration saw a value that is NaN or infinite in `{tensor}`")]
    NotFinite {
        /// The tensor: `input` or the step that made it.
        tensor: String,
    },
    /// A value does not fit the integer arithmetic.
    #[error("layer `{layer}` cannot be quantized: {what}")]
    OutOfRange {
        /// The layer's name.
        layer: String,
        /// What does not fit.
        what: String,
    },
    /// A quantized network's file could not be saved or loaded.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// One op of the quantized network.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    /// Its layers, `conv1+bn1+relu1`, or `conv2+relu2+pool2` with a max pooling in the
    /// convolution's epilogue.
    pub name: String,
    /// The first layer's name, which prefixes the step's tensors in a file.
    pub key: String,
    pub op: Op,
    /// The quantization of its bytes.
    pub output: Quantization,
    /// Values per sample.
    pub output_len: usize,
    /// A convolution's or dense layer's quantized weights and bias, as a file keeps them.
    pub linear: Option<LinearParams>,
}

/// A convolution's or dense layer's integer parameters.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LinearParams {
    pub weights: QuantizedWeights,
    /// In units of input scale × weight scale.
    pub bias: Vec<i32>,
}

/// The int8 form of network `N` ([the module documentation](self) describes it).
pub struct Quantized<N: Network> {
    pub(crate) input: Quantization,
    pub(crate) steps: Vec<Step>,
    /// The softmax or sigmoid the network ends with, applied in `f32`.
    pub(crate) head: OutputActivation,
    /// The last step's quantization when its output is bytes, `None` when it is `f32`.
    dequantize: Option<Quantization>,
    _network: PhantomData<fn() -> N>,
}

impl<N: Network> Clone for Quantized<N> {
    fn clone(&self) -> Self {
        Quantized {
            input: self.input,
            steps: self.steps.clone(),
            head: self.head,
            dequantize: self.dequantize,
            _network: PhantomData,
        }
    }
}

impl<N: Network> std::fmt::Debug for Quantized<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quantized")
            .field("network", &N::NAME)
            .field(
                "steps",
                &self.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<N: Network> Quantized<N> {
    /// The int8 form of `network`, its activations' ranges taken from `samples` (a few hundred
    /// representative inputs: training images, say).
    ///
    /// # Errors
    /// [`QuantizeError::Unsupported`] naming the first layer int8 inference cannot run (residual
    /// blocks, depthwise convolutions, upsampling and layers of one's own are not quantized
    /// yet); [`QuantizeError::NoCalibrationData`]; [`QuantizeError::NotFinite`];
    /// [`QuantizeError::OutOfRange`] for weights or biases the integer sums cannot hold.
    pub fn calibrate(network: &N, samples: &Batch<N::Input>) -> Result<Self, QuantizeError> {
        let float = FloatSteps::of(network)?;
        if samples.is_empty() {
            return Err(QuantizeError::NoCalibrationData);
        }
        let ranges = observe_ranges(&float, samples.as_slice())?;
        let mut params = Vec::new();
        let mut input = ranges[0].quantization();
        for (step, range) in float.steps.iter().zip(&ranges[1..]) {
            params.push(StepParams {
                output: output_quantization(step, input, *range),
                linear: quantize_linear(step, input)?,
            });
            input = params.last().map_or(input, |p| p.output);
        }
        Self::build(&float, ranges[0].quantization(), params)
    }

    /// The network from its steps' quantizations and integer parameters.
    fn build(
        float: &FloatSteps,
        input: Quantization,
        params: Vec<StepParams>,
    ) -> Result<Self, QuantizeError> {
        let count = float.steps.len();
        let mut steps = Vec::with_capacity(count);
        let mut step_input = input;
        for (index, (step, params)) in float.steps.iter().zip(params).enumerate() {
            let last = index + 1 == count;
            let built = build_step(step, step_input, params, last && writes_f32(step))?;
            step_input = built.output;
            steps.push(built);
        }
        let dequantize = match float.steps.last() {
            Some(step) if writes_f32(step) => None,
            _ => Some(step_input),
        };
        Ok(Quantized {
            input,
            steps: fuse_max_pools(steps),
            head: float.head,
            dequantize,
            _network: PhantomData,
        })
    }

    /// Inference of `input` on the int8 kernels; the result lives in `workspace`, which keeps
    /// its buffers between calls. Batches of at least as many samples as the pool has threads
    /// are split between the threads by samples; smaller ones split each convolution's pixels
    /// and each dense layer's outputs.
    pub fn infer<'w>(
        &self,
        input: &Batch<N::Input>,
        workspace: &'w mut QuantizedWorkspace<N>,
    ) -> &'w Batch<N::Output> {
        let samples = input.len();
        workspace.output.resize(samples);
        if samples == 0 {
            return &workspace.output;
        }
        let muls = self.steps.iter().map(|step| step.op.muls()).sum();
        let run = || {
            let parts = schedule::pass_threads().min(samples).max(1);
            let per_part = samples.div_ceil(parts);
            workspace.prepare(self, parts);
            let (parts_scratch, output) = (&mut workspace.parts, &mut workspace.output);
            let inputs = input.as_slice().par_chunks(per_part * N::Input::LEN);
            let outputs = output
                .as_mut_slice()
                .par_chunks_mut(per_part * N::Output::LEN);
            inputs
                .zip(outputs)
                .zip(parts_scratch.par_iter_mut())
                .for_each(|((input, output), scratch)| {
                    if parts > 1 {
                        // A share of a batch split by samples: its ops split nothing again.
                        schedule::unsplit(|| self.run_part(input, output, scratch));
                    } else {
                        self.run_part(input, output, scratch);
                    }
                });
        };
        match schedule::placement(samples, muls) {
            Placement::CallingThread => schedule::unsplit(run),
            Placement::Pool { keep_awake } => schedule::on_pool_thread(keep_awake, || {}, run),
        }
        &workspace.output
    }

    /// Runs the samples of `input` through every step into `output`, a few at a time.
    fn run_part(&self, input: &[f32], output: &mut [f32], scratch: &mut Scratch) {
        let (in_len, out_len) = (N::Input::LEN, N::Output::LEN);
        let chunk = self.chunk_samples();
        let chunks = input.chunks(chunk * in_len);
        for (input, output) in chunks.zip(output.chunks_mut(chunk * out_len)) {
            let samples = input.len() / in_len;
            self.quantize_input(input, &mut scratch.current);
            let stride = self.run_steps(samples, scratch);
            self.finish(samples, stride, scratch, output);
        }
    }

    /// Quantizes the samples of `input` into `bytes`, each padded to whole groups, a vector
    /// at a time on this thread's path (chosen once for all of them).
    fn quantize_input(&self, input: &[f32], bytes: &mut [u8]) {
        let (in_len, isa) = (N::Input::LEN, Int8Isa::active());
        let Quantization { scale, zero_point } = self.input;
        for (values, bytes) in input.chunks(in_len).zip(bytes.chunks_mut(padded(in_len))) {
            int8::quantize_with(isa, values, scale, zero_point, &mut bytes[..in_len]);
        }
    }

    /// Runs every step on `samples` quantized samples in `scratch.current`, each op's output
    /// becoming the next one's input; returns the stride of the last bytes written (the last
    /// op's `f32`s, if it writes them, are in `scratch.logits`).
    fn run_steps(&self, samples: usize, scratch: &mut Scratch) -> usize {
        let (mut stride, mut zero) = (padded(N::Input::LEN), self.input.zero_point);
        for step in &self.steps {
            let (destination, out_stride) = if step.op.writes_f32() {
                (Destination::Floats(&mut scratch.logits), N::Output::LEN)
            } else {
                (
                    Destination::Bytes(&mut scratch.next),
                    padded(step.output_len),
                )
            };
            let input = &scratch.current;
            let patches = &mut scratch.patches;
            step.op.run(
                input,
                stride,
                samples,
                zero,
                destination,
                out_stride,
                patches,
            );
            if !step.op.writes_f32() {
                std::mem::swap(&mut scratch.current, &mut scratch.next);
                (stride, zero) = (out_stride, step.output.zero_point);
            }
        }
        stride
    }

    /// Dequantizes the last bytes (when the last op wrote bytes) and applies the network's
    /// head into `output`.
    fn finish(&self, samples: usize, stride: usize, scratch: &mut Scratch, output: &mut [f32]) {
        let out_len = N::Output::LEN;
        if let Some(quantization) = self.dequantize {
            let rows = scratch.logits.chunks_mut(out_len).take(samples);
            for (values, bytes) in rows.zip(scratch.current.chunks(stride)) {
                for (x, &q) in values.iter_mut().zip(bytes) {
                    *x = quantization.dequantize(q);
                }
            }
        }
        for (logits, values) in scratch
            .logits
            .chunks(out_len)
            .zip(output.chunks_mut(out_len))
        {
            self.head.apply(logits, values);
        }
    }

    /// Samples a part runs through each op at a time: as many as keep the largest op's output
    /// within 256 KiB (a core's L2 holds it and the next op's), at least 1 and at most 64.
    fn chunk_samples(&self) -> usize {
        (256 * 1024 / self.largest_stride()).clamp(1, 64)
    }

    /// The most bytes a sample takes in any op's input or output.
    fn largest_stride(&self) -> usize {
        let outputs = self.steps.iter().map(|step| padded(step.output_len));
        outputs.chain([padded(N::Input::LEN)]).max().unwrap_or(1)
    }

    /// Bytes of scratch a sample needs in the convolution that needs the most: its im2col
    /// patches, or the padded copy of the image it reads its windows from.
    fn patch_bytes(&self) -> usize {
        let patches = self.steps.iter().map(|step| match &step.op {
            Op::Conv {
                window,
                weights,
                rows,
                ..
            } => match rows.in_place {
                None => rows.pixels.len() * weights.padded_rows(),
                Some(_) if window.is_padded() => ops::padded_image_bytes(window),
                Some(_) => 0,
            },
            _ => 0,
        });
        patches.max().unwrap_or(0)
    }

    /// Loss, accuracy and confusion matrix of the int8 network on `data`, as
    /// [`evaluate`](crate::train::evaluate) gives them for the `f32` network.
    ///
    /// # Errors
    /// [`TrainError::BatchSize`] for a batch size of 0, [`TrainError::EmptyData`] for an empty
    /// data set, [`TrainError::InvalidTarget`] for a label the network has no output for.
    pub fn evaluate<const C: usize>(
        &self,
        data: &Dataset<N::Input>,
        batch_size: usize,
    ) -> Result<Evaluation, TrainError>
    where
        N: Network<Output = Flat<C>>,
        SparseCategoricalCrossentropy: FitsHead<N::Head>,
    {
        crate::train::evaluate_classes(self, data, batch_size)
    }

    /// The real value of one step of the last tensor the network quantizes (for a network
    /// whose last op writes `f32`, of the range calibration saw in its output): the least two
    /// int8 runtimes rounding a half differently may differ by.
    pub fn output_step(&self) -> f32 {
        self.steps
            .last()
            .map_or(self.input.scale, |step| step.output.scale)
    }

    /// The ops the int8 network runs, with each output's quantization and multiply-adds.
    pub fn plan(&self) -> String {
        let mut table = format!(
            "{} (int8), input scale {:.6}, zero point {}\n{:<28} {:<12} {:>10} {:>5} {:>12}\n",
            N::NAME,
            self.input.scale,
            self.input.zero_point,
            "op",
            "runs",
            "scale",
            "zero",
            "mul-adds"
        );
        for step in &self.steps {
            let runs = match &step.op {
                Op::Conv {
                    output: LinearOutput::F32(_),
                    ..
                }
                | Op::Dense {
                    output: LinearOutput::F32(_),
                    ..
                } => "int8 → f32",
                Op::Conv { pool: Some(_), .. } => "conv+maxpool",
                Op::Conv { .. } => "int8 conv",
                Op::Dense { .. } => "int8 dense",
                Op::Pool { .. } | Op::GlobalPool { .. } => "byte pool",
                Op::Lookup { .. } => "table",
            };
            let _ = writeln!(
                table,
                "{:<28} {:<12} {:>10.6} {:>5} {:>12}",
                step.name,
                runs,
                step.output.scale,
                step.output.zero_point,
                crate::plan::thousands(step.op.muls())
            );
        }
        table
    }
}

/// One part's buffers: the bytes an op reads and those it writes, swapped after each op, one
/// sample's im2col patches, and the outputs before the head.
#[derive(Default)]
struct Scratch {
    current: Vec<u8>,
    next: Vec<u8>,
    patches: Vec<u8>,
    /// The last op's `f32` output, before the network's head.
    logits: Vec<f32>,
}

impl<N: Network<Output = Flat<C>>, const C: usize> BatchInference<C> for Quantized<N> {
    type Input = N::Input;
    type Workspace = QuantizedWorkspace<N>;
    const ACTIVATION: OutputActivation = <N::Head as crate::loss::Head>::ACTIVATION;

    fn infer_batch<'w>(
        &self,
        input: &Batch<N::Input>,
        workspace: &'w mut QuantizedWorkspace<N>,
    ) -> &'w Batch<Flat<C>> {
        self.infer(input, workspace)
    }
}

/// The buffers of [`Quantized::infer`], kept between calls: after the first call at a batch
/// size (on the same pool), a call allocates nothing.
pub struct QuantizedWorkspace<N: Network> {
    parts: Vec<Scratch>,
    output: Batch<N::Output>,
}

impl<N: Network> Default for QuantizedWorkspace<N> {
    fn default() -> Self {
        QuantizedWorkspace {
            parts: Vec::new(),
            output: Batch::default(),
        }
    }
}

impl<N: Network> QuantizedWorkspace<N> {
    /// Makes room for `parts` parts of `network`'s passes; allocates only to grow.
    fn prepare(&mut self, network: &Quantized<N>, parts: usize) {
        if self.parts.len() < parts {
            self.parts.resize_with(parts, Scratch::default);
        }
        // A group past the last sample: a window read in place may read past its image's
        // last byte by less than a group (`ops::in_place_run`).
        let bytes = network.chunk_samples() * network.largest_stride() + GROUP;
        let patches = network.patch_bytes();
        for part in &mut self.parts[..parts] {
            for buffer in [&mut part.current, &mut part.next] {
                if buffer.len() < bytes {
                    buffer.resize(bytes, 0);
                }
            }
            if part.patches.len() < patches {
                part.patches.resize(patches, 0);
            }
            let logits = network.chunk_samples() * N::Output::LEN;
            if part.logits.len() < logits {
                part.logits.resize(logits, 0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
