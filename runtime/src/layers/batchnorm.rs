//! Batch normalisation ([`BatchNorm`]) along the innermost axis: per channel of an image, per
//! feature of a flat vector.
//!
//! Training normalises with the batch's own mean and (biased) variance and moves the running
//! statistics towards them; inference normalises with the running statistics. Defaults follow
//! Keras: momentum 0.99, epsilon 0.001, `gamma` (saved as `weight`) ones, `beta` (`bias`) zeros.

use constnet_catalogue::LayerKind;
use std::marker::PhantomData;

use super::{Layer, TensorVisitor, TensorVisitorMut, WeightBias};
use crate::shape::Shape;
use crate::tensor::Batch;

/// Batch normalisation of samples of shape `S`, per `S::CHANNELS`.
#[derive(Clone, Debug)]
pub struct BatchNorm<S: Shape> {
    /// `weight` (gamma) and `bias` (beta), one per channel.
    pub params: WeightBias,
    /// Running mean per channel, used at inference.
    pub running_mean: Vec<f32>,
    /// Running variance per channel, used at inference.
    pub running_var: Vec<f32>,
    /// Weight of the old running statistics in each update.
    pub momentum: f32,
    /// Added to the variance before the square root.
    pub epsilon: f32,
    shape: PhantomData<S>,
}

/// What a training pass keeps for backward: normalised values and `1 / σ` per channel (inference
/// reuses `1 / σ`'s buffer for the running statistics'), and the per-channel buffers both passes
/// compute their statistics in, kept so no pass allocates.
#[derive(Clone, Debug, Default)]
pub struct BatchNormCache {
    normalized: Vec<f32>,
    inv_std: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    sums: Vec<f64>,
    products: Vec<f64>,
}

impl<S: Shape> Default for BatchNorm<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Shape> BatchNorm<S> {
    const WEIGHT_DIMS: &'static [usize] = &[S::CHANNELS];

    /// Batch normalisation with Keras's defaults.
    pub fn new() -> Self {
        let mut params = WeightBias::zeros(Self::WEIGHT_DIMS, S::CHANNELS);
        params.weight.fill(1.0);
        Self {
            params,
            running_mean: vec![0.0; S::CHANNELS],
            running_var: vec![1.0; S::CHANNELS],
            momentum: 0.99,
            epsilon: constnet_catalogue::BATCHNORM_EPSILON,
            shape: PhantomData,
        }
    }

    /// Batch normalisation with Keras's defaults but `epsilon` added to the variance (PyTorch's
    /// and ONNX's default is `1e-5`).
    pub fn with_epsilon(epsilon: f32) -> Self {
        Self {
            epsilon,
            ..Self::new()
        }
    }

    /// Writes `gamma · (x − mean) · inv_std + beta` per channel into `output`, and the
    /// normalised values into `normalized` when given.
    fn normalize(
        &self,
        input: &[f32],
        output: &mut [f32],
        mean: &[f32],
        inv_std: &[f32],
        mut normalized: Option<&mut [f32]>,
    ) {
        for (row, (x, y)) in input
            .chunks(S::CHANNELS)
            .zip(output.chunks_mut(S::CHANNELS))
            .enumerate()
        {
            for c in 0..S::CHANNELS {
                let x_hat = (x[c] - mean[c]) * inv_std[c];
                y[c] = self.params.weight[c] * x_hat + self.params.bias[c];
                if let Some(normalized) = normalized.as_deref_mut() {
                    normalized[row * S::CHANNELS + c] = x_hat;
                }
            }
        }
    }
}

/// Per-channel sums of `f(channel, value)` over rows of `channels` values, in f64, into `sums`.
fn channel_sums(
    values: &[f32],
    channels: usize,
    f: impl Fn(usize, f32) -> f64,
    sums: &mut Vec<f64>,
) {
    sums.clear();
    sums.resize(channels, 0.0);
    for row in values.chunks(channels) {
        for (c, (sum, &v)) in sums.iter_mut().zip(row).enumerate() {
            *sum += f(c, v);
        }
    }
}

/// `out = sums / rows`, as `f32`.
fn means(sums: &[f64], rows: f64, out: &mut Vec<f32>) {
    out.clear();
    out.extend(sums.iter().map(|s| (s / rows) as f32));
}

impl<S: Shape> Layer for BatchNorm<S> {
    type Input = S;
    type Output = S;
    type Grads = WeightBias;
    type Cache = BatchNormCache;
    const PARAMS: usize = 2 * S::CHANNELS;
    const BUFFERS: usize = 2 * S::CHANNELS;

