//! The int8 ops and how each runs on a part of a batch: a convolution (the int8 GEMM of its
//! windows, read in place from the image, or from its padded copy, where they can be, else
//! copied by im2col, with a 2x2 max pooling after it in the GEMM's epilogue), a dense layer
//! (the int8 GEMM over the part's samples), a pooling on bytes
//! (a maximum of bytes is the byte of the maximum; a mean keeps its input's scale), and an
//! element-wise activation as a table of 256 bytes. Each op reads its input's bytes and writes
//! its own, every sample's values padded to a whole number of [`GROUP`]s so a dense layer can
//! read them as rows of `A`.

use super::float::{Elementwise, Window, im2col, pad_image, pooled_order, row_major};
use super::scheme::Quantization;
use crate::kernels::int8::{
    Dequantization, GROUP, Int8Lhs, Int8Output, POOLED_ROWS, PackedWeights, Requantization,
    gemm_u8i8,
};
use crate::schedule;

/// What an op computes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    /// A convolution: the int8 product of its windows (read in place or copied by im2col, as
    /// `rows` says), and the 2x2 max pooling after it when the pooling runs in its epilogue
    /// ([`is_fusable_pool`]).
    Conv {
        window: Window,
        weights: PackedWeights,
        output: LinearOutput,
        pool: Option<Box<Window>>,
        /// The product's rows: which window each is, and how it is read.
        rows: Box<ProductRows>,
    },
    /// A dense layer.
    Dense {
        weights: PackedWeights,
        output: LinearOutput,
    },
    /// Max or average pooling; the output keeps the input's quantization.
    Pool { max: bool, window: Window },
    /// Max or mean of each channel; the output keeps the input's quantization.
    GlobalPool {
        max: bool,
        pixels: usize,
        channels: usize,
    },
    /// An element-wise function, as the output byte of each input byte.
    Lookup {
        function: Elementwise,
        table: Box<[u8; 256]>,
    },
}

/// How a convolution or dense layer stores its sums.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LinearOutput {
    /// As bytes, for the next op.
    U8(Requantization),
    /// As `f32`: the network's last op, before its head.
    F32(Dequantization),
}

/// Whether a max pooling of `window` can run in the epilogue of the convolution before it: a
/// 2x2 window moved by 2 without padding, so each of its windows is four of the convolution's
/// pixels (a last odd row or column is never read).
pub(crate) fn is_fusable_pool(window: &Window) -> bool {
    window.size == 2 && window.stride == 2 && !window.is_padded()
}

/// The rows of a convolution's product: a row per output pixel, or per pixel under the
/// windows of the max pooling in its epilogue, four at a time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProductRows {
    /// The output pixel of each row, `[row, column]`, in order.
    pub pixels: Vec<[usize; 2]>,
    /// Where each row's window starts in the image, when the product reads the windows in
    /// place ([`in_place_run`]); `None` when im2col copies them.
    pub in_place: Option<Vec<usize>>,
}

impl ProductRows {
    /// The rows of a convolution over `window` into `filters` filters, with `pool`'s max
    /// pooling in its epilogue.
    pub fn of(window: &Window, filters: usize, pool: Option<&Window>) -> Box<Self> {
        let pixels: Vec<[usize; 2]> = match pool {
            Some(pool) => pooled_order(pool.output[1], pool.size, 0..pool.pixels()).collect(),
            None => row_major(window.output[1], 0..window.pixels()).collect(),
        };
        let [_, width, channels] = window.padded_input();
        let in_place = in_place_run(window, filters).map(|_| {
            let start = |&[y, x]: &[usize; 2]| (y * width + x) * window.stride * channels;
            pixels.iter().map(start).collect()
        });
        Box::new(ProductRows { pixels, in_place })
    }
}

/// Multiply-adds a row of a convolution's product may gain by reading its window in place
/// rather than copying it: the cost of one patch row's copy (a few vector moves and the
/// window's position, some twenty cycles) in `vpdpbusd` multiply-adds (64 a cycle). A 5x5
/// convolution of one channel into 32 filters multiplies 384 more a row in place (kernel rows
/// of 8 bytes, not a patch of 28) and runs 1.4x as fast as with im2col (AMD EPYC, W2).
const IN_PLACE_MAX_EXTRA_MULS: usize = 1024;

