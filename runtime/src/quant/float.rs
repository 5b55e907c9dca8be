//! The network as the quantizer reads it: its graph and parameters turned into a chain of
//! [`FloatStep`]s, each a convolution or dense layer (with the batch normalisation after it
//! folded into its weights and a ReLU after it fused), a pooling, or an element-wise activation,
//! followed by the softmax or sigmoid the network ends with. [`FloatSteps::run`] is the `f32` pass calibration
//! observes; it computes what the network's own inference computes, up to rounding.

use std::collections::HashMap;

use constnet_catalogue::{LayerKind, Padding, Pads};

use super::QuantizeError;
use crate::graph::Node;
use crate::kernels::elementwise;
use crate::kernels::gemm::{MatMut, MatRef, gemm};
use crate::layers::{ActivationFn, GeluFn, SwishFn};
use crate::loss::OutputActivation;
use crate::network::Network;
use crate::shape::Shape;

/// A window moved over an image: a convolution's kernel or a pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The input's rows, columns and channels.
    pub input: [usize; 3],
    /// The output's rows and columns.
    pub output: [usize; 2],
    /// Height and width.
    pub size: usize,
    /// Step between windows.
    pub stride: usize,
    /// Rows above, columns to the left, that the first window starts outside the image.
    pub pads: Pads,
}

impl Window {
    /// The window of a layer with `padding` reading `input`, making `output`.
    fn new(
        input: [usize; 3],
        output: &[usize],
        size: usize,
        stride: usize,
        padding: Padding,
    ) -> Self {
        Window {
            input,
            output: [output[0], output[1]],
            size,
            stride,
            pads: padding.pads((input[0], input[1]), size, stride),
        }
    }

    /// Whether the first or last window reaches outside the image on any side.
    pub fn is_padded(&self) -> bool {
        let pads = self.pads;
        pads.top + pads.bottom + pads.left + pads.right > 0
    }

    /// The rows, columns and channels of the image with its padding around it.
    pub fn padded_input(&self) -> [usize; 3] {
        let ([height, width, channels], pads) = (self.input, self.pads);
        [
            height + pads.top + pads.bottom,
            width + pads.left + pads.right,
            channels,
        ]
    }

    /// Output pixels.
    pub fn pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The input rows (or columns, along `axis`) window `at` covers, clipped to the image.
    pub fn span(&self, axis: usize, at: usize) -> std::ops::Range<usize> {
        let pad = if axis == 0 {
            self.pads.top
        } else {
            self.pads.left
        };
        let start = (at * self.stride) as isize - pad as isize;
        let end = (start + self.size as isize).min(self.input[axis] as isize);
        start.max(0) as usize..end.max(0) as usize
    }
}

/// What a step computes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FloatOp {
    /// A convolution: `weight` is `[kernel, kernel, in, filters]`, i.e. `K × filters` row-major.
    Conv {
        window: Window,
        filters: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
    },
    /// A dense layer: `weight` is `inputs × units`.
    Dense {
        inputs: usize,
        units: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
    },
    /// Max or average pooling over clipped windows.
    Pool { max: bool, window: Window },
    /// Max or mean of each channel over the image.
    GlobalPool {
        max: bool,
        pixels: usize,
        channels: usize,
    },
    /// An element-wise function.
    Activation(Elementwise),
}

impl FloatOp {
    /// Whether its output keeps its input's quantization: a pooling's maximum or mean of bytes
    /// is a byte of the same scale, so it makes no quantization of its own.
    pub fn keeps_input_quantization(&self) -> bool {
        matches!(self, FloatOp::Pool { .. } | FloatOp::GlobalPool { .. })
    }
}

/// An element-wise activation the quantized network runs as a table of its 256 values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Elementwise {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Gelu,
    Swish,
}

impl Elementwise {
    /// The function of layer kind `kind`, if it is element-wise.
    fn of(kind: &LayerKind) -> Option<Self> {
        Some(match *kind {
            LayerKind::Relu => Elementwise::Relu,
            LayerKind::LeakyRelu { alpha } => Elementwise::LeakyRelu(alpha),
            LayerKind::Sigmoid => Elementwise::Sigmoid,
            LayerKind::Tanh => Elementwise::Tanh,
            LayerKind::Gelu => Elementwise::Gelu,
            LayerKind::Swish => Elementwise::Swish,
            _ => return None,
        })
    }

