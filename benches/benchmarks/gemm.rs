//! constnet's GEMM against nalgebra's matrix product (which runs on `matrixmultiply`), single
//! thread, at the two shapes the MNIST network spends its time in: the conv2 forward pass per
//! image (576 × 288 · 288 × 64) and dense1 at batch 128 (128 × 9216 · 9216 × 128). This is the
//! measurement behind the choice of an own GEMM over nalgebra.

use constnet::kernels::gemm::{MatMut, MatRef, gemm};
use constnet::kernels::int8::{
    Int8Isa, Int8Lhs, Int8Output, LANES, PackedWeights, Requantization, Requantizer, gemm_u8i8_with,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use nalgebra::DMatrix;

use super::measurement::WallClock;
use super::threads;

const SHAPES: [(&str, usize, usize, usize); 2] = [
    ("conv2 forward per image", 576, 64, 288),
    ("dense1 forward batch 128", 128, 128, 9216),
];

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("gemm, 1 thread");
    let pool = threads(1);
    for (label, m, n, k) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        group.bench_function(BenchmarkId::new("constnet", label), |bench| {
            pool.install(|| {
                bench.iter(|| {
                    gemm(
                        MatMut::row_major(&mut out, m, n),
                        MatRef::row_major(&a, m, k),
                        MatRef::row_major(&b, k, n),
                        false,
                    )
                })
            })
        });
        let a = DMatrix::from_row_slice(m, k, &a);
        let b = DMatrix::from_row_slice(k, n, &b);
        let mut out = DMatrix::<f32>::zeros(m, n);
        group.bench_function(BenchmarkId::new("nalgebra", label), |bench| {
            bench.iter(|| out.gemm(1.0, &a, &b, 0.0))
        });
    }
    group.finish();
}

/// The int8 product ([`gemm_u8i8_with`]) at the same two shapes on every int8 path this CPU
/// has, requantizing to bytes as int8 inference does; an int8 multiply-add counts two
/// operations, as a float one does.
pub fn bench_int8(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("gemm int8, 1 thread");
    let pool = threads(1);
    for (label, m, n, k) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let weights: Vec<i8> = (0..k * n).map(|i| (i % 255) as i8).collect();
        let packed = PackedWeights::pack(&weights, k, n);
        let a: Vec<u8> = (0..m * packed.padded_rows())
            .map(|i| (i % 251) as u8)
            .collect();
        let columns = packed.panels() * LANES;
        let requantizer = vec![Requantizer::from_scale(1e-4); columns];
        let requantization = Requantization::new(vec![0; columns], &requantizer, 3, true);
        let mut out = vec![0u8; m * n];
        for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
            group.bench_function(BenchmarkId::new(isa.name(), label), |bench| {
                pool.install(|| {
                    bench.iter(|| {
                        let lhs = Int8Lhs::strided(&a, m, packed.padded_rows());
                        let output = Int8Output::U8 {
                            out: &mut out,
                            row_stride: n,
                            requantization: &requantization,
                            max_of: 1,
                        };
                        gemm_u8i8_with(isa, lhs, &packed, 0..packed.panels(), output)
                    })
                })
            });
        }
    }
    group.finish();
}
