//! The constant transforms of Winograd's minimal filterings for 3x3 kernels (Lavin & Gray
//! 2015), each a 1-D transform ([`Transform1d`]) applied to the rows and columns of a block
//! ([`transform_2d`]), and the six of each filtering gathered by [`Filtering`]:
//! - F(4x4, 3x3) ([`F4x4`]): 6x6 windows, interpolation points 0, ±1, ±2 and ∞;
//! - F(2x2, 3x3) ([`F2x2`]): 4x4 windows, points 0, ±1 and ∞.
//!
//! Each gradient transform's matrix is the transpose of its forward transform's: `B` of `Bᵀ`,
//! `A` of `Aᵀ`, `Gᵀ` of `G` (checked by the tests).

use crate::kernels::simd::SimdF32;

/// A 1-D transform of `N` vectors into `R` by a constant matrix; [`transform_2d`] applies it
/// to the rows and columns of a block (`M x Mᵀ`).
pub(super) trait Transform1d<const N: usize, const R: usize> {
    /// `M x` for one column `x`.
    ///
    /// # Safety
    /// The CPU must support `S`'s instruction set.
    unsafe fn apply<S: SimdF32>(x: [S; N]) -> [S; R];
}

/// `M x Mᵀ` for the matrix `M` of `T`: `T` on each column of `x`, then on each row.
///
/// # Safety
/// The CPU must support `S`'s instruction set.
#[inline(always)]
pub(super) unsafe fn transform_2d<
    S: SimdF32,
    T: Transform1d<N, R>,
    const N: usize,
    const R: usize,
>(
    x: [[S; N]; N],
) -> [[S; R]; R] {
    // SAFETY: the caller's instruction set supports `S`.
    unsafe {
        let mut columns_done = [[S::zero(); N]; R];
        for j in 0..N {
            let mut column = [S::zero(); N];
            for (value, row) in column.iter_mut().zip(&x) {
                *value = row[j];
            }
            for (row, value) in columns_done.iter_mut().zip(T::apply(column)) {
                row[j] = value;
            }
        }
        let mut out = [[S::zero(); R]; R];
        for (out_row, row) in out.iter_mut().zip(columns_done) {
            *out_row = T::apply(row);
        }
        out
    }
}

/// The transforms of one filtering, for tiles of `TILE x TILE` outputs computed from windows of
/// `WINDOW x WINDOW` inputs (`WINDOW = TILE + 2`).
pub(super) trait Filtering<const TILE: usize, const WINDOW: usize> {
    /// The input transform `Bᵀ`.
    type Bt: Transform1d<WINDOW, WINDOW>;
    /// The input-gradient transform `B`.
    type B: Transform1d<WINDOW, WINDOW>;
    /// The filter transform `G`.
    type G: Transform1d<3, WINDOW>;
    /// The filter-gradient transform `Gᵀ`.
    type Gt: Transform1d<WINDOW, 3>;
    /// The output transform `Aᵀ`.
    type At: Transform1d<WINDOW, TILE>;
    /// The output-gradient transform `A`.
    type A: Transform1d<TILE, WINDOW>;
}

/// F(4x4, 3x3): a quarter of the direct convolution's multiplications.
pub(super) struct F4x4;

impl Filtering<4, 6> for F4x4 {
    type Bt = f4x4::Bt;
    type B = f4x4::B;
    type G = f4x4::G;
    type Gt = f4x4::Gt;
    type At = f4x4::At;
    type A = f4x4::A;
}

/// F(2x2, 3x3): 1/2.25 of the direct convolution's multiplications, with smaller constants
/// (so smaller rounding errors) than F(4x4, 3x3).
pub(super) struct F2x2;

impl Filtering<2, 4> for F2x2 {
    type Bt = f2x2::Bt;
    type B = f2x2::B;
    type G = f2x2::G;
    type Gt = f2x2::Gt;
    type At = f2x2::At;
    type A = f2x2::A;
}

/// The transforms of F(4x4, 3x3).
pub(super) mod f4x4 {
    use super::{SimdF32, Transform1d};