    /// The function at `x`.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Elementwise::Relu => elementwise::relu(x),
            Elementwise::LeakyRelu(alpha) => elementwise::leaky_relu(x, alpha),
            Elementwise::Sigmoid => elementwise::sigmoid(x),
            Elementwise::Tanh => elementwise::tanh(x),
            Elementwise::Gelu => GeluFn.value(x),
            Elementwise::Swish => SwishFn.value(x),
        }
    }
}

/// One step: its layers' names (`conv1+bn1+relu1`), what it computes and its output's length
/// per sample.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FloatStep {
    pub name: String,
    pub op: FloatOp,
    pub output_len: usize,
}

/// A network as a chain of steps.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FloatSteps {
    pub input_len: usize,
    pub steps: Vec<FloatStep>,
    /// What the network applies to the last step's output.
    pub head: OutputActivation,
}

/// Every parameter and buffer of a network by name.
type Tensors = HashMap<String, Vec<f32>>;

impl FloatSteps {
    /// The steps of `network`.
    ///
    /// # Errors
    /// [`QuantizeError::Unsupported`] naming the first layer int8 inference cannot run.
    pub fn of<N: Network>(network: &N) -> Result<Self, QuantizeError> {
        let mut tensors = Tensors::new();
        let mut collect = |name: &str, _: &[usize], values: &[f32]| {
            tensors.insert(name.to_string(), values.to_vec());
        };
        network.visit_params(&mut collect);
        network.visit_buffers(&mut collect);
        let nodes = network.graph();
        Reader {
            nodes: &nodes,
            tensors: &tensors,
            input: N::Input::DIMS,
            at: 0,
        }
        .read()
    }

    /// Runs `samples` samples of `input` through every step in `f32`, calling
    /// `observe(step, output)` with each step's outputs (step `None` is the input), and returns
    /// the last step's output (before the head).
    pub fn run(
        &self,
        input: &[f32],
        samples: usize,
        observe: &mut dyn FnMut(Option<usize>, &[f32]),
    ) -> Vec<f32> {
        observe(None, input);
        let mut values = input.to_vec();
        for (index, step) in self.steps.iter().enumerate() {
            values = step.run(&values, samples);
            observe(Some(index), &values);
        }
        values
    }
}

/// Reads the graph's nodes in order into steps.
struct Reader<'a> {
    nodes: &'a [Node],
    tensors: &'a Tensors,
    input: &'static [usize],
    at: usize,
}

impl<'a> Reader<'a> {
    fn read(mut self) -> Result<FloatSteps, QuantizeError> {
        let mut steps = Vec::new();
        let mut head = OutputActivation::Identity;
        while let Some(node) = self.next()? {
            let last = self.at == self.nodes.len();
            match node.op {
                LayerKind::Conv { .. } | LayerKind::Dense { .. } => steps.push(self.linear(node)?),
                LayerKind::Pool {
                    max,
                    size,
                    stride,
                    padding,
                } => steps.push(FloatStep {
                    name: node.name.to_string(),
                    op: FloatOp::Pool {
                        max,
                        window: Window::new(
                            self.image_input(node)?,
                            node.output,
                            size,
                            stride,
                            padding,
                        ),
                    },
                    output_len: node.output.iter().product(),
                }),
                LayerKind::GlobalPool { max } => {
                    let [h, w, channels] = self.image_input(node)?;
                    steps.push(FloatStep {
                        name: node.name.to_string(),
                        op: FloatOp::GlobalPool {
                            max,
                            pixels: h * w,
                            channels,
                        },
                        output_len: channels,
                    });
                }
                LayerKind::Flatten | LayerKind::Dropout { .. } => {}
                LayerKind::Softmax if last => head = OutputActivation::Softmax,
                LayerKind::Sigmoid if last => head = OutputActivation::Sigmoid,
                ref kind => match Elementwise::of(kind) {
                    Some(function) => steps.push(FloatStep {
                        name: node.name.to_string(),
                        op: FloatOp::Activation(function),
                        output_len: node.output.iter().product(),
                    }),
                    None => return Err(unsupported(node, "int8 inference has no such op")),
                },
            }
        }
        Ok(FloatSteps {
            input_len: self.input.iter().product(),
            steps,
            head,
        })
    }

