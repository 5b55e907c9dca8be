//! The vector operations the generic kernels are written in.
//!
//! [`SimdF32`] is implemented once per instruction set (`x86_avx512.rs`, `x86_avx2.rs`,
//! `portable.rs`), its methods compiled with that set's target features. Kernels are generic over
//! it and marked `#[inline(always)]`; each instruction set's entry point is a `#[target_feature]`
//! function that instantiates them, so everything inlines into code compiled for that set.
//!
//! One rule keeps it so: no closure between an entry point and the vector code (no
//! `LocalKey::with`, `array::from_fn`, iterator adaptors taking closures that do vector work). A
//! closure is a function of its own, without the target features; when it is not inlined, which
//! happens with several codegen units (Cargo's default release profile), every vector operation
//! inside it becomes a call, and the GEMM ran 60 times slower.

/// A vector of `LANES` `f32` values.
///
/// # Safety
/// Implementations use intrinsics of one instruction set: their methods may only be called from
/// code running on a CPU that supports it (the dispatch in [`super::Isa`] guarantees that).
/// Pointers passed to `load` and `store` must be valid for `LANES` consecutive `f32`s.
pub unsafe trait SimdF32: Copy {
    /// Number of `f32` lanes.
    const LANES: usize;
    /// All lanes zero.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn splat(x: f32) -> Self;
    /// Loads `LANES` values from `ptr` (no alignment needed).
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set and `ptr` must cover `LANES` floats.
    unsafe fn load(ptr: *const f32) -> Self;
    /// Stores the lanes to `ptr` (no alignment needed).
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set and `ptr` must cover `LANES` floats.
    unsafe fn store(self, ptr: *mut f32);
    /// `self * b + acc`, fused where the instruction set has FMA.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn mul_add(self, b: Self, acc: Self) -> Self;
    /// Lane-wise sum.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn add(self, b: Self) -> Self;
    /// Lane-wise difference `self − b`.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn sub(self, b: Self) -> Self;
    /// Lane-wise product.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn mul(self, b: Self) -> Self;
    /// Lane-wise [`relu`](super::elementwise::relu): `x < 0 ? 0 : x`, NaN kept, `-0.0` kept.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn relu(self) -> Self;
    /// Lane-wise [`max_keep_nan`](super::elementwise::max_keep_nan)`(self, x)`: `x` where
    /// `x > self` or `x` is NaN, otherwise `self`.
    ///
    /// # Safety
    /// As for the trait: the CPU must support the instruction set.
    unsafe fn max_keep_nan(self, x: Self) -> Self;
}

/// A kernel written once over [`SimdF32`], run with the widest vector the CPU has by
/// [`run_vectorized`](super::run_vectorized).
///
/// Its `run` is `#[inline(always)]` and, by the rule above, has no closure around vector work,
/// so it compiles into each instruction set's entry point.
pub(crate) trait VectorKernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel with vectors `S`.
    ///
    /// # Safety
    /// The CPU must support `S`'s instruction set.
    unsafe fn run<S: SimdF32>(self) -> Self::Output;
}
