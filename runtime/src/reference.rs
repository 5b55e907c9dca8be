//! Plain, obviously-correct implementations of every kernel, used only by tests as the ground
//! truth for the optimised layers. Dimensions are run-time values, loops are the textbook
//! definitions, sums accumulate in f64, and nothing is shared with the code under test (a
//! padding is the catalogue's value, but its pads and sizes are computed here).

use constnet_catalogue::Padding;

/// A convolution's or pool's geometry, with run-time dimensions.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
}

impl Geometry {
    pub fn out_h(&self) -> usize {
        self.out_len(self.in_h, true)
    }
    pub fn out_w(&self) -> usize {
        self.out_len(self.in_w, false)
    }
    fn out_len(&self, input: usize, rows: bool) -> usize {
        match self.padding {
            Padding::Same => input.div_ceil(self.stride),
            _ => {
                let (before, after) = self.pads(input, rows);
                (input + before as usize + after as usize - self.kernel) / self.stride + 1
            }
        }
    }
    /// Zeros before and after the rows (`rows`) or columns of `input` values. `Same` is
    /// TensorFlow's rule: total padding `max((out − 1)·s + k − in, 0)`, the smaller half first.
    fn pads(&self, input: usize, rows: bool) -> (isize, isize) {
        let explicit = |before: usize, after: usize| (before as isize, after as isize);
        match self.padding {
            Padding::Valid => (0, 0),
            Padding::Same => {
                let out = input.div_ceil(self.stride);
                let total = ((out - 1) * self.stride + self.kernel) as isize - input as isize;
                (total.max(0) / 2, total.max(0) - total.max(0) / 2)
            }
            Padding::Explicit(p) if rows => explicit(p.top, p.bottom),
            Padding::Explicit(p) => explicit(p.left, p.right),
        }
    }
    /// Zeros above the input and left of it.
    pub fn pad_top_left(&self) -> (isize, isize) {
        (self.pads(self.in_h, true).0, self.pads(self.in_w, false).0)
    }
    fn in_index(&self, h: usize, w: usize, c: usize) -> usize {
        (h * self.in_w + w) * self.in_c + c
    }
    fn out_index(&self, h: usize, w: usize, c: usize) -> usize {
        (h * self.out_w() + w) * self.out_c + c
    }
    /// Input position read by output `(oh, ow)` at kernel offset `(kh, kw)`, if not padding.
    fn source(&self, oh: usize, ow: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let (top, left) = self.pad_top_left();
        let ih = (oh * self.stride + kh) as isize - top;
        let iw = (ow * self.stride + kw) as isize - left;
        (ih >= 0 && iw >= 0 && (ih as usize) < self.in_h && (iw as usize) < self.in_w)
            .then_some((ih as usize, iw as usize))
    }
    fn in_len(&self) -> usize {
        self.in_h * self.in_w * self.in_c
    }
    fn out_len_total(&self) -> usize {
        self.out_h() * self.out_w() * self.out_c
    }
}

/// Convolution of `n` images; weights `[k, k, in_c, out_c]`.
pub fn conv2d_forward(g: Geometry, x: &[f32], weight: &[f32], bias: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0; n * g.out_len_total()];
    for s in 0..n {
        let (x, y) = (&x[s * g.in_len()..], &mut y[s * g.out_len_total()..]);
        for oh in 0..g.out_h() {
            for ow in 0..g.out_w() {
                for f in 0..g.out_c {
                    let mut sum = bias[f] as f64;
                    for kh in 0..g.kernel {
                        for kw in 0..g.kernel {
                            if let Some((ih, iw)) = g.source(oh, ow, kh, kw) {
                                for c in 0..g.in_c {
                                    let w =
                                        weight[((kh * g.kernel + kw) * g.in_c + c) * g.out_c + f];
                                    sum += x[g.in_index(ih, iw, c)] as f64 * w as f64;
                                }
                            }
                        }
                    }
                    y[g.out_index(oh, ow, f)] = sum as f32;
                }
            }
        }
    }
    y
}

