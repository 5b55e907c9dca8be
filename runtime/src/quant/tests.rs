//! The int8 ops against plain integer references: a convolution with padding and stride, the
//! poolings over clipped windows, and the table of an activation.

use constnet_catalogue::{Padding, Pads};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::build::{StepParams, build_step, quantize_linear};
use super::float::{Elementwise, FloatOp, FloatStep, Window};
use super::ops::{Destination, LinearOutput, Op, padded_image_bytes};
use super::scheme::Quantization;
use super::*;

/// A window over `input` with `pads`, its output size computed.
fn window(input: [usize; 3], size: usize, stride: usize, pads: Pads) -> Window {
    let padding = Padding::Explicit(pads);
    let (h, w) = padding
        .output((input[0], input[1]), size, stride)
        .expect("fits");
    Window {
        input,
        output: [h, w],
        size,
        stride,
        pads,
    }
}

/// The int8 convolution of `step` built with calibrated-looking quantizations.
fn conv_op(window: Window, filters: usize, relu: bool, seed: u64) -> (Op, Quantization, Step) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let k = window.size * window.size * window.input[2];
    let float = FloatStep {
        name: "conv1+relu1".to_string(),
        op: FloatOp::Conv {
            window,
            filters,
            weight: (0..k * filters)
                .map(|_| rng.random_range(-0.5..0.5))
                .collect(),
            bias: (0..filters).map(|_| rng.random_range(-0.2..0.2)).collect(),
            relu,
        },
        output_len: window.pixels() * filters,
    };
    let input = Quantization {
        scale: 0.02,
        zero_point: 37,
    };
    let output = Quantization::of_range(-3.0, 4.0);
    let params = StepParams {
        output,
        linear: quantize_linear(&float, input).expect("in range"),
    };
    let step = build_step(&float, input, params, false).expect("in range");
    (step.op.clone(), input, step)
}

/// A direct convolution over bytes, padded with the input's zero point, requantized as the
/// op's epilogue defines.
fn conv_reference(window: &Window, step: &Step, input: Quantization, image: &[u8]) -> Vec<u8> {
    let Op::Conv {
        weights,
        output: LinearOutput::U8(requantization),
        ..
    } = &step.op
    else {
        unreachable!()
    };
    let [height, width, channels] = window.input;
    let filters = weights.cols();
    // The layer's weights as quantized, row-major `K × filters`, not as packed for the product.
    let weights = &step
        .linear
        .as_ref()
        .expect("a convolution's")
        .weights
        .values;
    let mut out = Vec::new();
    for oy in 0..window.output[0] {
        for ox in 0..window.output[1] {
            for f in 0..filters {
                let mut sum = 0i32;
                for ky in 0..window.size {
                    for kx in 0..window.size {
                        let y = (oy * window.stride + ky) as isize - window.pads.top as isize;
                        let x = (ox * window.stride + kx) as isize - window.pads.left as isize;
                        let inside =
                            (0..height as isize).contains(&y) && (0..width as isize).contains(&x);
                        for c in 0..channels {
                            let value = if inside {
                                image[(y as usize * width + x as usize) * channels + c]
                            } else {
                                input.zero_point
                            };
                            let row = (ky * window.size + kx) * channels + c;
                            sum += i32::from(value) * i32::from(weights[row * filters + f]);
                        }
                    }
                }
                out.push(requantization.output(f, sum));
            }
        }
    }
    out
}

#[test]
fn convolutions_match_the_direct_integer_convolution() {
    // Each case with whether its windows are read in place (from the image, or from its
    // padded copy): not when kernel rows rounded up to whole groups would multiply too much
    // more than the patch (3x3 of three channels into 130 filters, padded or not); otherwise
    // in place, kernel rows of whole groups or rounded up to them (one channel, 3x3 and 5x5;
    // three channels, 1x1 and 5x5).
    let cases = [
        (
            window(
                [8, 7, 4],
                3,
                2,
                Pads {
                    top: 1,
                    bottom: 1,
                    left: 0,
                    right: 2,
                },
            ),
            20,
            true,
        ),
        (window([6, 6, 3], 5, 1, Pads::uniform(2)), 17, true),
        (window([6, 6, 3], 3, 1, Pads::default()), 130, false),
        (window([6, 6, 3], 3, 1, Pads::uniform(1)), 130, false),
        (window([9, 9, 1], 5, 1, Pads::default()), 8, true),
        (window([9, 9, 1], 5, 2, Pads::uniform(2)), 6, true),
        (window([9, 9, 1], 3, 1, Pads::default()), 5, true),
        (window([7, 9, 4], 3, 1, Pads::default()), 24, true),
        (window([9, 9, 8], 3, 2, Pads::default()), 16, true),
        (window([5, 6, 3], 1, 1, Pads::default()), 9, true),
    ];
    for (case, (window, filters, in_place)) in cases.into_iter().enumerate() {
        for relu in [false, true] {
            let (op, input, step) = conv_op(window, filters, relu, case as u64);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(case as u64 + 50);
            let len: usize = window.input.iter().product();
            // A group of bytes past the image, which a window read in place may reach.
            let image: Vec<u8> = (0..len + GROUP).map(|_| rng.random()).collect();
            let expected = conv_reference(&window, &step, input, &image[..len]);
            let mut out = vec![0u8; expected.len()];
            let Op::Conv { weights, rows, .. } = &op else {
                unreachable!()
            };
            assert_eq!(rows.in_place.is_some(), in_place, "case {case}");
            let scratch = window.pixels() * weights.padded_rows() + padded_image_bytes(&window);
            let mut patches = vec![0u8; scratch];
            let destination = Destination::Bytes(&mut out);
            op.run(
                &image,
                len,
                1,
                input.zero_point,
                destination,
                expected.len(),
                &mut patches,
            );
            assert_eq!(out, expected, "case {case}, relu {relu}");
            if relu {
                assert!(out.iter().all(|&q| q >= step.output.zero_point));
            }
        }
    }
}