    /// The input transform:
    /// ```text
    /// Bᵀ = [4  0 -5  0  1  0]
    ///      [0 -4 -4  1  1  0]
    ///      [0  4 -4 -1  1  0]
    ///      [0 -2 -1  2  1  0]
    ///      [0  2 -1 -2  1  0]
    ///      [0  4  0 -5  0  1]
    /// ```
    pub struct Bt;

    impl Transform1d<6, 6> for Bt {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(d: [S; 6]) -> [S; 6] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let (four, five, two) = (S::splat(4.0), S::splat(5.0), S::splat(2.0));
                let (d1_plus_d2, d1_minus_d2) = (d[1].add(d[2]), d[1].sub(d[2]));
                let (d3_minus_d1, d4_minus_d2) = (d[3].sub(d[1]), d[4].sub(d[2]));
                [
                    d[0].mul_add(four, d[4]).sub(d[2].mul(five)),
                    d[3].add(d[4]).sub(d1_plus_d2.mul(four)),
                    d1_minus_d2.mul_add(four, d[4].sub(d[3])),
                    d3_minus_d1.mul_add(two, d4_minus_d2),
                    d4_minus_d2.sub(d3_minus_d1.mul(two)),
                    d[1].mul_add(four, d[5]).sub(d[3].mul(five)),
                ]
            }
        }
    }

    /// The input-gradient transform, `B` (the transpose of [`Bt`]'s matrix).
    pub struct B;

    impl Transform1d<6, 6> for B {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(v: [S; 6]) -> [S; 6] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let (v1_plus_v2, v3_plus_v4) = (v[1].add(v[2]), v[3].add(v[4]));
                let (v2_minus_v1, v3_minus_v4) = (v[2].sub(v[1]), v[3].sub(v[4]));
                let (four, two) = (S::splat(4.0), S::splat(2.0));
                [
                    v[0].mul(four),
                    v2_minus_v1.add(v[5]).mul(four).sub(v3_minus_v4.mul(two)),
                    v1_plus_v2
                        .mul_add(S::splat(-4.0), v[0].mul(S::splat(-5.0)))
                        .sub(v3_plus_v4),
                    v3_minus_v4
                        .mul_add(two, v[1].sub(v[2]))
                        .sub(v[5].mul(S::splat(5.0))),
                    v[0].add(v1_plus_v2).add(v3_plus_v4),
                    v[5],
                ]
            }
        }
    }

    /// The filter transform:
    /// ```text
    /// G = [ 1/4     0     0 ]
    ///     [-1/6  -1/6  -1/6 ]
    ///     [-1/6   1/6  -1/6 ]
    ///     [1/24  1/12   1/6 ]
    ///     [1/24 -1/12   1/6 ]
    ///     [   0     0     1 ]
    /// ```
    pub struct G;

    impl Transform1d<3, 6> for G {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(g: [S; 3]) -> [S; 6] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let outer = g[0].add(g[2]);
                let g0_24 = g[0].mul(S::splat(1.0 / 24.0));
                let g1_12 = g[1].mul(S::splat(1.0 / 12.0));
                let g2_6 = g[2].mul(S::splat(1.0 / 6.0));
                let minus_sixth = S::splat(-1.0 / 6.0);
                [
                    g[0].mul(S::splat(0.25)),
                    outer.add(g[1]).mul(minus_sixth),
                    outer.sub(g[1]).mul(minus_sixth),
                    g0_24.add(g1_12).add(g2_6),
                    g0_24.sub(g1_12).add(g2_6),
                    g[2],
                ]
            }
        }
    }

    /// The output transform:
    /// ```text
    /// Aᵀ = [1  1  1  1  1  0]
    ///      [0  1 -1  2 -2  0]
    ///      [0  1  1  4  4  0]
    ///      [0  1 -1  8 -8  1]
    /// ```
    pub struct At;

    impl Transform1d<6, 4> for At {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(m: [S; 6]) -> [S; 4] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let (m1_plus_m2, m1_minus_m2) = (m[1].add(m[2]), m[1].sub(m[2]));
                let (m3_plus_m4, m3_minus_m4) = (m[3].add(m[4]), m[3].sub(m[4]));
                [
                    m[0].add(m1_plus_m2).add(m3_plus_m4),
                    m3_minus_m4.mul_add(S::splat(2.0), m1_minus_m2),
                    m3_plus_m4.mul_add(S::splat(4.0), m1_plus_m2),
                    m3_minus_m4.mul_add(S::splat(8.0), m1_minus_m2).add(m[5]),
                ]
            }
        }
    }

    /// The output-gradient transform, `A` (the transpose of [`At`]'s matrix).
    pub struct A;

    impl Transform1d<4, 6> for A {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(y: [S; 4]) -> [S; 6] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let (y0_plus_y2, y1_plus_y3) = (y[0].add(y[2]), y[1].add(y[3]));
                let (two_y1, eight_y3) = (y[1].add(y[1]), y[3].mul(S::splat(8.0)));
                let y0_plus_4y2 = y[2].mul_add(S::splat(4.0), y[0]);
                [
                    y[0],
                    y0_plus_y2.add(y1_plus_y3),
                    y0_plus_y2.sub(y1_plus_y3),
                    y0_plus_4y2.add(two_y1).add(eight_y3),
                    y0_plus_4y2.sub(two_y1).sub(eight_y3),
                    y[3],
                ]
            }
        }
    }

    /// The filter-gradient transform, `Gᵀ` (the transpose of [`G`]'s matrix).
    pub struct Gt;

    impl Transform1d<6, 3> for Gt {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(m: [S; 6]) -> [S; 3] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let (m1_plus_m2, m3_plus_m4) = (m[1].add(m[2]), m[3].add(m[4]));
                let sixth = S::splat(1.0 / 6.0);
                [
                    m[0].mul(S::splat(0.25))
                        .sub(m1_plus_m2.mul(sixth))
                        .add(m3_plus_m4.mul(S::splat(1.0 / 24.0))),
                    m[2].sub(m[1])
                        .mul(sixth)
                        .add(m[3].sub(m[4]).mul(S::splat(1.0 / 12.0))),
                    m3_plus_m4.sub(m1_plus_m2).mul_add(sixth, m[5]),
                ]
            }
        }
    }
}