/// Bytes of each kernel row the product of a convolution over `window` into `filters` filters
/// reads when it reads the windows in place ([`Int8Lhs::windows`]), or `None` when im2col
/// copies them.
///
/// In place, a window's kernel row is its `size · channels` bytes rounded up to whole groups;
/// the bytes past them (the next pixels of the image row, or past the image's last byte by
/// less than a group) meet zero rows of the weights, so they add nothing. A padded
/// convolution reads its windows from a copy of the image with the padding around it
/// ([`pad_image`], once per image). A window whose rounded kernel rows would multiply more
/// than [`IN_PLACE_MAX_EXTRA_MULS`] beyond its rounded patch is copied.
pub(crate) fn in_place_run(window: &Window, filters: usize) -> Option<usize> {
    let kernel_row = window.size * window.input[2];
    let run = padded(kernel_row);
    let extra = window.size * run - padded(window.size * kernel_row);
    (extra * filters <= IN_PLACE_MAX_EXTRA_MULS).then_some(run)
}

/// Bytes of the padded copy of an image a padded convolution over `window` reads in place,
/// with a group spare past its end ([`in_place_run`]).
pub(crate) fn padded_image_bytes(window: &Window) -> usize {
    window.padded_input().iter().product::<usize>() + GROUP
}

/// Bytes per sample of a tensor of `len` values: `len` rounded up to whole groups.
pub(crate) fn padded(len: usize) -> usize {
    len.div_ceil(GROUP) * GROUP
}

/// The values of a step's table: each input byte's value through `function`, quantized.
pub(crate) fn lookup_table(
    function: Elementwise,
    input: Quantization,
    output: Quantization,
) -> Box<[u8; 256]> {
    Box::new(std::array::from_fn(|q| {
        output.quantize(function.apply(input.dequantize(q as u8)))
    }))
}

/// Where an op writes: bytes or, for the last op, `f32`s.
pub(crate) enum Destination<'a> {
    Bytes(&'a mut [u8]),
    Floats(&'a mut [f32]),
}

impl<'a> Destination<'a> {
    /// The first `at` values and the rest.
    fn split_at(self, at: usize) -> (Destination<'a>, Destination<'a>) {
        match self {
            Destination::Bytes(values) => {
                let (first, rest) = values.split_at_mut(at);
                (Destination::Bytes(first), Destination::Bytes(rest))
            }
            Destination::Floats(values) => {
                let (first, rest) = values.split_at_mut(at);
                (Destination::Floats(first), Destination::Floats(rest))
            }
        }
    }

    /// The bytes, for an op that writes bytes.
    fn bytes(self) -> &'a mut [u8] {
        match self {
            Destination::Bytes(values) => values,
            Destination::Floats(_) => unreachable!("only a linear op writes f32"),
        }
    }
}

impl Op {
    /// Whether it writes `f32`s (the network's last op, a convolution or dense layer whose
    /// sums are scaled to `f32`), not bytes.
    pub fn writes_f32(&self) -> bool {
        matches!(
            self,
            Op::Conv {
                output: LinearOutput::F32(_),
                ..
            } | Op::Dense {
                output: LinearOutput::F32(_),
                ..
            }
        )
    }

    /// Multiply-adds per sample.
    pub fn muls(&self) -> usize {
        match self {
            Op::Conv { weights, rows, .. } => rows.pixels.len() * weights.rows() * weights.cols(),
            Op::Dense { weights, .. } => weights.rows() * weights.cols(),
            _ => 0,
        }
    }

    /// Runs the op on `samples` samples of `input` (`in_stride` bytes apart) into `output`
    /// (`out_stride` values apart), with `patches` as im2col scratch for one sample, `zero` the
    /// input's zero point (a convolution's pad).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        input: &[u8],
        in_stride: usize,
        samples: usize,
        zero: u8,
        output: Destination<'_>,
        out_stride: usize,
        patches: &mut [u8],
    ) {
        let inputs = input.chunks(in_stride).take(samples);
        match self {
            Op::Conv {
                window,
                weights,
                output: how,
                pool,
                rows,
            } => {
                // Each image reaches to the end of the input: a window read in place may read
                // past its image's last byte (into zero weights, [`in_place_run`]).
                let images = (0..samples).map(|sample| &input[sample * in_stride..]);
                let mut output = output;
                for image in images {
                    let len = out_stride.min(rest_len(&output));
                    let (out, rest) = output.split_at(len);
                    let conv = Convolution {
                        window,
                        pool: pool.as_deref(),
                        rows,
                        weights,
                        how,
                    };
                    conv.run(image, zero, out, patches);
                    output = rest;
                }
            }
            Op::Dense {
                weights,
                output: how,
            } => {
                let lhs = Int8Lhs::strided(input, samples, in_stride);
                linear(lhs, weights, how, output, [out_stride, 1]);
            }
            Op::Pool { max, window } => {
                for (image, out) in inputs.zip(output.bytes().chunks_mut(out_stride)) {
                    pool(window, *max, image, out);
                }
            }
            Op::GlobalPool {
                max,
                pixels,
                channels,
            } => {
                for (image, out) in inputs.zip(output.bytes().chunks_mut(out_stride)) {
                    global_pool(*max, *pixels, *channels, image, out);
                }
            }
            Op::Lookup { table, .. } => {
                for (image, out) in inputs.zip(output.bytes().chunks_mut(out_stride)) {
                    for (o, &q) in out.iter_mut().zip(image) {
                        *o = table[usize::from(q)];
                    }
                }
            }
        }
    }
}