    /// The next node, checked to read the one before it.
    fn next(&mut self) -> Result<Option<&'a Node>, QuantizeError> {
        let nodes = self.nodes;
        let Some(node) = nodes.get(self.at) else {
            return Ok(None);
        };
        if node.inputs != [self.at] {
            return Err(unsupported(
                node,
                "int8 inference runs chains of layers; residual blocks are not supported yet",
            ));
        }
        self.at += 1;
        Ok(Some(node))
    }

    /// The next node if it is of a kind `wanted` accepts.
    fn next_if(
        &mut self,
        wanted: impl Fn(&LayerKind) -> bool,
    ) -> Result<Option<&'a Node>, QuantizeError> {
        let nodes = self.nodes;
        match nodes.get(self.at) {
            Some(node) if wanted(&node.op) => self.next(),
            _ => Ok(None),
        }
    }

    /// The dimensions of value `index`: the network's input, or a node's output.
    fn value(&self, index: usize) -> &'static [usize] {
        if index == 0 {
            self.input
        } else {
            self.nodes[index - 1].output
        }
    }

    /// `node`'s input as an image.
    fn image_input(&self, node: &Node) -> Result<[usize; 3], QuantizeError> {
        match *self.value(node.inputs[0]) {
            [h, w, c] => Ok([h, w, c]),
            _ => Err(unsupported(node, "its input is not an image")),
        }
    }

    /// A convolution or dense layer, with the batch normalisation and ReLU after it.
    fn linear(&mut self, node: &Node) -> Result<FloatStep, QuantizeError> {
        let mut name = node.name.to_string();
        let mut weight = self.tensor(node, "weight")?;
        let mut bias = self.tensor(node, "bias")?;
        let units = bias.len();
        if let Some(bn) = self.next_if(|kind| matches!(kind, LayerKind::BatchNorm { .. }))? {
            let LayerKind::BatchNorm { epsilon } = bn.op else {
                unreachable!()
            };
            let (bn_name, gamma, beta) = (
                bn.name,
                self.tensor(bn, "weight")?,
                self.tensor(bn, "bias")?,
            );
            let (mean, var) = (
                self.tensor(bn, "running_mean")?,
                self.tensor(bn, "running_var")?,
            );
            for f in 0..units {
                let scale = gamma[f] / (var[f] + epsilon).sqrt();
                weight
                    .iter_mut()
                    .skip(f)
                    .step_by(units)
                    .for_each(|w| *w *= scale);
                bias[f] = (bias[f] - mean[f]) * scale + beta[f];
            }
            name = format!("{name}+{bn_name}");
        }
        let relu = match self.next_if(|kind| *kind == LayerKind::Relu)? {
            Some(relu) => {
                name = format!("{name}+{}", relu.name);
                true
            }
            None => false,
        };
        let op = match node.op {
            LayerKind::Conv {
                filters,
                kernel,
                stride,
                padding,
            } => FloatOp::Conv {
                window: Window::new(
                    self.image_input(node)?,
                    node.output,
                    kernel,
                    stride,
                    padding,
                ),
                filters,
                weight,
                bias,
                relu,
            },
            _ => FloatOp::Dense {
                inputs: weight.len() / units.max(1),
                units,
                weight,
                bias,
                relu,
            },
        };
        Ok(FloatStep {
            name,
            op,
            output_len: node.output.iter().product(),
        })
    }

    /// `node`'s tensor `name` (`weight`, `running_mean`).
    fn tensor(&self, node: &Node, name: &str) -> Result<Vec<f32>, QuantizeError> {
        let key = format!("{}.{name}", node.name);
        self.tensors
            .get(&key)
            .cloned()
            .ok_or_else(|| unsupported(node, "its layer has no tensor of this name"))
    }
}

/// The error for a node int8 inference cannot run.
fn unsupported(node: &Node, reason: &str) -> QuantizeError {
    QuantizeError::Unsupported {
        layer: node.name.to_string(),
        op: format!("{:?}", node.op),
        reason: reason.to_string(),
    }
}