/// The transforms of F(2x2, 3x3).
pub(super) mod f2x2 {
    use super::{SimdF32, Transform1d};

    /// The input transform:
    /// ```text
    /// Bᵀ = [1  0 -1  0]
    ///      [0  1  1  0]
    ///      [0 -1  1  0]
    ///      [0  1  0 -1]
    /// ```
    pub struct Bt;

    impl Transform1d<4, 4> for Bt {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(d: [S; 4]) -> [S; 4] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                [
                    d[0].sub(d[2]),
                    d[1].add(d[2]),
                    d[2].sub(d[1]),
                    d[1].sub(d[3]),
                ]
            }
        }
    }

    /// The input-gradient transform, `B` (the transpose of [`Bt`]'s matrix).
    pub struct B;

    impl Transform1d<4, 4> for B {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(v: [S; 4]) -> [S; 4] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let v1_minus_v2 = v[1].sub(v[2]);
                [
                    v[0],
                    v1_minus_v2.add(v[3]),
                    v[1].add(v[2]).sub(v[0]),
                    S::zero().sub(v[3]),
                ]
            }
        }
    }

    /// The filter transform:
    /// ```text
    /// G = [  1     0    0 ]
    ///     [1/2   1/2  1/2 ]
    ///     [1/2  -1/2  1/2 ]
    ///     [  0     0    1 ]
    /// ```
    pub struct G;

    impl Transform1d<3, 4> for G {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(g: [S; 3]) -> [S; 4] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let (outer, half) = (g[0].add(g[2]), S::splat(0.5));
                [
                    g[0],
                    outer.add(g[1]).mul(half),
                    outer.sub(g[1]).mul(half),
                    g[2],
                ]
            }
        }
    }

    /// The output transform:
    /// ```text
    /// Aᵀ = [1  1  1  0]
    ///      [0  1 -1 -1]
    /// ```
    pub struct At;

    impl Transform1d<4, 2> for At {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(m: [S; 4]) -> [S; 2] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe { [m[0].add(m[1]).add(m[2]), m[1].sub(m[2]).sub(m[3])] }
        }
    }

    /// The output-gradient transform, `A` (the transpose of [`At`]'s matrix).
    pub struct A;

    impl Transform1d<2, 4> for A {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(y: [S; 2]) -> [S; 4] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe { [y[0], y[0].add(y[1]), y[0].sub(y[1]), S::zero().sub(y[1])] }
        }
    }

    /// The filter-gradient transform, `Gᵀ` (the transpose of [`G`]'s matrix).
    pub struct Gt;

    impl Transform1d<4, 3> for Gt {
        #[inline(always)]
        unsafe fn apply<S: SimdF32>(m: [S; 4]) -> [S; 3] {
            // SAFETY: the caller's instruction set supports `S`.
            unsafe {
                let half_sum = m[1].add(m[2]).mul(S::splat(0.5));
                [
                    m[0].add(half_sum),
                    m[1].sub(m[2]).mul(S::splat(0.5)),
                    half_sum.add(m[3]),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::portable::Portable;

    /// `T`'s matrix: column `j` is `T` applied to the `j`-th unit vector.
    fn matrix<T: Transform1d<N, R>, const N: usize, const R: usize>() -> [[f32; N]; R] {
        let mut m = [[0.0; N]; R];
        for j in 0..N {
            let mut lanes = [0.0f32; 8];
            // SAFETY: the portable vector runs on any CPU; `lanes` holds its 8 values.
            let column = unsafe {
                let unit = std::array::from_fn(|i| Portable::splat(f32::from(i == j)));
                T::apply(unit)
            };
            for (row, value) in m.iter_mut().zip(column) {
                // SAFETY: as above.
                unsafe { value.store(lanes.as_mut_ptr()) };
                row[j] = lanes[0];
            }
        }
        m
    }

    fn transpose<const N: usize, const R: usize>(m: [[f32; N]; R]) -> [[f32; R]; N] {
        std::array::from_fn(|j| std::array::from_fn(|i| m[i][j]))
    }

    /// Each of `F`'s gradient transforms is the transpose of its forward transform.
    fn gradients_are_transposes<
        F: Filtering<TILE, WINDOW>,
        const TILE: usize,
        const WINDOW: usize,
    >() {
        assert_eq!(
            matrix::<F::B, WINDOW, WINDOW>(),
            transpose(matrix::<F::Bt, WINDOW, WINDOW>())
        );
        assert_eq!(
            matrix::<F::A, TILE, WINDOW>(),
            transpose(matrix::<F::At, WINDOW, TILE>())
        );
        assert_eq!(
            matrix::<F::Gt, WINDOW, 3>(),
            transpose(matrix::<F::G, 3, WINDOW>())
        );
    }

    #[test]
    fn gradient_transforms_are_transposes() {
        gradients_are_transposes::<F4x4, 4, 6>();
        gradients_are_transposes::<F2x2, 2, 4>();
    }

    /// The filterings' defining identity, in one dimension: `Aᵀ [(G g) ⊙ (Bᵀ d)]` is the
    /// correlation of `d` with `g` (`y_i = Σ_k d_(i+k) g_k`), exact for small integers.
    fn filters_exactly<F: Filtering<TILE, WINDOW>, const TILE: usize, const WINDOW: usize>() {
        let g = [2.0, -1.0, 3.0];
        let d: [f32; WINDOW] = std::array::from_fn(|i| (i as f32) * 2.0 - 3.0);
        let apply = |m: &[[f32; 3]; WINDOW]| -> [f32; WINDOW] {
            std::array::from_fn(|i| m[i].iter().zip(&g).map(|(a, b)| a * b).sum())
        };
        let (bt, at) = (
            matrix::<F::Bt, WINDOW, WINDOW>(),
            matrix::<F::At, WINDOW, TILE>(),
        );
        let u = apply(&matrix::<F::G, 3, WINDOW>());
        let v: [f32; WINDOW] =
            std::array::from_fn(|i| bt[i].iter().zip(&d).map(|(a, b)| a * b).sum());
        for (i, row) in at.iter().enumerate() {
            let y: f32 = row
                .iter()
                .zip(u.iter().zip(&v))
                .map(|(a, (u, v))| a * u * v)
                .sum();
            let want: f32 = (0..3).map(|k| d[i + k] * g[k]).sum();
            assert!((y - want).abs() < 1e-4, "output {i}: {y}, want {want}");
        }
    }

    #[test]
    fn filterings_compute_the_correlation() {
        filters_exactly::<F4x4, 4, 6>();
        filters_exactly::<F2x2, 2, 4>();
    }
}