#[test]
fn a_max_pooling_in_the_convolution_epilogue_equals_the_pooling_of_its_bytes() {
    // An odd output (its last row and column never pooled), padding, and filters filling
    // one panel, part of one and several.
    let cases = [
        (window([9, 9, 1], 3, 1, Pads::default()), 16),
        (window([10, 10, 3], 3, 1, Pads::uniform(1)), 136),
        (window([8, 8, 2], 3, 1, Pads::default()), 40),
        (window([9, 9, 4], 3, 1, Pads::default()), 32),
    ];
    for (case, (conv_window, filters)) in cases.into_iter().enumerate() {
        let (_, input, conv) = conv_op(conv_window, filters, case != 1, case as u64 + 9);
        let [height, width] = conv_window.output;
        let pool_window = window([height, width, filters], 2, 2, Pads::default());
        let pool = Step {
            name: "pool1".to_string(),
            key: "pool1".to_string(),
            op: Op::Pool {
                max: true,
                window: pool_window,
            },
            output: conv.output,
            output_len: pool_window.pixels() * filters,
            linear: None,
        };
        let fused = build::fuse_max_pools(vec![conv.clone(), pool.clone()]);
        assert_eq!(fused.len(), 1, "case {case}: one step");
        assert_eq!(fused[0].name, "conv1+relu1+pool1");
        let Op::Conv { rows, .. } = &fused[0].op else {
            unreachable!()
        };
        assert_eq!(rows.in_place.is_some(), case != 1, "case {case}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(case as u64 + 70);
        let len: usize = conv_window.input.iter().product();
        let image: Vec<u8> = (0..len + GROUP).map(|_| rng.random()).collect();
        let conv_bytes = run_op(&conv.op, &image, input.zero_point, conv.output_len);
        let pooled = run_op(&pool.op, &conv_bytes, 0, pool.output_len);
        let fused_bytes = run_op(&fused[0].op, &image, input.zero_point, pool.output_len);
        assert_eq!(fused_bytes, pooled, "case {case}");
    }
}

/// The `out_len` bytes `op` makes of one sample, `input`, of zero point `zero`.
fn run_op(op: &Op, input: &[u8], zero: u8, out_len: usize) -> Vec<u8> {
    let mut patches = vec![0u8; 64 * 1024];
    let mut out = vec![0u8; out_len];
    let destination = Destination::Bytes(&mut out);
    op.run(
        input,
        input.len(),
        1,
        zero,
        destination,
        out_len,
        &mut patches,
    );
    out
}

#[test]
fn poolings_take_the_maximum_and_the_mean_rounded_halves_to_even_of_clipped_windows() {
    let window = window(
        [5, 5, 3],
        2,
        2,
        Pads {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1,
        },
    );
    let image: Vec<u8> = (0..75).map(|i| (i * 37 % 256) as u8).collect();
    for max in [true, false] {
        let op = Op::Pool { max, window };
        let mut out = vec![0u8; 27];
        op.run(&image, 76, 1, 0, Destination::Bytes(&mut out), 28, &mut []);
        for oy in 0..3 {
            for ox in 0..3 {
                for c in 0..3 {
                    let values: Vec<u32> = (oy * 2..(oy * 2 + 2).min(5))
                        .flat_map(|y| (ox * 2..(ox * 2 + 2).min(5)).map(move |x| (y, x)))
                        .map(|(y, x)| u32::from(image[(y * 5 + x) * 3 + c]))
                        .collect();
                    let count = values.len() as u32;
                    let want = if max {
                        *values.iter().max().unwrap()
                    } else {
                        let mean = f64::from(values.iter().sum::<u32>()) / f64::from(count);
                        mean.round_ties_even() as u32
                    };
                    assert_eq!(
                        u32::from(out[(oy * 3 + ox) * 3 + c]),
                        want,
                        "max {max}, ({oy}, {ox}, {c})"
                    );
                }
            }
        }
    }
}

#[test]
fn activation_tables_quantize_the_function_of_each_byte() {
    let input = Quantization::of_range(-4.0, 4.0);
    let output = Quantization::of_range(0.0, 1.0);
    let table = ops::lookup_table(Elementwise::Sigmoid, input, output);
    for q in 0..=255u8 {
        let x = input.dequantize(q);
        let y = 1.0 / (1.0 + (-x).exp());
        assert!((output.dequantize(table[usize::from(q)]) - y).abs() <= output.scale / 2.0 + 1e-6);
    }
}
