//! The shape of one sample, as the catalogue's shape rules see it.

use std::fmt;

/// The most values one sample of a layer's output, or one parameter tensor, may hold: 2^32 − 1
/// (16 GiB of `f32`). Sizes are checked against it before anything multiplies them, so no
/// arithmetic on checked shapes can overflow.
pub const MAX_VALUES: usize = u32::MAX as usize;

/// A sample shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A vector of features.
    Flat(usize),
    /// Rows, columns, channels.
    Image(usize, usize, usize),
}

impl Shape {
    /// The values in one sample; only called on shapes whose size was checked.
    pub fn len(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Image(h, w, c) => h * w * c,
        }
    }

    /// Whether a sample holds no value (never, for a checked shape).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The values in one sample, if they fit in `usize`.
    pub fn checked_len(self) -> Option<usize> {
        match self {
            Shape::Flat(n) => Some(n),
            Shape::Image(h, w, c) => h.checked_mul(w)?.checked_mul(c),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Flat(n) => write!(f, "a flat vector of {n}"),
            Shape::Image(h, w, c) => write!(f, "{h}x{w}x{c}"),
        }
    }
}