    fn kind(&self) -> LayerKind {
        LayerKind::BatchNorm {
            epsilon: self.epsilon,
        }
    }

    fn forward(&self, input: &Batch<S>, output: &mut Batch<S>, workspace: &mut BatchNormCache) {
        output.resize(input.len());
        let inv_std = &mut workspace.inv_std;
        inv_std.clear();
        inv_std.extend(
            self.running_var
                .iter()
                .map(|v| 1.0 / (v + self.epsilon).sqrt()),
        );
        self.normalize(
            input.as_slice(),
            output.as_mut_slice(),
            &self.running_mean,
            inv_std,
            None,
        );
    }

    fn forward_train(
        &mut self,
        input: &Batch<S>,
        output: &mut Batch<S>,
        cache: &mut BatchNormCache,
    ) {
        output.resize(input.len());
        let x = input.as_slice();
        let rows = (x.len() / S::CHANNELS).max(1) as f64;
        let BatchNormCache {
            normalized,
            inv_std,
            mean,
            var,
            sums,
            ..
        } = cache;
        channel_sums(x, S::CHANNELS, |_, v| v as f64, sums);
        means(sums, rows, mean);
        channel_sums(x, S::CHANNELS, |c, v| ((v - mean[c]) as f64).powi(2), sums);
        means(sums, rows, var);
        inv_std.clear();
        inv_std.extend(var.iter().map(|v| 1.0 / (v + self.epsilon).sqrt()));
        normalized.resize(x.len(), 0.0);
        self.normalize(x, output.as_mut_slice(), mean, inv_std, Some(normalized));
        for c in 0..S::CHANNELS {
            self.running_mean[c] =
                self.momentum * self.running_mean[c] + (1.0 - self.momentum) * mean[c];
            self.running_var[c] =
                self.momentum * self.running_var[c] + (1.0 - self.momentum) * var[c];
        }
    }

    /// With `m` values per channel: `dβ = Σ dy`, `dγ = Σ dy·x̂`,
    /// `dx = γ/(m·σ) · (m·dy − dβ − x̂·dγ)`.
    fn backward(
        &self,
        _input: &Batch<S>,
        _output: &Batch<S>,
        grad_output: &Batch<S>,
        cache: &mut BatchNormCache,
        grad_input: Option<&mut Batch<S>>,
        grads: &mut WeightBias,
    ) {
        let dy = grad_output.as_slice();
        let BatchNormCache {
            normalized: x_hat,
            inv_std,
            sums: dbeta,
            products: dgamma,
            ..
        } = cache;
        let rows = (dy.len() / S::CHANNELS).max(1) as f32;
        channel_sums(dy, S::CHANNELS, |_, g| g as f64, dbeta);
        dgamma.clear();
        dgamma.resize(S::CHANNELS, 0.0);
        for (g_row, x_row) in dy.chunks(S::CHANNELS).zip(x_hat.chunks(S::CHANNELS)) {
            for c in 0..S::CHANNELS {
                dgamma[c] += (g_row[c] * x_row[c]) as f64;
            }
        }
        for (grad, &sum) in grads.weight.iter_mut().zip(dgamma.iter()) {
            *grad = sum as f32;
        }
        for (grad, &sum) in grads.bias.iter_mut().zip(dbeta.iter()) {
            *grad = sum as f32;
        }
        let Some(grad_input) = grad_input else { return };
        grad_input.resize(grad_output.len());
        for ((dx, g), x) in grad_input
            .as_mut_slice()
            .chunks_mut(S::CHANNELS)
            .zip(dy.chunks(S::CHANNELS))
            .zip(x_hat.chunks(S::CHANNELS))
        {
            for c in 0..S::CHANNELS {
                let scale = self.params.weight[c] * inv_std[c] / rows;
                dx[c] = scale * (rows * g[c] - dbeta[c] as f32 - x[c] * dgamma[c] as f32);
            }
        }
    }

    params_in_field!(params);

    fn visit_buffers(&self, visit: &mut TensorVisitor<'_>) {
        visit("running_mean", Self::WEIGHT_DIMS, &self.running_mean);
        visit("running_var", Self::WEIGHT_DIMS, &self.running_var);
    }

    fn visit_buffers_mut(&mut self, visit: &mut TensorVisitorMut<'_>) {
        visit("running_mean", &mut self.running_mean);
        visit("running_var", &mut self.running_var);
    }
}
