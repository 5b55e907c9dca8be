//! Global pooling ([`GlobalPool2d`]): an image becomes one value per channel, the mean
//! ([`GlobalAvgPool2d`]) or the maximum ([`GlobalMaxPool2d`]) over all its pixels, as Keras's
//! `GlobalAveragePooling2D` and `GlobalMaxPooling2D`. It ends the convolutional part of most small
//! efficient CNNs in place of `flatten`, whatever the image size.
//!
//! The reduction is pooling's ([`PoolOp`]): values combine in pixel order, channels innermost
//! (contiguous in NHWC, so the loop over channels vectorises). Max pooling's training pass records
//! which pixel each channel's maximum came from (the first, as in TensorFlow), and its backward
//! pass sends the gradient there; average pooling spreads it evenly over the pixels.

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;

use rayon::prelude::*;

use super::{Avg, Layer, Max, PoolOp, for_each_sample_group, samples_per_task};
use crate::shape::{Flat, Image};
use crate::tensor::Batch;

/// Reduces every channel of `I` over all pixels with `Op` into `Flat<C>`; `C` must be `I::C`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalPool2d<I: Image, Op: PoolOp, const C: usize> {
    shapes: PhantomData<(I, Op)>,
}

/// The mean of each channel over the image.
pub type GlobalAvgPool2d<I, const C: usize> = GlobalPool2d<I, Avg, C>;
/// The maximum of each channel over the image.
pub type GlobalMaxPool2d<I, const C: usize> = GlobalPool2d<I, Max, C>;

/// What global max pooling's training pass keeps for backward: for each sample and channel, the
/// pixel its maximum came from.
#[derive(Clone, Debug, Default)]
pub struct GlobalPoolCache {
    selected: Vec<u32>,
}

impl<I: Image, Op: PoolOp, const C: usize> GlobalPool2d<I, Op, C> {
    const PIXELS: usize = I::H * I::W;

    /// Evaluated when the layer is built.
    const SHAPES_AGREE: () = {
        assert!(
            C == I::C,
            "global pooling: the output has one value per input channel"
        );
        assert!(
            Self::PIXELS <= u32::MAX as usize,
            "global pooling: an image holds more than 2^32 - 1 pixels"
        );
    };

    /// The layer.
    pub fn new() -> Self {
        let () = Self::SHAPES_AGREE;
        Self {
            shapes: PhantomData,
        }
    }

    /// One image's channels reduced over its pixels into `out`.
    fn reduce_image(image: &[f32], out: &mut [f32]) {
        out.fill(Op::START);
        for pixel in image.chunks_exact(C) {
            for (y, &x) in out.iter_mut().zip(pixel) {
                *y = Op::combine(*y, x);
            }
        }
        for y in out.iter_mut() {
            *y = Op::finish(*y, Self::PIXELS);
        }
    }

    /// A selecting op's reduction of one image, recording in `selected` the pixel each channel's
    /// result is (the first that `combine` kept).
    fn select_image(image: &[f32], out: &mut [f32], selected: &mut [u32]) {
        out.fill(Op::START);
        selected.fill(0);
        for (p, pixel) in image.chunks_exact(C).enumerate() {
            for ((y, at), &x) in out.iter_mut().zip(selected.iter_mut()).zip(pixel) {
                Op::select(y, at, x, p as u32);
            }
        }
    }
}

impl<I: Image, Op: PoolOp, const C: usize> Layer for GlobalPool2d<I, Op, C> {
    type Input = I;
    type Output = Flat<C>;
    type Cache = GlobalPoolCache;

    fn forward(&self, input: &Batch<I>, output: &mut Batch<Flat<C>>, _cache: &mut Self::Cache) {
        let () = Self::SHAPES_AGREE;
        for_each_sample_group(input, output, |images, outputs| {
            for (image, out) in images.chunks(I::LEN).zip(outputs.chunks_mut(C)) {
                Self::reduce_image(image, out);
            }
        });
    }

    fn forward_train(
        &mut self,
        input: &Batch<I>,
        output: &mut Batch<Flat<C>>,
        cache: &mut Self::Cache,
    ) {
        if !Op::SELECTS {
            return self.forward(input, output, cache);
        }
        let () = Self::SHAPES_AGREE;
        let samples = input.len();
        output.resize(samples);
        cache.selected.resize(samples * C, 0);
        let group = samples_per_task(samples, I::LEN);
        input
            .as_slice()
            .par_chunks(group * I::LEN)
            .zip(output.as_mut_slice().par_chunks_mut(group * C))
            .zip(cache.selected.par_chunks_mut(group * C))
            .for_each(|((images, outputs), selected)| {
                let images = images.chunks(I::LEN);
                for (image, (out, selected)) in
                    images.zip(outputs.chunks_mut(C).zip(selected.chunks_mut(C)))
                {
                    Self::select_image(image, out, selected);
                }
            });
    }

