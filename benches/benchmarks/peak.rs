//! The FMA ceiling of one core on each instruction-set path: the 100% against which the kernel
//! figures are read.

use constnet::kernels::Isa;
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
