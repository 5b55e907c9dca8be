//! Parameter sets: the named tensors a layer trains, which also serve as its gradients.
//!
//! Dense, convolution and batch normalisation layers hold a [`WeightBias`] (a weight tensor of
//! any rank and a bias vector, the names weight files use); parameter-free layers have
//! [`NoParams`]. Optimisers, weight files and gradient checks reach them through [`ParamSet`]'s
//! visitors by name, without knowing the layer type. Each tensor is a [`ParamVec`], whose
//! [`Version`] tells a cache derived from its values (a convolution's Winograd filters) whether
//! it is still current.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aligned::AlignedVec;

/// Identifies the values of a [`ParamVec`]: two vectors of the same version hold the same
/// values (one is a clone of the other and neither was changed since). Versions come from one
/// counter for the whole process and never repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version(u64);

impl Version {
    /// A version no vector had before.
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A parameter tensor's values (an [`AlignedVec`], a slice of `f32` through `Deref`) and their
/// [`Version`]. Every way of changing the values (`DerefMut`, iterating `&mut`) first gives
/// them a new version, so what is computed from them can be kept beside their version and
/// reused while it matches, without reading the values again. A clone keeps the version;
/// equality compares the values alone.
///
/// ```
/// use constnet_runtime::layers::ParamVec;
/// let mut weight = ParamVec::from(vec![1.0, 2.0]);
/// let version = weight.version();
/// assert_eq!(weight.clone().version(), version);
/// weight[0] = 3.0;
/// assert_ne!(weight.version(), version);
/// ```
#[derive(Clone)]
pub struct ParamVec {
    values: AlignedVec,
    version: Version,
}

impl ParamVec {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        AlignedVec::zeros(len).into()
    }

    /// The version of the values as they are now.
    pub fn version(&self) -> Version {
        self.version
    }
}

impl Default for ParamVec {
    fn default() -> Self {
        AlignedVec::new().into()
    }
}

impl From<AlignedVec> for ParamVec {
    fn from(values: AlignedVec) -> Self {
        Self {
            values,
            version: Version::next(),
        }
    }
}

impl From<Vec<f32>> for ParamVec {
    fn from(values: Vec<f32>) -> Self {
        AlignedVec::from(values).into()
    }
}

impl From<&[f32]> for ParamVec {
    fn from(values: &[f32]) -> Self {
        AlignedVec::from(values).into()
    }
}

impl FromIterator<f32> for ParamVec {
    fn from_iter<I: IntoIterator<Item = f32>>(values: I) -> Self {
        AlignedVec::from_iter(values).into()
    }
}

impl Deref for ParamVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.values
    }
}

/// A new version, then the values to change.
impl DerefMut for ParamVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.version = Version::next();
        &mut self.values
    }
}

