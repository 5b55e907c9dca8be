//! Every int8 path against the plain integer reference, bit for bit.

use super::*;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// `A` as `gemm_u8i8` reads it (rows padded to whole groups with junk the zero rows of `B`
/// must cancel) and as the reference reads it (`rows × k`).
struct Operands {
    padded_a: Vec<u8>,
    a: Vec<u8>,
    b: Vec<i8>,
    stride: usize,
}

fn operands(rows: usize, k: usize, n: usize, seed: u64) -> Operands {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let stride = k.div_ceil(GROUP) * GROUP + 4;
    let padded_a: Vec<u8> = (0..rows * stride).map(|_| rng.random()).collect();
    let a = (0..rows)
        .flat_map(|i| padded_a[i * stride..i * stride + k].to_vec())
        .collect();
    let b = (0..k * n).map(|_| rng.random_range(-127..=127)).collect();
    Operands {
        padded_a,
        a,
        b,
        stride,
    }
}

fn requantization(n: usize, seed: u64, relu: bool) -> Requantization {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let padded = n.div_ceil(LANES) * LANES;
    let zero_point = rng.random_range(0..=255);
    let offset = (0..padded)
        .map(|_| rng.random_range(-50_000..50_000))
        .collect();
    let requantizer: Vec<Requantizer> = (0..padded)
        .map(|_| Requantizer::from_scale(rng.random_range(1e-5..2e-3)))
        .collect();
    Requantization::new(offset, &requantizer, zero_point, relu)
}

/// Shapes with every remainder: rows not a whole tile (and past a short tile), `K` not a whole
/// group, `N` not a whole
/// panel or tile of panels, and the shapes of the MNIST networks' layers.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (3, 9, 32),
    (17, 13, 10),
    (9, 288, 64),
    (2, 300, 50),
    (11, 64, 128),
    (1, 9216, 128),
    (20, 37, 33),
    (15, 40, 48),
    (12, 700, 20),
];

/// The product of `lhs` and `packed` on path `isa`, requantized by `rq` into `len` bytes of
/// rows as wide as `packed`, each the largest of `max_of` rows of the product.
fn requantized(
    isa: Int8Isa,
    lhs: Int8Lhs<'_>,
    packed: &PackedWeights,
    rq: &Requantization,
    max_of: usize,
    len: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let output = Int8Output::U8 {
        out: &mut out,
        row_stride: packed.cols(),
        requantization: rq,
        max_of,
    };
    gemm_u8i8_with(isa, lhs, packed, 0..packed.panels(), output);
    out
}

#[test]
fn every_path_requantizes_as_the_reference() {
    for (shape, &(rows, k, n)) in SHAPES.iter().enumerate() {
        let ops = operands(rows, k, n, shape as u64);
        let sums = gemm_reference(&ops.a, &ops.b, rows, k, n);
        let packed = PackedWeights::pack(&ops.b, k, n);
        for relu in [false, true] {
            let rq = requantization(n, shape as u64 + 100, relu);
            let expected: Vec<u8> = (0..rows * n)
                .map(|at| rq.output(at % n, sums[at]))
                .collect();
            for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
                let lhs = Int8Lhs::strided(&ops.padded_a, rows, ops.stride);
                let out = requantized(isa, lhs, &packed, &rq, 1, rows * n);
                assert_eq!(out, expected, "{} path, {rows}x{k}x{n}", isa.name());
            }
        }
    }
}

