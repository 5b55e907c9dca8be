//! Typed tensors: one sample ([`Tensor`]) and a batch of samples ([`Batch`]).
//!
//! The sample shape is part of the type and fixed at compile time; the number of samples in a
//! batch is a run-time value, because real training loops end an epoch with a partial batch
//! (60,000 MNIST images in batches of 128 leave 96) and inference runs on whatever count the
//! caller has. Both store `f32` on the heap, contiguous, sample after sample, each sample laid out
//! as its [`Shape`] says (channels innermost). A batch keeps its allocation when it is resized to
//! the same or a smaller count, so a training loop that reuses its batches allocates nothing per
//! step.

use std::fmt;
use std::marker::PhantomData;

use crate::aligned::AlignedVec;
use crate::shape::{Hwc, Shape};

/// Why data could not be turned into a tensor of the requested shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    /// The shape that was requested, as `HxWxC`.
    pub expected: String,
    /// How many values one sample of that shape holds.
    pub sample_len: usize,
    /// How many values were given.
    pub got: usize,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} values cannot form samples of shape {} ({} values each)",
            self.got, self.expected, self.sample_len
        )
    }
}

impl std::error::Error for ShapeError {}

/// One sample of shape `S`.
#[derive(Clone, PartialEq)]
pub struct Tensor<S: Shape> {
    data: Box<[f32]>,
    shape: PhantomData<S>,
}

impl<S: Shape> Tensor<S> {
    /// A tensor of zeros.
    pub fn zeros() -> Self {
        Self {
            data: vec![0.0; S::LEN].into_boxed_slice(),
            shape: PhantomData,
        }
    }

    /// Wraps `data`, which must hold exactly `S::LEN` values in the shape's layout.
    pub fn from_vec(data: Vec<f32>) -> Result<Self, ShapeError> {
        if data.len() != S::LEN {
            return Err(ShapeError {
                expected: S::describe(),
                sample_len: S::LEN,
                got: data.len(),
            });
        }
        Ok(Self {
            data: data.into_boxed_slice(),
            shape: PhantomData,
        })
    }

    /// The values, in the shape's layout.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// This sample as a batch of one (copies the values).
    pub fn to_batch(&self) -> Batch<S> {
        Batch {
            len: 1,
            data: AlignedVec::from(&self.data[..]),
            shape: PhantomData,
        }
    }
}

impl<const H: usize, const W: usize, const C: usize> Tensor<Hwc<H, W, C>> {
    /// The value at row `h`, column `w`, channel `c`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn get(&self, h: usize, w: usize, c: usize) -> f32 {
        assert!(
            h < H && w < W && c < C,
            "index ({h}, {w}, {c}) out of range for {H}x{W}x{C}"
        );
        self.data[(h * W + w) * C + c]
    }
}

impl<S: Shape> fmt::Debug for Tensor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?}", S::describe(), &self.data)
    }
}

/// A batch of samples of shape `S`, stored one after another.
///
/// `repr(C)`: the layout does not depend on `S` (a zero-sized marker), which
/// [`Batch::reshaped`] relies on.
#[derive(Clone, PartialEq)]
#[repr(C)]
pub struct Batch<S: Shape> {
    len: usize,
    data: AlignedVec,
    shape: PhantomData<S>,
}

impl<S: Shape> Default for Batch<S> {
    fn default() -> Self {
        Self::zeros(0)
    }
}

