//! Data augmentation: small random shifts and rotations of images, as Keras's
//! `RandomTranslation` and `RandomRotation` do, sampled bilinearly with zero fill.

use rand::{RngExt, SeedableRng};

use crate::init::SeededRng;
use crate::shape::Shape;
use crate::tensor::Batch;

/// Random shifts and rotations applied to each training image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Largest shift, in pixels, along each axis.
    pub max_shift: f32,
    /// Largest rotation, in degrees, either way.
    pub max_rotation_degrees: f32,
}

impl Augment {
    /// Transforms every image of `batch` in place, each with its own draw from a generator
    /// seeded by `seed` (so a run is reproducible).
    ///
    /// # Panics
    /// If `S` is not an image shape (height, width, channels).
    pub fn apply<S: Shape>(&self, batch: &mut Batch<S>, seed: u64) {
        let &[height, width, channels] = S::DIMS else {
            panic!(
                "augmentation needs images, not samples of shape {}",
                S::describe()
            )
        };
        let dims = Dims {
            height,
            width,
            channels,
        };
        let mut rng = SeededRng::seed_from_u64(seed);
        let mut source = vec![0.0; S::LEN];
        for sample in 0..batch.len() {
            let image = batch.sample_mut(sample);
            source.copy_from_slice(image);
            let angle = rng.random_range(-1.0..=1.0) * self.max_rotation_degrees.to_radians();
            let shift_y = rng.random_range(-1.0..=1.0) * self.max_shift;
            let shift_x = rng.random_range(-1.0..=1.0) * self.max_shift;
            transform(dims, &source, image, angle, shift_y, shift_x);
        }
    }
}

/// An image's dimensions.
#[derive(Clone, Copy)]
struct Dims {
    height: usize,
    width: usize,
    channels: usize,
}

/// Writes into `out` the image `src` rotated by `angle` about its centre and shifted.
fn transform(dims: Dims, src: &[f32], out: &mut [f32], angle: f32, shift_y: f32, shift_x: f32) {
    let Dims {
        height,
        width,
        channels,
    } = dims;
    let (sin, cos) = angle.sin_cos();
    let (cy, cx) = ((height as f32 - 1.0) / 2.0, (width as f32 - 1.0) / 2.0);
    let at = |y: isize, x: isize, c: usize| -> f32 {
        if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
            0.0
        } else {
            src[(y as usize * width + x as usize) * channels + c]
        }
    };
    for y in 0..height {
        for x in 0..width {
            // The source position that lands on (y, x): undo the shift, then the rotation.
            let (dy, dx) = (y as f32 - cy - shift_y, x as f32 - cx - shift_x);
            let sy = cos * dy + sin * dx + cy;
            let sx = -sin * dy + cos * dx + cx;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            for c in 0..channels {
                let top = at(y0, x0, c) * (1.0 - fx) + at(y0, x0 + 1, c) * fx;
                let bottom = at(y0 + 1, x0, c) * (1.0 - fx) + at(y0 + 1, x0 + 1, c) * fx;
                out[(y * width + x) * channels + c] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Hwc;

    #[test]
    fn identity_shift_and_quarter_turn() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut out = vec![0.0; 9];
        let dims = Dims {
            height: 3,
            width: 3,
            channels: 1,
        };
        transform(dims, &src, &mut out, 0.0, 0.0, 0.0);
        assert_eq!(out, src);
        transform(dims, &src, &mut out, 0.0, 0.0, 1.0);
        assert_eq!(out, [0.0, 0.0, 1.0, 0.0, 3.0, 4.0, 0.0, 6.0, 7.0]);
        transform(dims, &src, &mut out, std::f32::consts::FRAC_PI_2, 0.0, 0.0);
        let rounded: Vec<f32> = out.iter().map(|v| v.round()).collect();
        assert_eq!(rounded, [2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0]);
    }

    #[test]
    fn augmentation_is_seeded() {
        let batch = Batch::<Hwc<4, 4, 1>>::from_fn(2, |i| i as f32);
        let augment = Augment {
            max_shift: 1.0,
            max_rotation_degrees: 10.0,
        };
        let (mut a, mut b) = (batch.clone(), batch.clone());
        augment.apply(&mut a, 5);
        augment.apply(&mut b, 5);
        assert_eq!(a, b);
        assert_ne!(a, batch);
    }
}