/// Values left in `destination`.
fn rest_len(destination: &Destination<'_>) -> usize {
    match destination {
        Destination::Bytes(values) => values.len(),
        Destination::Floats(values) => values.len(),
    }
}

/// A convolution as one image runs through it.
struct Convolution<'a> {
    window: &'a Window,
    /// The max pooling in its epilogue.
    pool: Option<&'a Window>,
    rows: &'a ProductRows,
    weights: &'a PackedWeights,
    how: &'a LinearOutput,
}

impl Convolution<'_> {
    /// Output rows of the product each output pixel is made of.
    fn rows_per_pixel(&self) -> usize {
        if self.pool.is_some() { POOLED_ROWS } else { 1 }
    }

    /// One image (`zero` its zero point) through the convolution: its windows' product (after
    /// im2col when they are not read in place, or the image's padded copy when they are read
    /// in place from it). On a pass that may split (batches smaller than the pool), the output
    /// pixels are split between two threads when each half has enough work.
    fn run(&self, image: &[u8], zero: u8, output: Destination<'_>, patches: &mut [u8]) {
        let (image, patches) = match self.rows.in_place {
            Some(_) if self.window.is_padded() => {
                let (copy, rest) = patches.split_at_mut(padded_image_bytes(self.window));
                pad_image(self.window, image, zero, copy);
                (&*copy, rest)
            }
            _ => (image, patches),
        };
        let (row_len, filters) = (self.weights.padded_rows(), self.weights.cols());
        let rows_per_pixel = self.rows_per_pixel();
        let pixels = self.rows.pixels.len() / rows_per_pixel;
        let muls = self.rows.pixels.len() * self.weights.rows() * filters;
        let split = schedule::pass_threads() > 1
            && muls / 2
                >= schedule::min_muls_per_part(schedule::splits().gemm_min_muls_per_awake_part);
        if !split {
            return self.pixels(0..pixels, image, zero, patches, output);
        }
        let middle = pixels / 2;
        let copied = match self.rows.in_place {
            Some(_) => 0,
            None => middle * rows_per_pixel * row_len,
        };
        let (first, second) = patches.split_at_mut(copied);
        let (top, bottom) = output.split_at(middle * filters);
        rayon::join(
            || self.pixels(0..middle, image, zero, first, top),
            || self.pixels(middle..pixels, image, zero, second, bottom),
        );
    }

    /// Output pixels `pixels` of one image (of its pooling, when it has one): their windows'
    /// product.
    fn pixels(
        &self,
        pixels: std::ops::Range<usize>,
        image: &[u8],
        zero: u8,
        patches: &mut [u8],
        output: Destination<'_>,
    ) {
        let (window, row_len) = (self.window, self.weights.padded_rows());
        let rows_per_pixel = self.rows_per_pixel();
        let rows = pixels.start * rows_per_pixel..pixels.end * rows_per_pixel;
        let lhs = match &self.rows.in_place {
            Some(starts) => {
                let [_, width, channels] = window.padded_input();
                Int8Lhs::windows(image, &starts[rows], window.size, width * channels)
            }
            None => {
                let pixels = &self.rows.pixels[rows];
                im2col(window, image, zero, patches, row_len, pixels);
                Int8Lhs::strided(patches, pixels.len(), row_len)
            }
        };
        let layout = [self.weights.cols(), rows_per_pixel];
        linear(lhs, self.weights, self.how, output, layout);
    }
}