impl<S: Shape> Batch<S> {
    /// `len` samples of zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            len,
            data: AlignedVec::zeros(len * S::LEN),
            shape: PhantomData,
        }
    }

    /// The values of `data`, whose length must be a multiple of `S::LEN`, as consecutive
    /// samples (copied into storage aligned for the kernels, [`AlignedVec`]).
    pub fn from_vec(data: Vec<f32>) -> Result<Self, ShapeError> {
        if S::LEN == 0 || !data.len().is_multiple_of(S::LEN) {
            return Err(ShapeError {
                expected: S::describe(),
                sample_len: S::LEN,
                got: data.len(),
            });
        }
        Ok(Self {
            len: data.len() / S::LEN,
            data: AlignedVec::from(data),
            shape: PhantomData,
        })
    }

    /// Builds a batch by calling `value(i)` for each of the `len * S::LEN` elements.
    pub fn from_fn(len: usize, value: impl FnMut(usize) -> f32) -> Self {
        Self {
            len,
            data: (0..len * S::LEN).map(value).collect(),
            shape: PhantomData,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Changes the number of samples, keeping the allocation when it is large enough. The values
    /// are unspecified afterwards (kernels that write a batch overwrite all of it).
    pub fn resize(&mut self, len: usize) {
        self.len = len;
        self.data.resize(len * S::LEN, 0.0);
    }

    /// Makes this batch a copy of `other`, keeping the allocation when it is large enough.
    pub fn copy_from(&mut self, other: &Batch<S>) {
        self.resize(other.len());
        self.data.copy_from_slice(&other.data);
    }

    /// Makes this batch hold `values` (whole samples), keeping the allocation when it is large
    /// enough.
    ///
    /// # Panics
    /// If `values` is not a whole number of samples.
    pub fn set_samples(&mut self, values: &[f32]) {
        assert!(
            values.len().is_multiple_of(S::LEN.max(1)),
            "{} values are not whole samples of {}",
            values.len(),
            S::describe()
        );
        self.resize(values.len() / S::LEN.max(1));
        self.data.copy_from_slice(values);
    }

    /// Sets every value to zero.
    pub fn fill_zero(&mut self) {
        self.data.fill(0.0);
    }

    /// All values, sample after sample.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// All values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The values of sample `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn sample(&self, i: usize) -> &[f32] {
        &self.data[i * S::LEN..(i + 1) * S::LEN]
    }

    /// The values of sample `i`, mutably.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn sample_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * S::LEN..(i + 1) * S::LEN]
    }

    /// The same samples seen as shape `T`, which holds as many values per sample (a flatten):
    /// no copy. Checked at compile time.
    ///
    /// ```
    /// use constnet_runtime::{Batch, Flat, Hwc};
    /// let images = Batch::<Hwc<2, 2, 3>>::zeros(5);
    /// let flat: &Batch<Flat<12>> = images.reshaped();
    /// assert_eq!(flat.len(), 5);
    /// ```
    pub fn reshaped<T: Shape>(&self) -> &Batch<T> {
        const {
            assert!(
                S::LEN == T::LEN,
                "reshaped: the shapes hold different numbers of values"
            )
        };
        // SAFETY: `Batch` is `repr(C)` and its fields do not depend on the shape (a zero-sized
        // marker), so `Batch<S>` and `Batch<T>` have one layout; with equal sample lengths the
        // invariant `data.len() == len * LEN` holds for `T` too.
        unsafe { &*(self as *const Batch<S>).cast::<Batch<T>>() }
    }

    /// [`Batch::reshaped`], mutably: resizing the view resizes this batch.
    pub fn reshaped_mut<T: Shape>(&mut self) -> &mut Batch<T> {
        const {
            assert!(
                S::LEN == T::LEN,
                "reshaped: the shapes hold different numbers of values"
            )
        };
        // SAFETY: as for `reshaped`; every method of `Batch<T>` keeps the invariant for `S`.
        unsafe { &mut *(self as *mut Batch<S>).cast::<Batch<T>>() }
    }

    /// A batch of `samples` samples over `data`, whose length must be `samples * S::LEN`.
    pub(crate) fn from_storage(data: AlignedVec, samples: usize) -> Self {
        assert_eq!(data.len(), samples * S::LEN, "storage of the wrong length");
        Self {
            len: samples,
            data,
            shape: PhantomData,
        }
    }

    /// The values' storage, for another batch to reuse.
    pub(crate) fn into_storage(self) -> AlignedVec {
        self.data
    }

    /// Bytes allocated for the values.
    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity() * size_of::<f32>()
    }

    /// Sample `i` as a tensor of its own (copies the values).
    pub fn to_tensor(&self, i: usize) -> Tensor<S> {
        Tensor {
            data: self.sample(i).into(),
            shape: PhantomData,
        }
    }
}

impl<S: Shape> fmt::Debug for Batch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch<{}; {}>{:?}", self.len, S::describe(), &self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Flat;

    #[test]
    fn from_vec_checks_length() {
        assert!(Batch::<Flat<3>>::from_vec(vec![0.0; 6]).is_ok());
        let err = Batch::<Hwc<2, 2, 1>>::from_vec(vec![0.0; 6]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "6 values cannot form samples of shape 2x2x1 (4 values each)"
        );
        assert!(Tensor::<Flat<3>>::from_vec(vec![0.0; 4]).is_err());
    }

    #[test]
    fn hwc_indexing_is_channels_innermost() {
        let t = Tensor::<Hwc<2, 3, 2>>::from_vec((0..12).map(|v| v as f32).collect()).unwrap();
        assert_eq!(t.get(0, 0, 1), 1.0);
        assert_eq!(t.get(0, 1, 0), 2.0);
        assert_eq!(t.get(1, 0, 0), 6.0);
    }

    #[test]
    fn samples_and_resize() {
        let mut b = Batch::<Flat<2>>::from_fn(3, |i| i as f32);
        assert_eq!(b.sample(1), &[2.0, 3.0]);
        assert_eq!(b.to_tensor(2).as_slice(), &[4.0, 5.0]);
        b.resize(1);
        assert_eq!(b.len(), 1);
        assert_eq!(b.as_slice(), &[0.0, 1.0]);
    }
}
