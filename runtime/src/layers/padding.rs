//! How a convolution or pooling pads its input, as a type ([`Padding`]: [`Valid`], [`Same`],
//! [`Pads`]) whose rule is the catalogue's, evaluated at compile time, and the shape check every
//! windowed layer makes with it ([`window_output_is`]).

use std::fmt::Debug;

use crate::shape::Image;

/// How a window treats the border, as a type: [`Valid`], [`Same`] or [`Pads`]. The rule is the
/// catalogue's [`Padding`](constnet_catalogue::Padding), evaluated at compile time.
pub trait Padding: 'static + Copy + Default + Debug + Send + Sync {
    /// The padding this type stands for.
    const PADDING: constnet_catalogue::Padding;
}

/// No padding: the kernel only visits positions where it fits entirely inside the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Valid;

impl Padding for Valid {
    const PADDING: constnet_catalogue::Padding = constnet_catalogue::Padding::Valid;
}

/// Zero padding so the output has `ceil(input / stride)` rows and columns; as in Keras, an odd
/// total padding puts the extra row (column) at the bottom (right).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Same;

impl Padding for Same {
    const PADDING: constnet_catalogue::Padding = constnet_catalogue::Padding::Same;
}

/// `TOP` rows above the input, `BOTTOM` below, `LEFT` columns before and `RIGHT` after (PyTorch's
/// `padding=p` is `Pads<p, p, p, p>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pads<const TOP: usize, const BOTTOM: usize, const LEFT: usize, const RIGHT: usize>;

impl<const TOP: usize, const BOTTOM: usize, const LEFT: usize, const RIGHT: usize> Padding
    for Pads<TOP, BOTTOM, LEFT, RIGHT>
{
    const PADDING: constnet_catalogue::Padding =
        constnet_catalogue::Padding::Explicit(constnet_catalogue::Pads {
            top: TOP,
            bottom: BOTTOM,
            left: LEFT,
            right: RIGHT,
        });
}

/// Whether a window of `kernel` x `kernel`, `stride` apart and padded by `P`, turns an `I` into
/// an `O` (rows and columns only).
pub(crate) const fn window_output_is<I: Image, O: Image, P: Padding>(
    kernel: usize,
    stride: usize,
) -> bool {
    matches!(P::PADDING.output((I::H, I::W), kernel, stride), Some((h, w)) if h == O::H && w == O::W)
}
