//! The FMA ceiling of one core on each instruction-set path: the 100% against which the kernel
//! figures are read.

use constnet::kernels::Isa;
use constnet::kernels::int8::{self, Int8Isa};
use constnet::kernels::peak::{flops_per_iteration, fma_loop};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;

const ITERATIONS: u64 = 100_000;

pub fn bench(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("fma peak, 1 thread");
    for isa in Isa::supported() {
        group.throughput(Throughput::Elements(ITERATIONS * flops_per_iteration(isa)));
        group.bench_function(BenchmarkId::from_parameter(isa.name()), |b| {
            b.iter(|| fma_loop(isa, ITERATIONS))
        });
    }
    group.finish();
}

/// The int8 ceiling of one core on each int8 path (`vpdpbusd` on AVX-512 VNNI): the 100% of
/// the int8 product's figures, a multiply-add counting two.
pub fn bench_int8(c: &mut Criterion<WallClock>) {
    let mut group = c.benchmark_group("int8 peak, 1 thread");
    for isa in Int8Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
        group.throughput(Throughput::Elements(
            2 * ITERATIONS * int8::muls_per_iteration(),
        ));
        group.bench_function(BenchmarkId::from_parameter(isa.name()), |b| {
            b.iter(|| int8::dot_loop(isa, ITERATIONS))
        });
    }
    group.finish();
}