    fn backward(
        &self,
        input: &Batch<I>,
        _output: &Batch<Flat<C>>,
        grad_output: &Batch<Flat<C>>,
        cache: &mut Self::Cache,
        grad_input: Option<&mut Batch<I>>,
        _grads: &mut Self::Grads,
    ) {
        let Some(grad_input) = grad_input else { return };
        grad_input.resize(input.len());
        if Op::SELECTS {
            assert_eq!(
                cache.selected.len(),
                input.len() * C,
                "global max pooling's backward pass needs the cache of its training pass on \
                 this batch"
            );
        }
        let group = samples_per_task(input.len(), I::LEN);
        grad_input
            .as_mut_slice()
            .par_chunks_mut(group * I::LEN)
            .enumerate()
            .for_each(|(g, dx)| {
                let first = g * group;
                for (s, dx) in dx.chunks_mut(I::LEN).enumerate() {
                    let dy = grad_output.sample(first + s);
                    if Op::SELECTS {
                        dx.fill(0.0);
                        let selected = &cache.selected[(first + s) * C..(first + s + 1) * C];
                        for (c, (&dy, &pixel)) in dy.iter().zip(selected).enumerate() {
                            dx[pixel as usize * C + c] = dy;
                        }
                    } else {
                        for pixel in dx.chunks_exact_mut(C) {
                            for (dx, &dy) in pixel.iter_mut().zip(dy) {
                                *dx = dy / Self::PIXELS as f32;
                            }
                        }
                    }
                }
            });
    }

    fn kind(&self) -> LayerKind {
        LayerKind::GlobalPool { max: Op::SELECTS }
    }

    no_params!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::NoParams;
    use crate::shape::Hwc;

    /// Means and maxima over every pixel, with odd sizes, and where the gradients go.
    #[test]
    fn reduces_every_pixel_of_each_channel() {
        // 2 samples of 3x5 pixels, 2 channels: value = sample * 100 + pixel * 2 + channel,
        // except one planted maximum.
        let mut x = Batch::<Hwc<3, 5, 2>>::from_fn(2, |at| {
            let (s, p, c) = (at / 30, at / 2 % 15, at % 2);
            (s * 100 + p * 2 + c) as f32
        });
        x.as_mut_slice()[30 + 4 * 2 + 1] = 1000.0; // sample 1, pixel 4, channel 1
        let mut avg = GlobalAvgPool2d::<Hwc<3, 5, 2>, 2>::new();
        let mut y = Batch::default();
        avg.forward_train(&x, &mut y, &mut GlobalPoolCache::default());
        // Mean of p * 2 + c over p = 0..15 is 14 + c.
        assert_eq!(y.sample(0), &[14.0, 15.0]);
        assert_eq!(y.sample(1)[0], 114.0);
        assert!((y.sample(1)[1] - (115.0 + (1000.0 - 109.0) / 15.0)).abs() < 1e-3);

        let mut max = GlobalMaxPool2d::<Hwc<3, 5, 2>, 2>::new();
        let mut cache = GlobalPoolCache::default();
        max.forward_train(&x, &mut y, &mut cache);
        assert_eq!(y.as_slice(), &[28.0, 29.0, 128.0, 1000.0]);
        let mut inferred = Batch::default();
        max.forward(&x, &mut inferred, &mut GlobalPoolCache::default());
        assert_eq!(inferred.as_slice(), y.as_slice());

        let dy = Batch::<Flat<2>>::from_vec(vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut dx = Batch::<Hwc<3, 5, 2>>::from_fn(2, |_| f32::NAN);
        max.backward(&x, &y, &dy, &mut cache, Some(&mut dx), &mut NoParams);
        let nonzero: Vec<(usize, f32)> = dx
            .as_slice()
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, v)| (i, *v))
            .collect();
        assert_eq!(nonzero, [(28, 1.0), (29, 2.0), (39, 4.0), (58, 3.0)]);

        avg.backward(&x, &y, &dy, &mut cache, Some(&mut dx), &mut NoParams);
        assert!(
            dx.sample(1)
                .chunks(2)
                .all(|p| p == [3.0 / 15.0, 4.0 / 15.0])
        );
    }

    /// A NaN anywhere in a channel makes its maximum NaN, as pooling windows do.
    #[test]
    fn nan_propagates_through_the_maximum() {
        let pool = GlobalMaxPool2d::<Hwc<2, 2, 1>, 1>::new();
        let x = Batch::<Hwc<2, 2, 1>>::from_vec(vec![1.0, f32::NAN, 3.0, 2.0]).unwrap();
        let mut y = Batch::default();
        pool.forward(&x, &mut y, &mut GlobalPoolCache::default());
        assert!(y.as_slice()[0].is_nan());
    }
}
