//! The quantization scheme: activations as unsigned 8-bit values with a scale and a zero point
//! per tensor ([`Quantization`], from the range calibration observed), weights as signed 8-bit
//! values symmetric around 0 with a scale per output channel ([`QuantizedWeights`]), biases as
//! `i32` in units of input scale × weight scale.

use super::QuantizeError;
use crate::kernels::int8;

/// How a tensor's real values map to bytes: `x ≈ scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantization {
    /// The real value of one step.
    pub scale: f32,
    /// The byte that stands for 0.
    pub zero_point: u8,
}

impl Quantization {
    /// The quantization whose 256 steps cover `[min, max]` widened to hold 0 (so 0, a pad, is
    /// exact).
    pub fn of_range(min: f32, max: f32) -> Self {
        let (low, high) = (min.min(0.0), max.max(0.0));
        if high - low <= f32::MIN_POSITIVE {
            return Quantization {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (high - low) / 255.0;
        Quantization {
            scale,
            zero_point: (-low / scale).round().clamp(0.0, 255.0) as u8,
        }
    }

    /// The byte nearest `x`, clamped to the range (NaN to 0): [`int8::quantize_value`].
    #[inline]
    pub fn quantize(self, x: f32) -> u8 {
        int8::quantize_value(x, self.scale, self.zero_point)
    }

    /// The real value of byte `q`.
    #[inline]
    pub fn dequantize(self, q: u8) -> f32 {
        self.scale * (f32::from(q) - f32::from(self.zero_point))
    }
}

/// The smallest and largest values calibration saw in one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Range {
    pub min: f32,
    pub max: f32,
}

impl Default for Range {
    fn default() -> Self {
        Range {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl Range {
    /// Widens the range to hold `values`.
    ///
    /// # Errors
    /// [`QuantizeError::NotFinite`] naming `tensor` if a value is NaN or infinite.
    pub fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<(), QuantizeError> {
        for &v in values {
            if !v.is_finite() {
                return Err(QuantizeError::NotFinite {
                    tensor: tensor.to_string(),
                });
            }
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        Ok(())
    }

    /// The quantization of the range.
    pub fn quantization(self) -> Quantization {
        if self.min > self.max {
            return Quantization::of_range(0.0, 0.0);
        }
        Quantization::of_range(self.min, self.max)
    }
}

/// A `K × N` weight matrix in signed bytes, each column `j` scaled by `scales[j]`: the largest
/// magnitude of the column is 127 (−128 is never used, so a product's sign never overflows).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeights {
    /// Row-major `K × N`.
    pub values: Vec<i8>,
    /// One per column.
    pub scales: Vec<f32>,
}

impl QuantizedWeights {
    /// `weight` (row-major, `n` columns) with a scale per column.
    pub fn of(weight: &[f32], n: usize) -> Self {
        let mut scales = vec![0.0f32; n];
        for row in weight.chunks(n) {
            for (scale, w) in scales.iter_mut().zip(row) {
                *scale = scale.max(w.abs());
            }
        }
        for scale in &mut scales {
            *scale = if *scale > 0.0 { *scale / 127.0 } else { 1.0 };
        }
        let values = weight
            .iter()
            .enumerate()
            .map(|(at, w)| (w / scales[at % n]).round().clamp(-127.0, 127.0) as i8)
            .collect();
        QuantizedWeights { values, scales }
    }
}

/// The bias `bias` in units of `input_scale · weight_scales[j]`.
///
/// # Errors
/// [`QuantizeError::OutOfRange`] naming `layer` for a bias of more than 2^30 units.
pub(crate) fn quantize_bias(
    layer: &str,
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Result<Vec<i32>, QuantizeError> {
    bias.iter()
        .zip(weight_scales)
        .map(|(&b, &w)| {
            let units = (f64::from(b) / (f64::from(input_scale) * f64::from(w))).round();
            if units.abs() < f64::from(1 << 30) {
                Ok(units as i32)
            } else {
                Err(QuantizeError::OutOfRange {
                    layer: layer.to_string(),
                    what: format!("a bias of {b} is more than 2^30 steps of its sums"),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_maps_its_ends_and_zero_exactly() {
        let q = Quantization::of_range(-1.0, 3.0);
        assert_eq!(q.quantize(0.0), q.zero_point);
        assert_eq!(q.dequantize(q.zero_point), 0.0);
        assert_eq!(q.quantize(-1.0), 0);
        assert_eq!(q.quantize(3.0), 255);
        assert_eq!(q.quantize(100.0), 255);
        assert!((q.dequantize(q.quantize(1.3)) - 1.3).abs() <= q.scale / 2.0 + 1e-6);
        let relu = Quantization::of_range(0.0, 6.0);
        assert_eq!(relu.zero_point, 0);
        assert_eq!(Quantization::of_range(0.0, 0.0).scale, 1.0);
    }

    #[test]
    fn weights_use_each_columns_whole_range() {
        let weight = [0.5, -2.0, -0.25, 1.0, 0.0, 0.0];
        let q = QuantizedWeights::of(&weight, 2);
        assert_eq!(q.scales, [0.5 / 127.0, 2.0 / 127.0]);
        assert_eq!(q.values, [127, -127, -64, 64, 0, 0]);
        assert_eq!(QuantizedWeights::of(&[0.0, 0.0], 1).scales, [1.0]);
    }

    #[test]
    fn non_finite_calibration_values_are_named() {
        let mut range = Range::default();
        let error = range.observe("conv1", &[1.0, f32::NAN]).unwrap_err();
        assert!(error.to_string().contains("conv1"), "{error}");
    }
}
