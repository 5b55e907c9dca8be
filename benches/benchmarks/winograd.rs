//! Winograd's F(4x4, 3x3) and F(2x2, 3x3) kernels at the shape of the Keras MNIST network's
//! second convolution (26x26x32 → 24x24x64), one thread, batch 1 and 128: each pass (and the
//! forward pass with
//! 2x2 max pooling in its output transform) in "effective" GFLOP/s (the direct convolution's
//! FLOPs over the time, so above the FMA peak is the point), and the
//! filter transforms, which a layer runs once per weight update, in time alone.

use constnet::Flat;
use constnet::kernels::winograd::{
    Geometry, InputGradient, Tile, accumulate_gradients, filter_gradient, forward_rows,
    forward_rows_max_pooled, transform_filters,
};
use criterion::{BenchmarkId, Criterion, Throughput};

use super::measurement::WallClock;
use super::noise;

/// 26x26x32 → 24x24x64, valid padding, with `tile`.
const fn conv2(tile: Tile) -> Geometry {
    Geometry {
        in_h: 26,
        in_w: 26,
        in_channels: 32,
        out_h: 24,
        out_w: 24,
        filters: 64,
        pad_top: 0,
        pad_left: 0,
        tile,
    }
}

/// The filterings benchmarked.
const TILES: [Tile; 2] = [Tile::F4x4, Tile::F2x2];

/// `len` values of noise.
fn values(len: usize) -> Vec<f32> {
    noise::<Flat<1>>(len).as_slice().to_vec()
}

/// FLOPs of the direct forward pass of `samples` images (as many as either direct gradient).
fn direct_flops(samples: usize) -> u64 {
    let g = conv2(Tile::F4x4);
    (2 * samples * g.out_h * g.out_w * g.filters * 9 * g.in_channels) as u64
}

fn passes(c: &mut Criterion<WallClock>, tile: Tile) {
    let mut group = c.benchmark_group(format!("winograd {tile} 26x26x32 -> 24x24x64"));
    let g = conv2(tile);
    let weight = values(9 * g.in_channels * g.filters);
    for samples in [1, 128] {
        let label = format!("batch {samples}");
        let (per_image, per_output) = (
            g.in_h * g.in_w * g.in_channels,
            g.out_h * g.out_w * g.filters,
        );
        let mut u = vec![0.0; g.filter_len()];
        transform_filters(g, &weight, &mut u);
        let images = values(samples * per_image);
        let mut out = vec![0.0; samples * per_output];
        group.throughput(Throughput::Elements(direct_flops(samples)));
        group.bench_function(BenchmarkId::new("forward", &label), |b| {
            b.iter(|| {
                for (image, out) in images.chunks(per_image).zip(out.chunks_mut(per_output)) {
                    forward_rows(g, &u, image, 0..g.out_h, out, false.into());
                }
            })
        });
        let pooled_len = g.out_h / 2 * (g.out_w / 2) * g.filters;
        let mut pooled = vec![0.0; samples * pooled_len];
        group.bench_function(BenchmarkId::new("forward, max-pooled 2x2", &label), |b| {
            b.iter(|| {
                for (image, out) in images.chunks(per_image).zip(pooled.chunks_mut(pooled_len)) {
                    forward_rows_max_pooled(g, &u, image, 0..g.out_h, out, false.into());
                }
            })
        });
        // The input gradient reads the forward filters as its transposed ones: their values do
        // not change its time.
        let grads = values(samples * per_output);
        let mut grad_inputs = vec![0.0; samples * per_image];
        let mut m = vec![0.0; g.filter_len()];
        let mut weight_grad = vec![0.0; weight.len()];
        for (pass, with_input_gradient) in [("weight gradient", false), ("both gradients", true)] {
            let flops = direct_flops(samples) * if with_input_gradient { 2 } else { 1 };
            group.throughput(Throughput::Elements(flops));
            group.bench_function(BenchmarkId::new(pass, &label), |b| {
                b.iter(|| {
                    m.fill(0.0);
                    let per_sample = images
                        .chunks(per_image)
                        .zip(grads.chunks(per_output))
                        .zip(grad_inputs.chunks_mut(per_image));
                    for ((image, dy), dx) in per_sample {
                        let input_gradient = with_input_gradient.then(|| InputGradient {
                            u_t: &u,
                            grad_input: dx,
                        });
                        accumulate_gradients(g, image, dy, &mut m, input_gradient);
                    }
                    filter_gradient(g, &m, &mut weight_grad);
                })
            });
        }
    }
    group.finish();
}

fn filter_transforms(c: &mut Criterion<WallClock>, tile: Tile) {
    let mut group = c.benchmark_group(format!("winograd {tile} filters 3x3x32x64"));
    let g = conv2(tile);
    let weight = values(9 * g.in_channels * g.filters);
    let mut u = vec![0.0; g.filter_len()];
    group.bench_function("transform (once per weight update)", |b| {
        b.iter(|| transform_filters(g, &weight, &mut u))
    });
    let m = values(g.filter_len());
    let mut weight_grad = vec![0.0; weight.len()];
    group.bench_function("gradient back to 3x3", |b| {
        b.iter(|| filter_gradient(g, &m, &mut weight_grad))
    });
    group.finish();
}

pub fn bench(c: &mut Criterion<WallClock>) {
    for tile in TILES {
        passes(c, tile);
        filter_transforms(c, tile);
    }
}
