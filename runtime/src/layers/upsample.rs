//! Nearest-neighbour upsampling ([`Upsample2d`]): every pixel of an image becomes a `K`x`K`
//! block of copies, as Keras's `UpSampling2D(size = K)` and PyTorch's
//! `Upsample(scale_factor = K, mode = "nearest")`.
//!
//! Output pixel `(y, x)` is input pixel `(y / K, x / K)`, channels innermost, so each output row
//! is the input row's pixels each copied `K` times, and each input row is written out `K` times.
//! The gradient of an input pixel is the sum of the gradients of its block, added row by row and
//! left to right within a row (a fixed order on any number of threads).

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;

use super::{Layer, for_each_sample_group, samples_per_task};
use crate::shape::Image;
use crate::tensor::Batch;
use rayon::prelude::*;

/// Repeats every pixel of `I` in a `K`x`K` block into `O`, which must be
/// `(I::H·K)x(I::W·K)x(I::C)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upsample2d<I: Image, O: Image, const K: usize> {
    shapes: PhantomData<(I, O)>,
}

impl<I: Image, O: Image, const K: usize> Upsample2d<I, O, K> {
    /// Evaluated when the layer is built.
    const SHAPES_AGREE: () = assert!(
        K >= 1 && O::H == I::H * K && O::W == I::W * K && O::C == I::C,
        "upsampling: the output is the input with every pixel a KxK block"
    );

    /// The layer.
    pub fn new() -> Self {
        let () = Self::SHAPES_AGREE;
        Self {
            shapes: PhantomData,
        }
    }

    /// One image's blocks of copies into `out`.
    fn upsample_image(image: &[f32], out: &mut [f32]) {
        let in_row = I::W * I::C;
        let out_row = O::W * O::C;
        for (row, out_rows) in image
            .chunks_exact(in_row)
            .zip(out.chunks_exact_mut(K * out_row))
        {
            let (first, copies) = out_rows.split_at_mut(out_row);
            for (pixel, block) in row.chunks_exact(I::C).zip(first.chunks_exact_mut(K * I::C)) {
                for copy in block.chunks_exact_mut(I::C) {
                    copy.copy_from_slice(pixel);
                }
            }
            for copy in copies.chunks_exact_mut(out_row) {
                copy.copy_from_slice(first);
            }
        }
    }

    /// One image's gradient: each input pixel's block of output gradients summed into `dx`.
    fn sum_blocks(dy: &[f32], dx: &mut [f32]) {
        let in_row = I::W * I::C;
        let out_row = O::W * O::C;
        for (dx_row, dy_rows) in dx
            .chunks_exact_mut(in_row)
            .zip(dy.chunks_exact(K * out_row))
        {
            dx_row.fill(0.0);
            for dy_row in dy_rows.chunks_exact(out_row) {
                for (dx_pixel, dy_block) in dx_row
                    .chunks_exact_mut(I::C)
                    .zip(dy_row.chunks_exact(K * I::C))
                {
                    for dy_pixel in dy_block.chunks_exact(I::C) {
                        for (dx, &dy) in dx_pixel.iter_mut().zip(dy_pixel) {
                            *dx += dy;
                        }
                    }
                }
            }
        }
    }
}

impl<I: Image, O: Image, const K: usize> Layer for Upsample2d<I, O, K> {
    type Input = I;
    type Output = O;
    type Cache = ();

    fn forward(&self, input: &Batch<I>, output: &mut Batch<O>, _cache: &mut ()) {
        let () = Self::SHAPES_AGREE;
        for_each_sample_group(input, output, |images, outputs| {
            for (image, out) in images.chunks(I::LEN).zip(outputs.chunks_mut(O::LEN)) {
                Self::upsample_image(image, out);
            }
        });
    }

    fn forward_train(&mut self, input: &Batch<I>, output: &mut Batch<O>, cache: &mut ()) {
        self.forward(input, output, cache);
    }

    fn backward(
        &self,
        input: &Batch<I>,
        _output: &Batch<O>,
        grad_output: &Batch<O>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<I>>,
        _grads: &mut Self::Grads,
    ) {
        let Some(grad_input) = grad_input else { return };
        grad_input.resize(input.len());
        let group = samples_per_task(input.len(), I::LEN + O::LEN);
        grad_input
            .as_mut_slice()
            .par_chunks_mut(group * I::LEN)
            .zip(grad_output.as_slice().par_chunks(group * O::LEN))
            .for_each(|(dx, dy)| {
                for (dx, dy) in dx.chunks_mut(I::LEN).zip(dy.chunks(O::LEN)) {
                    Self::sum_blocks(dy, dx);
                }
            });
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Upsample { factor: K }
    }

    no_params!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::NoParams;
    use crate::shape::Hwc;

    type Up = Upsample2d<Hwc<2, 3, 2>, Hwc<6, 9, 2>, 3>;

    /// The plain definition: output pixel (y, x) of channel c is input pixel (y / K, x / K).
    #[test]
    fn every_output_pixel_is_its_nearest_input_pixel() {
        let x = Batch::<Hwc<2, 3, 2>>::from_fn(2, |at| at as f32 * 0.5 - 3.0);
        let mut y = Batch::default();
        Up::new().forward(&x, &mut y, &mut ());
        assert_eq!(y.len(), 2);
        for s in 0..2 {
            for (at, &value) in y.sample(s).iter().enumerate() {
                let (row, col, c) = (at / (9 * 2), at / 2 % 9, at % 2);
                let source = (row / 3 * 3 + col / 3) * 2 + c;
                assert_eq!(value, x.sample(s)[source], "sample {s}, value {at}");
            }
        }
    }

    /// Each input pixel's gradient is the sum of its block's, in the block's row-major order.
    #[test]
    fn the_gradient_of_a_pixel_sums_its_block() {
        let x = Batch::<Hwc<2, 3, 2>>::from_fn(2, |at| at as f32);
        let dy = Batch::<Hwc<6, 9, 2>>::from_fn(2, |at| ((at * 7) % 11) as f32 - 5.0);
        let mut dx = Batch::default();
        let up = Up::new();
        up.backward(&x, &dy, &dy, &mut (), Some(&mut dx), &mut NoParams);
        for s in 0..2 {
            for (at, &grad) in dx.sample(s).iter().enumerate() {
                let (row, col, c) = (at / (3 * 2), at / 2 % 3, at % 2);
                let mut expected = 0.0;
                for dr in 0..3 {
                    for dc in 0..3 {
                        expected += dy.sample(s)[((row * 3 + dr) * 9 + col * 3 + dc) * 2 + c];
                    }
                }
                assert_eq!(grad, expected, "sample {s}, value {at}");
            }
        }
    }
}