impl<'a> IntoIterator for &'a ParamVec {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut ParamVec {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl PartialEq for ParamVec {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl fmt::Debug for ParamVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.values.fmt(f)
    }
}

/// Receives a named tensor: name, dimensions, values.
pub type TensorVisitor<'a> = dyn FnMut(&str, &[usize], &[f32]) + 'a;
/// Receives a named tensor's values, mutably.
pub type TensorVisitorMut<'a> = dyn FnMut(&str, &mut [f32]) + 'a;
/// Receives a named parameter tensor, mutably, with its gradient.
pub type UpdateVisitor<'a> = dyn FnMut(&str, &mut [f32], &[f32]) + 'a;

/// A set of named parameter tensors.
pub trait ParamSet: Clone + Send + Sync {
    /// A set of the same tensor shapes, all zeros.
    fn zeros_like(&self) -> Self;
    /// Visits each tensor: name, dimensions, values.
    fn visit(&self, visit: &mut TensorVisitor<'_>);
    /// Visits each tensor mutably.
    fn visit_mut(&mut self, visit: &mut TensorVisitorMut<'_>);
    /// Visits each tensor mutably together with the same-named tensor of `other`.
    fn zip_mut(&mut self, other: &Self, visit: &mut UpdateVisitor<'_>);
}

/// The parameters of a layer that has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoParams;

impl ParamSet for NoParams {
    fn zeros_like(&self) -> Self {
        NoParams
    }
    fn visit(&self, _visit: &mut TensorVisitor<'_>) {}
    fn visit_mut(&mut self, _visit: &mut TensorVisitorMut<'_>) {}
    fn zip_mut(&mut self, _other: &Self, _visit: &mut UpdateVisitor<'_>) {}
}

/// A weight tensor and a bias vector, named `weight` and `bias` (empty by default, as a buffer
/// to fill).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightBias {
    /// The weights, laid out as `weight_dims` says (row-major), starting on a cache line.
    pub weight: ParamVec,
    /// One bias per output channel or feature.
    pub bias: ParamVec,
    /// Dimensions of `weight`, e.g. `[in, out]` for dense, `[k, k, in_channels, filters]` for
    /// convolutions.
    pub weight_dims: &'static [usize],
}

impl WeightBias {
    /// Zeros of the given dimensions and bias length.
    pub fn zeros(weight_dims: &'static [usize], bias_len: usize) -> Self {
        Self {
            weight: ParamVec::zeros(weight_dims.iter().product()),
            bias: ParamVec::zeros(bias_len),
            weight_dims,
        }
    }
}

impl ParamSet for WeightBias {
    fn zeros_like(&self) -> Self {
        Self::zeros(self.weight_dims, self.bias.len())
    }
    fn visit(&self, visit: &mut TensorVisitor<'_>) {
        visit("weight", self.weight_dims, &self.weight);
        visit("bias", &[self.bias.len()], &self.bias);
    }
    fn visit_mut(&mut self, visit: &mut TensorVisitorMut<'_>) {
        visit("weight", &mut self.weight);
        visit("bias", &mut self.bias);
    }
    fn zip_mut(&mut self, other: &Self, visit: &mut UpdateVisitor<'_>) {
        visit("weight", &mut self.weight, &other.weight);
        visit("bias", &mut self.bias, &other.bias);
    }
}

/// Two sets side by side (a [`Chain`](super::Chain)'s), their names prefixed `0.` and `1.`.
impl<A: ParamSet, B: ParamSet> ParamSet for (A, B) {
    fn zeros_like(&self) -> Self {
        (self.0.zeros_like(), self.1.zeros_like())
    }
    fn visit(&self, visit: &mut TensorVisitor<'_>) {
        visit_prefixed("0", &self.0, visit);
        visit_prefixed("1", &self.1, visit);
    }
    fn visit_mut(&mut self, visit: &mut TensorVisitorMut<'_>) {
        visit_mut_prefixed("0", &mut self.0, visit);
        visit_mut_prefixed("1", &mut self.1, visit);
    }
    fn zip_mut(&mut self, other: &Self, visit: &mut UpdateVisitor<'_>) {
        zip_mut_prefixed("0", &mut self.0, &other.0, visit);
        zip_mut_prefixed("1", &mut self.1, &other.1, visit);
    }
}

/// Prefixing names: how a network (or a [`Chain`](super::Chain)) names the tensors of its
/// parts, `conv1.weight` for the `weight` of its `conv1`.
///
/// Calls `f` with `prefix.name`, joined on the stack when it fits (every generated name does),
/// so visiting a network's tensors, as each optimiser step does, allocates nothing.
fn with_joined_name<R>(prefix: &str, name: &str, f: impl FnOnce(&str) -> R) -> R {
    const MAX: usize = 128;
    let len = prefix.len() + 1 + name.len();
    if len > MAX {
        return f(&format!("{prefix}.{name}"));
    }
    let mut joined = [0u8; MAX];
    joined[..prefix.len()].copy_from_slice(prefix.as_bytes());
    joined[prefix.len()] = b'.';
    joined[prefix.len() + 1..len].copy_from_slice(name.as_bytes());
    f(std::str::from_utf8(&joined[..len]).expect("two strings joined by a dot are UTF-8"))
}

/// Visits `set`'s tensors with their names prefixed by `layer.`.
pub fn visit_prefixed(layer: &str, set: &impl ParamSet, visit: &mut TensorVisitor<'_>) {
    set.visit(&mut |name, dims, values| {
        with_joined_name(layer, name, |name| visit(name, dims, values))
    });
}

/// Visits `set`'s tensors mutably with their names prefixed by `layer.`.
pub fn visit_mut_prefixed(layer: &str, set: &mut impl ParamSet, visit: &mut TensorVisitorMut<'_>) {
    set.visit_mut(&mut |name, values| with_joined_name(layer, name, |name| visit(name, values)));
}

/// Visits `set`'s tensors mutably beside `other`'s, with names prefixed by `layer.`.
pub fn zip_mut_prefixed<P: ParamSet>(
    layer: &str,
    set: &mut P,
    other: &P,
    visit: &mut UpdateVisitor<'_>,
) {
    set.zip_mut(other, &mut |name, values, grad| {
        with_joined_name(layer, name, |name| visit(name, values, grad))
    });
}

/// Runs `layer`'s parameter visitor with names prefixed by `prefix.`.
pub fn visit_layer_params<L: super::Layer>(prefix: &str, layer: &L, visit: &mut TensorVisitor<'_>) {
    layer.visit_params(&mut |name, dims, values| {
        with_joined_name(prefix, name, |name| visit(name, dims, values))
    });
}

/// Runs `layer`'s mutable parameter visitor with names prefixed by `prefix.`.
pub fn visit_layer_params_mut<L: super::Layer>(
    prefix: &str,
    layer: &mut L,
    visit: &mut TensorVisitorMut<'_>,
) {
    layer.visit_params_mut(&mut |name, values| {
        with_joined_name(prefix, name, |name| visit(name, values))
    });
}

/// Runs `layer`'s update visitor with names prefixed by `prefix.`.
pub fn update_layer_params<L: super::Layer>(
    prefix: &str,
    layer: &mut L,
    grads: &L::Grads,
    update: &mut UpdateVisitor<'_>,
) {
    layer.update_params(grads, &mut |name, values, grad| {
        with_joined_name(prefix, name, |name| update(name, values, grad))
    });
}

/// Runs `layer`'s buffer visitor with names prefixed by `prefix.`.
pub fn visit_layer_buffers<L: super::Layer>(
    prefix: &str,
    layer: &L,
    visit: &mut TensorVisitor<'_>,
) {
    layer.visit_buffers(&mut |name, dims, values| {
        with_joined_name(prefix, name, |name| visit(name, dims, values))
    });
}

/// Runs `layer`'s mutable buffer visitor with names prefixed by `prefix.`.
pub fn visit_layer_buffers_mut<L: super::Layer>(
    prefix: &str,
    layer: &mut L,
    visit: &mut TensorVisitorMut<'_>,
) {
    layer.visit_buffers_mut(&mut |name, values| {
        with_joined_name(prefix, name, |name| visit(name, values))
    });
}

/// The [`Layer`](super::Layer) parameter methods of a layer whose parameters are the
/// [`ParamSet`] in field `$field`.
macro_rules! params_in_field {
    ($field:ident) => {
        fn new_grads(&self) -> Self::Grads {
            $crate::layers::ParamSet::zeros_like(&self.$field)
        }
        fn visit_params(&self, visit: &mut $crate::layers::TensorVisitor<'_>) {
            $crate::layers::ParamSet::visit(&self.$field, visit)
        }
        fn visit_params_mut(&mut self, visit: &mut $crate::layers::TensorVisitorMut<'_>) {
            $crate::layers::ParamSet::visit_mut(&mut self.$field, visit)
        }
        fn update_params(
            &mut self,
            grads: &Self::Grads,
            update: &mut $crate::layers::UpdateVisitor<'_>,
        ) {
            $crate::layers::ParamSet::zip_mut(&mut self.$field, grads, update)
        }
    };
}

/// The [`Layer`](super::Layer) parameter methods of a layer without parameters.
macro_rules! no_params {
    () => {
        type Grads = $crate::layers::NoParams;
        const PARAMS: usize = 0;
        fn new_grads(&self) -> Self::Grads {
            $crate::layers::NoParams
        }
        fn visit_params(&self, _visit: &mut $crate::layers::TensorVisitor<'_>) {}
        fn visit_params_mut(&mut self, _visit: &mut $crate::layers::TensorVisitorMut<'_>) {}
        fn update_params(
            &mut self,
            _grads: &Self::Grads,
            _update: &mut $crate::layers::UpdateVisitor<'_>,
        ) {
        }
    };
}
