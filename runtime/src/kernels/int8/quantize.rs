//! Quantizing `f32` values to unsigned bytes, `q = clamp(x / scale + zero_point, 0, 255)`
//! rounded half up: how an int8 network's input enters it. [`quantize_value`] is the one
//! definition; each path computes exactly it, lane by lane, with the same IEEE operations in
//! the same order (a division, not a multiplication by the reciprocal, then an addition), so
//! every path gives the same bytes.
//!
//! Clamped first, the value is not negative, so adding a half and truncating rounds it to
//! nearest; a NaN becomes 0 (the vector paths' `max` with 0 returns its second operand for a
//! NaN, as `as u8` makes a NaN 0).

use super::{Int8Isa, portable};
#[cfg(target_arch = "x86_64")]
use super::{x86_avx2, x86_avx512_vnni};

/// The byte nearest `x / scale + zero_point`, clamped to `0..=255` (NaN to 0).
#[inline]
pub fn quantize_value(x: f32, scale: f32, zero_point: u8) -> u8 {
    let steps = (x / scale + f32::from(zero_point)).clamp(0.0, 255.0);
    (steps + 0.5) as u8
}

/// [`quantize_value`] of each of `values` into `out`, on this thread's path
/// ([`Int8Isa::active`]).
///
/// # Panics
/// If `out` is not as long as `values`.
pub fn quantize(values: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    quantize_with(Int8Isa::active(), values, scale, zero_point, out);
}

/// [`quantize`] on the path `isa`.
///
/// # Panics
/// If `out` is not as long as `values`, or the CPU does not support `isa`.
pub fn quantize_with(isa: Int8Isa, values: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    assert!(isa.is_supported(), "this CPU has no {} path", isa.name());
    assert_eq!(values.len(), out.len(), "a byte for each value");
    match isa {
        // SAFETY: the path is supported, and the lengths agree.
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx512Vnni => unsafe { x86_avx512_vnni::quantize(values, scale, zero_point, out) },
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx2 => unsafe { x86_avx2::quantize(values, scale, zero_point, out) },
        Int8Isa::Portable => portable::quantize(values, scale, zero_point, out),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("non-x86 paths are never supported"),
    }
}