#[test]
fn every_path_pools_rows_in_fours_as_the_largest_requantized_byte() {
    // Rows in whole windows of four: whole tiles, tiles and remainder rows, a window split
    // between a tile and the remainder on paths with tiles of fewer rows.
    for (shape, &(rows, k, n)) in [(4, 9, 32), (12, 288, 64), (20, 37, 33), (36, 13, 10)]
        .iter()
        .enumerate()
    {
        let ops = operands(rows, k, n, shape as u64 + 20);
        let sums = gemm_reference(&ops.a, &ops.b, rows, k, n);
        let packed = PackedWeights::pack(&ops.b, k, n);
        let rq = requantization(n, shape as u64 + 40, shape % 2 == 0);
        let expected: Vec<u8> = (0..rows / POOLED_ROWS * n)
            .map(|at| {
                let (window, col) = (at / n, at % n);
                let rows = window * POOLED_ROWS..(window + 1) * POOLED_ROWS;
                let bytes = rows.map(|row| rq.output(col, sums[row * n + col]));
                bytes.max().expect("four rows")
            })
            .collect();
        for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
            let lhs = Int8Lhs::strided(&ops.padded_a, rows, ops.stride);
            let out = requantized(isa, lhs, &packed, &rq, POOLED_ROWS, expected.len());
            assert_eq!(out, expected, "{} path, {rows}x{k}x{n}", isa.name());
        }
    }
}

#[test]
fn every_path_reads_windows_in_place_as_their_copied_rows() {
    // A 6x7 image of 4 channels under a 3x3 kernel: rows of 3 runs of 12 bytes, 28 apart.
    let (width, channels, size, n) = (7, 4, 3, 40);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(60);
    let image: Vec<u8> = (0..6 * width * channels).map(|_| rng.random()).collect();
    let (run, k) = (size * channels, size * size * channels);
    let starts: Vec<usize> = (0..4)
        .flat_map(|y| (0..5).map(move |x| (y * width + x) * channels))
        .rev()
        .collect();
    let line = width * channels;
    let copied: Vec<u8> = starts
        .iter()
        .flat_map(|&start| (0..size).map(move |ky| start + ky * line))
        .flat_map(|from| image[from..from + run].to_vec())
        .collect();
    let b: Vec<i8> = (0..k * n).map(|_| rng.random_range(-127..=127)).collect();
    let packed = PackedWeights::pack(&b, k, n);
    let rq = requantization(n, 61, false);
    let rows = starts.len();
    let sums = gemm_reference(&copied, &b, rows, k, n);
    let expected: Vec<u8> = (0..rows * n)
        .map(|at| rq.output(at % n, sums[at]))
        .collect();
    for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
        let lhs = Int8Lhs::windows(&image, &starts, size, line);
        let out = requantized(isa, lhs, &packed, &rq, 1, rows * n);
        assert_eq!(out, expected, "{} path", isa.name());
    }
}

#[test]
fn every_path_dequantizes_as_the_reference() {
    for (shape, &(rows, k, n)) in SHAPES.iter().enumerate() {
        let ops = operands(rows, k, n, shape as u64 + 7);
        let sums = gemm_reference(&ops.a, &ops.b, rows, k, n);
        let packed = PackedWeights::pack(&ops.b, k, n);
        let padded = packed.panels() * LANES;
        let dq = Dequantization {
            offset: (0..padded).map(|j| j as i32 * 31 - 200).collect(),
            scale: (0..padded).map(|j| 1e-4 * (j + 1) as f32).collect(),
        };
        let expected: Vec<f32> = (0..rows * n)
            .map(|at| dq.output(at % n, sums[at]))
            .collect();
        for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
            let mut out = vec![0f32; rows * n];
            let lhs = Int8Lhs::strided(&ops.padded_a, rows, ops.stride);
            let output = Int8Output::F32 {
                out: &mut out,
                row_stride: n,
                dequantization: &dq,
            };
            gemm_u8i8_with(isa, lhs, &packed, 0..packed.panels(), output);
            let (got, want): (Vec<u32>, Vec<u32>) = (
                out.iter().map(|v| v.to_bits()).collect(),
                expected.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(got, want, "{} path, {rows}x{k}x{n}", isa.name());
        }
    }
}

#[test]
fn a_range_of_panels_writes_only_its_columns() {
    let (rows, k, n) = (5, 40, 70);
    let ops = operands(rows, k, n, 3);
    let packed = PackedWeights::pack(&ops.b, k, n);
    let rq = requantization(n, 4, false);
    let sums = gemm_reference(&ops.a, &ops.b, rows, k, n);
    for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
        let mut out = vec![7u8; rows * n];
        let lhs = Int8Lhs::strided(&ops.padded_a, rows, ops.stride);
        let output = Int8Output::U8 {
            out: &mut out[16..],
            row_stride: n,
            requantization: &rq,
            max_of: 1,
        };
        gemm_u8i8_with(isa, lhs, &packed, 1..3, output);
        for (at, &value) in out.iter().enumerate() {
            let col = at % n;
            let want = if (16..48).contains(&col) {
                rq.output(col, sums[at])
            } else {
                7
            };
            assert_eq!(value, want, "{} path, column {col}", isa.name());
        }
    }
}

