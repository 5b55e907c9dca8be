//! How a window (a convolution's kernel, a pooling window) pads its input: the [`Padding`] a
//! layer is written with, the zeros it puts on each side of an image ([`Pads`]), and the output
//! size that follows. Every rule is a `const fn`, so the runtime's layer types evaluate the same
//! rule at compile time that the macro applies when it infers shapes.

/// How a convolution or pooling pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: windows only visit positions where they fit inside the input (Keras's
    /// `valid`, PyTorch's `padding=0`).
    Valid,
    /// Zeros around the input so the output has `ceil(input / stride)` rows and columns; as in
    /// Keras and TensorFlow, an odd total puts the extra row or column after.
    Same,
    /// These rows and columns on each side, as written: `padding = p` or `padding = (top,
    /// bottom, left, right)` (PyTorch's `padding=p`, ONNX's `pads`).
    Explicit(Pads),
}

/// Rows added above and below an image, and columns added left and right of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pads {
    /// Rows above.
    pub top: usize,
    /// Rows below.
    pub bottom: usize,
    /// Columns on the left.
    pub left: usize,
    /// Columns on the right.
    pub right: usize,
}

impl Pads {
    /// `p` on every side.
    pub const fn uniform(p: usize) -> Self {
        Pads {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// Whether it adds nothing.
    pub const fn is_zero(self) -> bool {
        self.top == 0 && self.bottom == 0 && self.left == 0 && self.right == 0
    }

    /// The largest pad on any side.
    pub const fn largest(self) -> usize {
        let vertical = if self.top > self.bottom {
            self.top
        } else {
            self.bottom
        };
        let horizontal = if self.left > self.right {
            self.left
        } else {
            self.right
        };
        if vertical > horizontal {
            vertical
        } else {
            horizontal
        }
    }
}

/// Zeros `(before, after)` along one axis of `input` values for TensorFlow's `same`: a total of
/// `max((ceil(input / stride) − 1)·stride + window − input, 0)`, the smaller half before.
const fn same_pads(input: usize, window: usize, stride: usize) -> (usize, usize) {
    let covered = (input.div_ceil(stride).saturating_sub(1)) * stride + window;
    let total = covered.saturating_sub(input);
    (total / 2, total - total / 2)
}

/// `len` with `before` and `after` added, if it fits in `usize`.
const fn padded(len: usize, before: usize, after: usize) -> Option<usize> {
    match len.checked_add(before) {
        Some(len) => len.checked_add(after),
        None => None,
    }
}

/// Windows of `window` values `stride` apart along `padded` values (`None` if none fits).
const fn windows_along(padded: usize, window: usize, stride: usize) -> Option<usize> {
    if padded < window || stride == 0 {
        None
    } else {
        Some((padded - window) / stride + 1)
    }
}

impl Padding {
    /// `p` rows and columns on every side.
    pub const fn uniform(p: usize) -> Self {
        Padding::Explicit(Pads::uniform(p))
    }

    /// The zeros around an image of `rows` x `columns` for `window` x `window` windows `stride`
    /// apart.
    pub const fn pads(self, (rows, columns): (usize, usize), window: usize, stride: usize) -> Pads {
        match self {
            Padding::Valid => Pads::uniform(0),
            Padding::Same => {
                let (top, bottom) = same_pads(rows, window, stride);
                let (left, right) = same_pads(columns, window, stride);
                Pads {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
            Padding::Explicit(pads) => pads,
        }
    }

    /// The padded image's rows and columns, `None` if they overflow `usize`.
    pub const fn padded(
        self,
        (rows, columns): (usize, usize),
        window: usize,
        stride: usize,
    ) -> Option<(usize, usize)> {
        let pads = self.pads((rows, columns), window, stride);
        match (
            padded(rows, pads.top, pads.bottom),
            padded(columns, pads.left, pads.right),
        ) {
            (Some(rows), Some(columns)) => Some((rows, columns)),
            _ => None,
        }
    }

    /// The output's rows and columns for an input of `rows` x `columns`, or `None` where the
    /// window is larger than the padded input (or a size overflows).
    pub const fn output(
        self,
        (rows, columns): (usize, usize),
        window: usize,
        stride: usize,
    ) -> Option<(usize, usize)> {
        let Some((rows, columns)) = self.padded((rows, columns), window, stride) else {
            return None;
        };
        match (
            windows_along(rows, window, stride),
            windows_along(columns, window, stride),
        ) {
            (Some(h), Some(w)) => Some((h, w)),
            _ => None,
        }
    }

    /// Whether it pads nothing on any image (`Valid` or explicit zeros).
    pub const fn is_none(self) -> bool {
        match self {
            Padding::Valid => true,
            Padding::Same => false,
            Padding::Explicit(pads) => pads.is_zero(),
        }
    }
}

impl std::fmt::Display for Padding {
    /// As the grammar writes it: `same`, `valid`, `1`, `(1, 0, 1, 0)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Padding::Valid => f.write_str("valid"),
            Padding::Same => f.write_str("same"),
            Padding::Explicit(p) if p == Pads::uniform(p.top) => write!(f, "{}", p.top),
            Padding::Explicit(p) => write!(f, "({}, {}, {}, {})", p.top, p.bottom, p.left, p.right),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_puts_the_odd_zero_after() {
        let pads = Padding::Same.pads((5, 6), 3, 2);
        assert_eq!(
            pads,
            Pads {
                top: 1,
                bottom: 1,
                left: 0,
                right: 1
            }
        );
        assert_eq!(Padding::Same.output((5, 6), 3, 2), Some((3, 3)));
        assert_eq!(
            Padding::Same.pads((7, 7), 2, 1),
            Pads {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1
            }
        );
        assert_eq!(Padding::Same.pads((6, 6), 4, 2).top, 1);
    }

    #[test]
    fn explicit_pads_follow_pytorch_floor_rule() {
        // PyTorch: Conv2d(k=3, stride=2, padding=1) on 224 gives 112; on 7, 4.
        assert_eq!(Padding::uniform(1).output((224, 7), 3, 2), Some((112, 4)));
        // Asymmetric: one row above only.
        let pads = Pads {
            top: 1,
            bottom: 0,
            left: 0,
            right: 2,
        };
        assert_eq!(Padding::Explicit(pads).output((4, 4), 3, 1), Some((3, 4)));
        assert_eq!(Padding::Valid.output((2, 5), 3, 1), None);
        assert_eq!(Padding::uniform(1).output((1, 1), 3, 1), Some((1, 1)));
        assert_eq!(Padding::uniform(usize::MAX).output((1, 1), 3, 1), None);
    }

    #[test]
    fn display_is_the_grammar() {
        assert_eq!(Padding::Same.to_string(), "same");
        assert_eq!(Padding::uniform(2).to_string(), "2");
        let pads = Pads {
            top: 1,
            bottom: 0,
            left: 1,
            right: 0,
        };
        assert_eq!(Padding::Explicit(pads).to_string(), "(1, 0, 1, 0)");
        assert!(Padding::uniform(0).is_none() && !Padding::Same.is_none());
    }
}