/// The product of `lhs` and `weights` into `output`, whose `layout` is `[row stride, rows of
/// the product each output row is the largest of]`. A single row (one sample through a dense
/// layer) splits its panels between two threads on a pass that may split, when each half has
/// enough work.
fn linear(
    lhs: Int8Lhs<'_>,
    weights: &PackedWeights,
    how: &LinearOutput,
    output: Destination<'_>,
    layout: [usize; 2],
) {
    let panels = weights.panels();
    let muls = lhs.rows() * weights.rows() * weights.cols();
    let split = lhs.rows() == 1
        && panels > 1
        && schedule::pass_threads() > 1
        && muls / 2
            >= schedule::min_muls_per_part(schedule::splits().gemm_min_muls_per_column_part);
    if !split {
        return store(lhs, weights, 0..panels, how, output, layout);
    }
    let middle = panels / 2;
    let (left, right) = output.split_at(middle * crate::kernels::int8::LANES);
    rayon::join(
        || store(lhs, weights, 0..middle, how, left, layout),
        || store(lhs, weights, middle..panels, how, right, layout),
    );
}

/// The product for panels `panels`, stored as `how` says in `layout` (as [`linear`]'s).
fn store(
    lhs: Int8Lhs<'_>,
    weights: &PackedWeights,
    panels: std::ops::Range<usize>,
    how: &LinearOutput,
    output: Destination<'_>,
    [row_stride, max_of]: [usize; 2],
) {
    let output = match (how, output) {
        (LinearOutput::U8(requantization), Destination::Bytes(out)) => Int8Output::U8 {
            out,
            row_stride,
            requantization,
            max_of,
        },
        (LinearOutput::F32(dequantization), Destination::Floats(out)) => Int8Output::F32 {
            out,
            row_stride,
            dequantization,
        },
        _ => unreachable!("an op's destination is what its output says"),
    };
    gemm_u8i8(lhs, weights, panels, output);
}

/// Pooling of bytes over the clipped windows of `window`: the largest byte, or the mean
/// rounded to nearest ([`mean_byte`]).
fn pool(window: &Window, max: bool, image: &[u8], out: &mut [u8]) {
    let [_, width, channels] = window.input;
    let mut sums = [0u32; 512];
    for (pixel, out) in out.chunks_mut(channels).take(window.pixels()).enumerate() {
        let rows = window.span(0, pixel / window.output[1]);
        let cols = window.span(1, pixel % window.output[1]);
        let count = (rows.len() * cols.len()) as u32;
        for (start, out) in (0..channels)
            .step_by(sums.len())
            .zip(out.chunks_mut(sums.len()))
        {
            let sums = &mut sums[..out.len()];
            if max {
                out.fill(0);
            } else {
                sums.fill(0);
            }
            for y in rows.clone() {
                for x in cols.clone() {
                    let at = (y * width + x) * channels + start;
                    let values = &image[at..at + out.len()];
                    if max {
                        out.iter_mut()
                            .zip(values)
                            .for_each(|(o, &v)| *o = (*o).max(v));
                    } else {
                        sums.iter_mut()
                            .zip(values)
                            .for_each(|(s, &v)| *s += u32::from(v));
                    }
                }
            }
            if !max {
                out.iter_mut()
                    .zip(sums.iter())
                    .for_each(|(o, &s)| *o = mean_byte(s, count));
            }
        }
    }
}

/// `sum / count` rounded to nearest, halves to even: as ONNX's `QuantizeLinear` rounds the
/// mean a float average pooling makes (halves are common: a quarter of 2x2 windows), and
/// without the bias of rounding halves up.
pub(crate) fn mean_byte(sum: u32, count: u32) -> u8 {
    let (quotient, remainder) = (sum / count, sum % count);
    let up = 2 * remainder > count || (2 * remainder == count && quotient % 2 == 1);
    (quotient + u32::from(up)) as u8
}

/// The largest byte, or the rounded mean ([`mean_byte`]), of each channel over `pixels`
/// pixels.
fn global_pool(max: bool, pixels: usize, channels: usize, image: &[u8], out: &mut [u8]) {
    for (c, out) in out.iter_mut().take(channels).enumerate() {
        let values = image.iter().skip(c).step_by(channels).take(pixels);
        *out = if max {
            values.copied().max().unwrap_or(0)
        } else {
            let sum: u32 = values.map(|&v| u32::from(v)).sum();
            mean_byte(sum, pixels as u32)
        };
    }
}