impl FloatStep {
    /// The step's outputs for `samples` samples of `input`.
    fn run(&self, input: &[f32], samples: usize) -> Vec<f32> {
        let in_len = input.len() / samples.max(1);
        let mut output = vec![0.0; samples * self.output_len];
        match &self.op {
            FloatOp::Conv {
                window,
                filters,
                weight,
                bias,
                relu,
            } => {
                let k = window.size * window.size * window.input[2];
                let pixels: Vec<_> = row_major(window.output[1], 0..window.pixels()).collect();
                let mut patches = vec![0.0; window.pixels() * k];
                for (image, out) in input.chunks(in_len).zip(output.chunks_mut(self.output_len)) {
                    im2col(window, image, 0.0, &mut patches, k, &pixels);
                    let (a, b) = (
                        MatRef::row_major(&patches, window.pixels(), k),
                        MatRef::row_major(weight, k, *filters),
                    );
                    gemm(
                        MatMut::row_major(out, window.pixels(), *filters),
                        a,
                        b,
                        false,
                    );
                    finish_linear(out, bias, *relu);
                }
            }
            FloatOp::Dense {
                inputs,
                units,
                weight,
                bias,
                relu,
            } => {
                let (a, b) = (
                    MatRef::row_major(input, samples, *inputs),
                    MatRef::row_major(weight, *inputs, *units),
                );
                gemm(MatMut::row_major(&mut output, samples, *units), a, b, false);
                output
                    .chunks_mut(*units)
                    .for_each(|row| finish_linear(row, bias, *relu));
            }
            FloatOp::Pool { max, window } => {
                for (image, out) in input.chunks(in_len).zip(output.chunks_mut(self.output_len)) {
                    pool_f32(window, *max, image, out);
                }
            }
            FloatOp::GlobalPool {
                max,
                pixels,
                channels,
            } => {
                for (image, out) in input.chunks(in_len).zip(output.chunks_mut(self.output_len)) {
                    for (c, out) in out.iter_mut().enumerate() {
                        let values = image.iter().skip(c).step_by(*channels).take(*pixels);
                        *out = if *max {
                            values.copied().fold(f32::NEG_INFINITY, f32::max)
                        } else {
                            values.sum::<f32>() / *pixels as f32
                        };
                    }
                }
            }
            FloatOp::Activation(function) => {
                output
                    .iter_mut()
                    .zip(input)
                    .for_each(|(o, &x)| *o = function.apply(x));
            }
        }
        output
    }
}

/// Adds `bias` to each row and applies ReLU if asked.
fn finish_linear(rows: &mut [f32], bias: &[f32], relu: bool) {
    for row in rows.chunks_mut(bias.len()) {
        for (y, b) in row.iter_mut().zip(bias) {
            *y += b;
            if relu {
                *y = y.max(0.0);
            }
        }
    }
}

/// Writes the patches of `image` under `window` for output pixels `pixels` (each `[row,
/// column]`, in the order of the rows of `patches`), one row of `row_len` values per
/// pixel (`kernel · kernel · channels` values, then whatever was there), `pad` outside the
/// image.
///
/// A window inside the image is copied a kernel row at a time, each row's run of values as a
/// whole number of 16-byte blocks whose count is a constant of the loop, so each block is one
/// vector move (a copy of unknown length is a call to `memcpy`, costing more than a short run).
/// The last block may write past the run: into the next run of the same patch row, or past
/// the last one into the row's padding and the next patch row. Runs are written in increasing
/// order and each is written whole, so every value past a run is overwritten by its own run
/// later, or lies in padding the weights' zero rows ignore. Where a block would leave either
/// slice, the run is copied exactly.
pub(crate) fn im2col<T: Copy>(
    window: &Window,
    image: &[T],
    pad: T,
    patches: &mut [T],
    row_len: usize,
    pixels: &[[usize; 2]],
) {
    let block = (16 / size_of::<T>()).max(1);
    let (image, pixels) = (PatchSource { window, image, pad }, pixels);
    match (window.size * window.input[2]).div_ceil(block) {
        1 => im2col_blocks::<T, 1>(image, patches, row_len, pixels),
        2 => im2col_blocks::<T, 2>(image, patches, row_len, pixels),
        3 => im2col_blocks::<T, 3>(image, patches, row_len, pixels),
        4 => im2col_blocks::<T, 4>(image, patches, row_len, pixels),
        5 => im2col_blocks::<T, 5>(image, patches, row_len, pixels),
        6 => im2col_blocks::<T, 6>(image, patches, row_len, pixels),
        7 => im2col_blocks::<T, 7>(image, patches, row_len, pixels),
        8 => im2col_blocks::<T, 8>(image, patches, row_len, pixels),
        _ => im2col_blocks::<T, 0>(image, patches, row_len, pixels),
    }
}

/// An image under a window, and the value outside it.
#[derive(Clone, Copy)]
struct PatchSource<'a, T> {
    window: &'a Window,
    image: &'a [T],
    pad: T,
}

