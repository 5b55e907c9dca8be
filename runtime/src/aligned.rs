//! [`AlignedVec`]: a growable buffer of `f32` whose first value starts a 64-byte cache line.
//!
//! The kernels load 16 values (64 bytes) at a time from rows whose length is a multiple of 16:
//! weights, batches, transformed filters, scratch. From a cache-line boundary each load touches
//! one line; from the 16-byte boundary a large `Vec<f32>` gets (glibc's `mmap`ed chunks), each
//! load straddles two. The storage is `aligned-vec`'s `AVec`.

use std::fmt;
use std::ops::{Deref, DerefMut};

use aligned_vec::{AVec, ConstAlign};

/// Bytes of a cache line, the alignment of every [`AlignedVec`].
pub const CACHE_LINE: usize = 64;

/// A `Vec<f32>` whose values start on a cache line; a slice of `f32` through `Deref`.
///
/// ```
/// use constnet_runtime::aligned::{AlignedVec, CACHE_LINE};
/// let values = AlignedVec::from(vec![1.0, 2.0, 3.0]);
/// assert_eq!(&values[..], &[1.0, 2.0, 3.0]);
/// assert_eq!(values.as_ptr() as usize % CACHE_LINE, 0);
/// ```
#[derive(Clone, PartialEq)]
pub struct AlignedVec(AVec<f32, ConstAlign<CACHE_LINE>>);

impl AlignedVec {
    /// An empty buffer; allocates nothing.
    pub fn new() -> Self {
        Self(AVec::new(CACHE_LINE))
    }

    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut values = Self::new();
        values.resize(len, 0.0);
        values
    }

    /// Sets the length to `len`, appending copies of `value` when it grows; keeps the
    /// allocation when it shrinks.
    pub fn resize(&mut self, len: usize, value: f32) {
        self.0.resize(len, value);
    }

    /// Shortens the buffer to `len` values (nothing when it is no longer), keeping the
    /// allocation.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// Sets the length to `len` without touching the values.
    ///
    /// # Safety
    /// `len` is at most the capacity, and the first `len` values were initialised (written
    /// while the buffer was at least that long, and the allocation not replaced since).
    pub unsafe fn set_len(&mut self, len: usize) {
        // SAFETY: the caller's guarantee is `AVec::set_len`'s.
        unsafe { self.0.set_len(len) }
    }

    /// Makes room for at least `additional` more values without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    /// How many values fit without reallocating.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl Default for AlignedVec {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.0.as_slice()
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.0.as_mut_slice()
    }
}

impl From<&[f32]> for AlignedVec {
    fn from(values: &[f32]) -> Self {
        Self(AVec::from_slice(CACHE_LINE, values))
    }
}

/// Copies the values into aligned storage.
impl From<Vec<f32>> for AlignedVec {
    fn from(values: Vec<f32>) -> Self {
        Self::from(&values[..])
    }
}

impl FromIterator<f32> for AlignedVec {
    fn from_iter<I: IntoIterator<Item = f32>>(values: I) -> Self {
        Self(AVec::from_iter(CACHE_LINE, values))
    }
}

impl<'a> IntoIterator for &'a AlignedVec {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut AlignedVec {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_to_make_one_starts_on_a_cache_line() {
        let aligned = |values: &AlignedVec| (values.as_ptr() as usize).is_multiple_of(CACHE_LINE);
        let mut grown = AlignedVec::zeros(3);
        grown.resize(300_000, 1.0);
        assert!(aligned(&grown) && grown[2] == 0.0 && grown[299_999] == 1.0);
        assert!(aligned(&AlignedVec::from(vec![1.0; 100_000])));
        assert!(aligned(&(0..50_000).map(|i| i as f32).collect()));
        assert!(aligned(&grown.clone()));
    }
}
