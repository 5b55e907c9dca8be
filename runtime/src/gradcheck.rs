//! Finite-difference gradient checks for any [`Layer`], the test every layer (and any layer a
//! user writes) must pass.
//!
//! The check builds the scalar loss `L = Σ r ⊙ layer(x)` with fixed random weights `r`, takes
//! the layer's own backward pass with `dy = r`, and compares each checked entry of the input
//! gradient and of every parameter gradient with the central difference
//! `(L(θ + ε) − L(θ − ε)) / 2ε`, accumulated in f64. Every evaluation runs the *training* forward
//! pass on a fresh clone of the layer, so batch statistics are part of the function and dropout
//! replays the same mask.

use std::fmt;

use rand::RngExt;

use crate::init::seeded_rng;
use crate::layers::{Layer, ParamSet};
use crate::tensor::Batch;

/// Settings of a gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Step of the central difference.
    pub epsilon: f32,
    /// Allowed error relative to the larger of the two gradients...
    pub relative_tolerance: f64,
    /// ...plus this much absolute error, the rounding noise of an f32 forward pass.
    pub absolute_tolerance: f64,
    /// At most this many entries of each tensor are checked, chosen at random.
    pub max_entries_per_tensor: usize,
    /// Seed of `r` and of the choice of entries.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            epsilon: 1e-2,
            relative_tolerance: 1e-2,
            absolute_tolerance: 2e-3,
            max_entries_per_tensor: 64,
            seed: 0,
        }
    }
}

/// An entry whose analytic and numeric gradients disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct GradMismatch {
    /// `input` or the parameter's name (`weight`, `bias`, ...).
    pub tensor: String,
    /// Index of the entry within the tensor.
    pub index: usize,
    /// What the backward pass computed.
    pub analytic: f64,
    /// The central difference.
    pub numeric: f64,
}

impl fmt::Display for GradMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradient of {}[{}]: backward gives {:.6}, finite differences {:.6}",
            self.tensor, self.index, self.analytic, self.numeric
        )
    }
}

impl std::error::Error for GradMismatch {}

/// What a passed check covered.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCheckReport {
    /// Each checked tensor with the number of its entries checked.
    pub tensors: Vec<(String, usize)>,
    /// The largest `|analytic − numeric| / (relative_tolerance·max(|a|, |n|) + absolute_tolerance)`
    /// seen: below 1 means within tolerance.
    pub worst_ratio: f64,
}

impl GradCheck {
    /// Checks the input gradient and every parameter gradient of `layer` at `input`.
    pub fn run<L: Layer + Clone>(
        &self,
        layer: &L,
        input: &Batch<L::Input>,
    ) -> Result<GradCheckReport, GradMismatch> {
        let mut rng = seeded_rng(self.seed);
        let mut analytic_layer = layer.clone();
        let mut output = Batch::default();
        let mut cache = L::Cache::default();
        analytic_layer.forward_train(input, &mut output, &mut cache);
        let weights: Vec<f32> = (0..output.as_slice().len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let grad_output = Batch::from_vec(weights.clone()).expect("same length as the output");
        let mut grad_input = Batch::default();
        let mut grads = analytic_layer.new_grads();
        analytic_layer.backward(
            input,
            &output,
            &grad_output,
            &mut cache,
            Some(&mut grad_input),
            &mut grads,
        );

        let loss = |layer: &L, input: &Batch<L::Input>| -> f64 {
            let mut layer = layer.clone();
            let mut output = Batch::default();
            layer.forward_train(input, &mut output, &mut L::Cache::default());
            output
                .as_slice()
                .iter()
                .zip(&weights)
                .map(|(&y, &r)| y as f64 * r as f64)
                .sum()
        };
        let mut report = GradCheckReport {
            tensors: Vec::new(),
            worst_ratio: 0.0,
        };

        let entries = self.entries(input.as_slice().len(), &mut rng);
        for &index in &entries {
            let numeric = self.central_difference(|delta| {
                let mut shifted = input.clone();
                shifted.as_mut_slice()[index] += delta;
                loss(layer, &shifted)
            });
            self.compare(
                "input",
                index,
                grad_input.as_slice()[index] as f64,
                numeric,
                &mut report,
            )?;
        }
        report.tensors.push(("input".into(), entries.len()));

        let mut analytic_params: Vec<(String, Vec<f32>)> = Vec::new();
        grads.visit(&mut |name, _, values| {
            analytic_params.push((name.to_string(), values.to_vec()))
        });
        for (name, analytic) in &analytic_params {
            let entries = self.entries(analytic.len(), &mut rng);
            for &index in &entries {
                let numeric = self.central_difference(|delta| {
                    let mut shifted = layer.clone();
                    shifted.visit_params_mut(&mut |param, values| {
                        if param == name {
                            values[index] += delta;
                        }
                    });
                    loss(&shifted, input)
                });
                self.compare(name, index, analytic[index] as f64, numeric, &mut report)?;
            }
            report.tensors.push((name.clone(), entries.len()));
        }
        Ok(report)
    }

    /// All indices below `len`, or `max_entries_per_tensor` of them at random.
    fn entries(&self, len: usize, rng: &mut crate::init::SeededRng) -> Vec<usize> {
        if len <= self.max_entries_per_tensor {
            (0..len).collect()
        } else {
            (0..self.max_entries_per_tensor)
                .map(|_| rng.random_range(0..len))
                .collect()
        }
    }

    fn central_difference(&self, loss_at: impl Fn(f32) -> f64) -> f64 {
        (loss_at(self.epsilon) - loss_at(-self.epsilon)) / (2.0 * self.epsilon as f64)
    }

    fn compare(
        &self,
        tensor: &str,
        index: usize,
        analytic: f64,
        numeric: f64,
        report: &mut GradCheckReport,
    ) -> Result<(), GradMismatch> {
        let allowed =
            self.relative_tolerance * analytic.abs().max(numeric.abs()) + self.absolute_tolerance;
        let ratio = (analytic - numeric).abs() / allowed;
        report.worst_ratio = report.worst_ratio.max(ratio);
        if ratio <= 1.0 {
            Ok(())
        } else {
            Err(GradMismatch {
                tensor: tensor.to_string(),
                index,
                analytic,
                numeric,
            })
        }
    }
}