#[test]
fn requantizers_round_to_nearest_with_halves_up() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for _ in 0..10_000 {
        let scale: f64 = rng.random_range(1e-9..4.0);
        let requantizer = Requantizer::from_scale(scale);
        assert!((requantizer.scale() / scale - 1.0).abs() < 1e-9, "{scale}");
        let x: i64 = rng.random_range(-(1 << 31)..(1 << 31));
        let exact = i128::from(x) * i128::from(requantizer.multiplier);
        let divisor = 1i128 << requantizer.shift;
        // floor((exact + divisor / 2) / divisor), the nearest integer with halves up.
        let want = (exact + divisor / 2).div_euclid(divisor);
        assert_eq!(i128::from(requantizer.apply(x)), want, "{x} · {scale}");
    }
}

#[test]
fn packing_keeps_every_weight_and_pads_with_zeros() {
    let (k, n) = (7, 19);
    let weights: Vec<i8> = (0..k * n).map(|i| (i % 251) as i8).collect();
    let packed = PackedWeights::pack(&weights, k, n);
    for row in 0..packed.padded_rows() {
        for col in 0..packed.panels() * LANES {
            let want = if row < k && col < n {
                weights[row * n + col]
            } else {
                0
            };
            assert_eq!(packed.get(row, col), want, "({row}, {col})");
        }
    }
    let sums = packed.column_sums();
    assert_eq!(sums.len(), 32);
    assert_eq!(
        sums[3],
        (0..k).map(|r| i32::from(weights[r * n + 3])).sum::<i32>()
    );
    assert_eq!(sums[20], 0);
}

#[test]
fn every_path_computes_the_same_peak_loop() {
    let results: Vec<i32> = Int8Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_supported())
        .map(|isa| dot_loop(isa, 100))
        .collect();
    // Lane 0 of `B` is bytes 0..4 = [0, 1, 2, 0]; sum `i` multiplies it by bytes 4i..4i + 4
    // (byte `j` is `j % 3`), adding 5, 2, 2, 5, 2, 2, ... per round: 36 for the 12 sums.
    assert!(results.iter().all(|&r| r == 36 * 100), "{results:?}");
}

#[test]
fn every_path_quantizes_as_the_scalar_definition_including_nan_infinities_and_halves() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(27);
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        f32::MIN_POSITIVE,
        -f32::MAX,
        f32::MAX,
    ];
    for (scale, zero_point) in [(0.01, 0), (0.5, 128), (1.0 / 255.0, 7), (3.0, 255)] {
        // Values on and beside the halfway points of each step, and random ones around the range.
        let halves = (0..600).map(|i| (i as f32 * 0.5 - f32::from(zero_point)) * scale);
        let random = (0..500).map(|_| rng.random_range(-300.0..300.0) * scale);
        let values: Vec<f32> = special.into_iter().chain(halves).chain(random).collect();
        let expected: Vec<u8> = values
            .iter()
            .map(|&x| quantize_value(x, scale, zero_point))
            .collect();
        for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
            // Every length up to two vectors and more, so each tail is covered.
            for len in (0..40).chain([values.len()]) {
                let mut out = vec![0xAA; len];
                quantize_with(isa, &values[..len], scale, zero_point, &mut out);
                assert_eq!(out, expected[..len], "{} at length {len}", isa.name());
            }
        }
    }
    assert_eq!(quantize_value(f32::NAN, 0.1, 9), 0);
    assert_eq!(quantize_value(0.25, 0.5, 0), 1, "a half rounds up");
    assert_eq!(quantize_value(-1.0, 0.5, 0), 0);
    assert_eq!(quantize_value(1e9, 0.5, 0), 255);
}
