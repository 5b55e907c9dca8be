//! Shapes known to the compiler.
//!
//! A shape is a zero-sized marker type whose dimensions are const generic parameters: [`Flat<N>`]
//! is a vector of `N` features, [`Hwc<H, W, C>`] an image of `H` rows, `W` columns and `C`
//! channels stored channels-innermost. Tensors and layers are generic over these markers, so two
//! layers can only be chained when one's output shape is the other's input shape: a mismatch is
//! a type error that prints both shapes (`expected Flat<8>, found Flat<9>`).
//!
//! Why channels-innermost (NHWC): every hot kernel (convolution through im2col, pooling,
//! batch normalisation, the element-wise activations) walks the channel axis in its innermost
//! loop, so with `C` a multiple of the SIMD width each load is a full, contiguous vector. A 3x3
//! patch row is also contiguous in NHWC (`3 * C` floats), which makes im2col a handful of
//! `memcpy`s per output pixel instead of a gather.

use std::fmt::Debug;

/// A tensor shape whose dimensions are compile-time constants.
pub trait Shape: 'static + Copy + Default + Debug + Send + Sync {
    /// Number of `f32` elements in one sample of this shape.
    const LEN: usize;
    /// Length of the innermost (contiguous) axis: the channels of an image, the features of a
    /// flat vector. Per-channel layers (batch normalisation, softmax) work along it.
    const CHANNELS: usize;
    /// The dimensions, outermost first (`[H, W, C]` or `[N]`).
    const DIMS: &'static [usize];

    /// The shape written as a user would read it: `28x28x1` or `128`.
    fn describe() -> String {
        Self::DIMS
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("x")
    }
}

/// A flat vector of `N` features: the input and output of dense layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flat<const N: usize>;

impl<const N: usize> Shape for Flat<N> {
    const LEN: usize = N;
    const CHANNELS: usize = N;
    const DIMS: &'static [usize] = &[N];
}

/// An image of `H` rows, `W` columns and `C` channels, stored channels-innermost (HWC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hwc<const H: usize, const W: usize, const C: usize>;

impl<const H: usize, const W: usize, const C: usize> Shape for Hwc<H, W, C> {
    const LEN: usize = H * W * C;
    const CHANNELS: usize = C;
    const DIMS: &'static [usize] = &[H, W, C];
}

/// A shape with rows, columns and channels: what convolutions and pools consume.
pub trait Image: Shape {
    /// Rows.
    const H: usize;
    /// Columns.
    const W: usize;
    /// Channels (the innermost axis).
    const C: usize;
}

impl<const H: usize, const W: usize, const C: usize> Image for Hwc<H, W, C> {
    const H: usize = H;
    const W: usize = W;
    const C: usize = C;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_and_lengths() {
        assert_eq!(<Hwc<28, 28, 1>>::LEN, 784);
        assert_eq!(<Hwc<5, 7, 3>>::CHANNELS, 3);
        assert_eq!(<Hwc<5, 7, 3>>::DIMS, &[5, 7, 3]);
        assert_eq!(<Flat<9216>>::LEN, 9216);
        assert_eq!(<Hwc<26, 26, 32>>::describe(), "26x26x32");
        assert_eq!(<Flat<10>>::describe(), "10");
    }
}