/// [`im2col`] copying each kernel row of a window inside the image as `BLOCKS` blocks of 16
/// bytes, or exactly when `BLOCKS` is 0.
#[inline(always)]
fn im2col_blocks<T: Copy, const BLOCKS: usize>(
    source: PatchSource<'_, T>,
    patches: &mut [T],
    row_len: usize,
    pixels: &[[usize; 2]],
) {
    let PatchSource { window, image, .. } = source;
    let [height, width, channels] = window.input;
    let (size, run, line) = (window.size, window.size * channels, width * channels);
    let covered = match BLOCKS {
        0 => run,
        blocks => blocks * (16 / size_of::<T>()).max(1),
    };
    for (index, &[oy, ox]) in pixels.iter().enumerate() {
        let row = &mut patches[index * row_len..];
        let y0 = (oy * window.stride) as isize - window.pads.top as isize;
        let x0 = (ox * window.stride) as isize - window.pads.left as isize;
        let inside =
            y0 >= 0 && x0 >= 0 && y0 as usize + size <= height && x0 as usize + size <= width;
        if !inside {
            border_patch(source, &mut row[..size * run], y0, x0);
            continue;
        }
        let mut from = (y0 as usize * width + x0 as usize) * channels;
        for ky in 0..size {
            let at = ky * run;
            if row.len() >= at + covered && image.len() >= from + covered {
                row[at..at + covered].copy_from_slice(&image[from..from + covered]);
            } else {
                row[at..at + run].copy_from_slice(&image[from..from + run]);
            }
            from += line;
        }
    }
}

/// The patch of a window reaching outside the image, its top-left corner at `(y0, x0)`:
/// `pad` where it is outside.
fn border_patch<T: Copy>(source: PatchSource<'_, T>, patch: &mut [T], y0: isize, x0: isize) {
    let PatchSource { window, image, pad } = source;
    let [height, width, channels] = window.input;
    let run = window.size * channels;
    for (ky, line) in patch.chunks_mut(run).enumerate() {
        let y = y0 + ky as isize;
        for (kx, cell) in line.chunks_mut(channels).enumerate() {
            let x = x0 + kx as isize;
            if y < 0 || y >= height as isize || x < 0 || x >= width as isize {
                cell.fill(pad);
            } else {
                let start = (y as usize * width + x as usize) * channels;
                cell.copy_from_slice(&image[start..start + channels]);
            }
        }
    }
}

/// Writes `image` with `window`'s padding around it, each padded value `pad`, into the first
/// [`Window::padded_input`] values of `out`.
pub(crate) fn pad_image<T: Copy>(window: &Window, image: &[T], pad: T, out: &mut [T]) {
    let [height, width, channels] = window.input;
    let [padded_height, padded_width, _] = window.padded_input();
    let (line, padded_line) = (width * channels, padded_width * channels);
    let (left, right) = (window.pads.left * channels, window.pads.right * channels);
    let rows = out[..padded_height * padded_line].chunks_exact_mut(padded_line);
    for (y, row) in rows.enumerate() {
        match y.checked_sub(window.pads.top).filter(|&y| y < height) {
            Some(y) => {
                row[..left].fill(pad);
                row[left..left + line].copy_from_slice(&image[y * line..(y + 1) * line]);
                row[padded_line - right..].fill(pad);
            }
            None => row.fill(pad),
        }
    }
}

/// Output pixels `pixels` of an image `columns` wide, in row-major order, as `[row, column]`.
pub(crate) fn row_major(
    columns: usize,
    pixels: std::ops::Range<usize>,
) -> impl Iterator<Item = [usize; 2]> {
    let (mut y, mut x) = (pixels.start / columns, pixels.start % columns);
    pixels.map(move |_| {
        let pixel = [y, x];
        x += 1;
        if x == columns {
            (y, x) = (y + 1, 0);
        }
        pixel
    })
}

/// The pixels under windows `windows` of a `size`×`size` pooling moved by `size` over an
/// image, `columns` windows wide: each window's pixels row by row, the windows in row-major
/// order.
pub(crate) fn pooled_order(
    columns: usize,
    size: usize,
    windows: std::ops::Range<usize>,
) -> impl Iterator<Item = [usize; 2]> {
    row_major(columns, windows).flat_map(move |[y, x]| {
        (0..size).flat_map(move |dy| (0..size).map(move |dx| [y * size + dy, x * size + dx]))
    })
}

/// `f32` pooling over the clipped windows of `window`.
fn pool_f32(window: &Window, max: bool, image: &[f32], out: &mut [f32]) {
    let [_, width, channels] = window.input;
    for (pixel, out) in out.chunks_mut(channels).enumerate() {
        let (rows, cols) = (
            window.span(0, pixel / window.output[1]),
            window.span(1, pixel % window.output[1]),
        );
        let count = (rows.len() * cols.len()) as f32;
        for (c, out) in out.iter_mut().enumerate() {
            let values = rows
                .clone()
                .flat_map(|y| cols.clone().map(move |x| (y * width + x) * channels + c));
            *out = if max {
                values.map(|at| image[at]).fold(f32::NEG_INFINITY, f32::max)
            } else {
                values.map(|at| image[at]).sum::<f32>() / count
            };
        }
    }
}
