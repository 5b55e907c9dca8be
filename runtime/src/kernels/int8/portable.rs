//! The portable int8 path: plain Rust on arrays, which the compiler vectorises for the
//! baseline target.

use super::{DotPath, GROUP, GROUP_BYTES, LANES, TileArgs, gemm_tiles, quantize_value};

/// Sums kept as one array of 16 integers.
#[derive(Clone, Copy)]
pub(super) struct Portable;

// SAFETY: plain Rust; the pointers are read within the bytes the caller vouches for.
unsafe impl DotPath for Portable {
    type Sums = [i32; LANES];
    type Lhs = [i32; GROUP];
    type Rhs = [i8; GROUP_BYTES];

    unsafe fn zero() -> Self::Sums {
        [0; LANES]
    }
    unsafe fn lhs(a: *const u8) -> Self::Lhs {
        // SAFETY: the caller's: `GROUP` readable bytes.
        let bytes = unsafe { a.cast::<[u8; GROUP]>().read_unaligned() };
        bytes.map(i32::from)
    }
    unsafe fn rhs(b: *const i8) -> Self::Rhs {
        // SAFETY: the caller's: `GROUP_BYTES` readable bytes.
        unsafe { b.cast::<[i8; GROUP_BYTES]>().read_unaligned() }
    }
    unsafe fn dot(mut sums: Self::Sums, a: Self::Lhs, b: Self::Rhs) -> Self::Sums {
        for (lane, sum) in sums.iter_mut().enumerate() {
            let column = &b[lane * GROUP..(lane + 1) * GROUP];
            *sum += (0..GROUP)
                .map(|step| a[step] * i32::from(column[step]))
                .sum::<i32>();
        }
        sums
    }
    unsafe fn to_array(sums: Self::Sums) -> [i32; LANES] {
        sums
    }
    unsafe fn max(a: Self::Sums, b: Self::Sums) -> Self::Sums {
        std::array::from_fn(|lane| a[lane].max(b[lane]))
    }
}

/// The product on the portable path, 4 rows by 1 panel per tile.
pub(super) fn gemm(args: TileArgs<'_>) {
    // SAFETY: the portable path needs nothing of the CPU; the arguments were checked.
    unsafe { gemm_tiles::<Portable, 4, 1>(args) }
}

/// [`super::quantize`] on the portable path: one value at a time.
pub(super) fn quantize(values: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    for (q, &x) in out.iter_mut().zip(values) {
        *q = quantize_value(x, scale, zero_point);
    }
}