/// Gradients of a convolution: `(input, weight, bias)`.
pub fn conv2d_backward(
    g: Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    n: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f64; n * g.in_len()];
    let mut dw = vec![0.0f64; weight.len()];
    let mut db = vec![0.0f64; g.out_c];
    for s in 0..n {
        let (xs, dys) = (&x[s * g.in_len()..], &dy[s * g.out_len_total()..]);
        for oh in 0..g.out_h() {
            for ow in 0..g.out_w() {
                for f in 0..g.out_c {
                    let d = dys[g.out_index(oh, ow, f)] as f64;
                    db[f] += d;
                    for kh in 0..g.kernel {
                        for kw in 0..g.kernel {
                            if let Some((ih, iw)) = g.source(oh, ow, kh, kw) {
                                for c in 0..g.in_c {
                                    let wi = ((kh * g.kernel + kw) * g.in_c + c) * g.out_c + f;
                                    let xi = g.in_index(ih, iw, c);
                                    dw[wi] += xs[xi] as f64 * d;
                                    dx[s * g.in_len() + xi] += weight[wi] as f64 * d;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (to_f32(dx), to_f32(dw), to_f32(db))
}

/// Max (`max = true`) or average pooling; a window's padding takes no part (the maximum or mean
/// is of the input values it covers); `out_c` must equal `in_c`.
pub fn pool_forward(g: Geometry, max: bool, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0; n * g.out_len_total()];
    for s in 0..n {
        for oh in 0..g.out_h() {
            for ow in 0..g.out_w() {
                for c in 0..g.in_c {
                    let window: Vec<f32> = (0..g.kernel * g.kernel)
                        .filter_map(|i| g.source(oh, ow, i / g.kernel, i % g.kernel))
                        .map(|(ih, iw)| x[s * g.in_len() + g.in_index(ih, iw, c)])
                        .collect();
                    y[s * g.out_len_total() + g.out_index(oh, ow, c)] = if max {
                        window.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    } else {
                        (window.iter().map(|&v| v as f64).sum::<f64>() / window.len() as f64) as f32
                    };
                }
            }
        }
    }
    y
}

/// Input gradient of pooling: max sends each window's gradient to its first maximum, average
/// spreads it evenly.
pub fn pool_backward(g: Geometry, max: bool, x: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let mut dx = vec![0.0f64; n * g.in_len()];
    for s in 0..n {
        for oh in 0..g.out_h() {
            for ow in 0..g.out_w() {
                for c in 0..g.in_c {
                    let d = dy[s * g.out_len_total() + g.out_index(oh, ow, c)] as f64;
                    let cells: Vec<usize> = (0..g.kernel * g.kernel)
                        .filter_map(|i| g.source(oh, ow, i / g.kernel, i % g.kernel))
                        .map(|(ih, iw)| s * g.in_len() + g.in_index(ih, iw, c))
                        .collect();
                    if max {
                        let best = cells
                            .iter()
                            .copied()
                            .reduce(|a, b| if x[b] > x[a] { b } else { a })
                            .unwrap();
                        dx[best] += d;
                    } else {
                        for &cell in &cells {
                            dx[cell] += d / cells.len() as f64;
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// `y = x · W + b` for `n` samples; weights `[inputs, outputs]`.
pub fn dense_forward(x: &[f32], weight: &[f32], bias: &[f32], n: usize) -> Vec<f32> {
    let (outputs, inputs) = (bias.len(), weight.len() / bias.len());
    let mut y = vec![0.0; n * outputs];
    for s in 0..n {
        for o in 0..outputs {
            let sum: f64 = (0..inputs)
                .map(|i| x[s * inputs + i] as f64 * weight[i * outputs + o] as f64)
                .sum();
            y[s * outputs + o] = (sum + bias[o] as f64) as f32;
        }
    }
    y
}

/// Gradients of a dense layer: `(input, weight, bias)`.
pub fn dense_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    n: usize,
    outputs: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inputs = weight.len() / outputs;
    let dx = (0..n * inputs)
        .map(|si| {
            let (s, i) = (si / inputs, si % inputs);
            (0..outputs)
                .map(|o| dy[s * outputs + o] as f64 * weight[i * outputs + o] as f64)
                .sum::<f64>() as f32
        })
        .collect();
    let dw = (0..inputs * outputs)
        .map(|io| {
            let (i, o) = (io / outputs, io % outputs);
            (0..n)
                .map(|s| x[s * inputs + i] as f64 * dy[s * outputs + o] as f64)
                .sum::<f64>() as f32
        })
        .collect();
    let db = (0..outputs)
        .map(|o| (0..n).map(|s| dy[s * outputs + o] as f64).sum::<f64>() as f32)
        .collect();
    (dx, dw, db)
}

/// Asserts `got` and `want` agree within `tolerance · (1 + |want|)` element-wise.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * (1.0 + w.abs()),
            "{what}: element {i} is {g}, the reference says {w}"
        );
    }
}

/// Asserts a layer's input, weight and bias gradients agree with the reference's.
pub fn assert_gradients_close(
    what: &str,
    (input, weight, bias): (&[f32], &[f32], &[f32]),
    (want_input, want_weight, want_bias): (Vec<f32>, Vec<f32>, Vec<f32>),
    tolerance: f32,
) {
    assert_close(
        &format!("{what}: input gradient"),
        input,
        &want_input,
        tolerance,
    );
    assert_close(
        &format!("{what}: weight gradient"),
        weight,
        &want_weight,
        tolerance,
    );
    assert_close(
        &format!("{what}: bias gradient"),
        bias,
        &want_bias,
        tolerance,
    );
}
