//! Training on losses other than softmax cross-entropy: regression with mean squared or mean
//! absolute error on target vectors, and multi-label classification with binary cross-entropy
//! fused with a final sigmoid. Each trains to a stated error on synthetic data in seconds, and
//! the network's head decides at compile time which losses it accepts
//! (`tests/compile_fail/fit_regression_loss_on_softmax_network.rs`).

use constnet::gradcheck::GradCheck;
use constnet::init::seeded_rng;
use constnet::loss::{Head, OutputActivation};
use constnet::prelude::*;
use constnet::rand::RngExt;
use constnet::train::TrainError;

network! {
    /// Two inputs to one value.
    Regressor<input(2) dense(64) tanh dense(64) tanh dense(1)>
}

network! {
    /// Eight features to three independent labels.
    Tagger<input(8) dense(32) relu dense(3) sigmoid>
}

/// `y = sin(3·a) + b² + noise` for `a`, `b` uniform in [−1, 1], noise uniform in ±0.05 (its
/// mean square is 0.05² / 3 ≈ 8.3e-4, the least error a model can reach).
fn curve(samples: usize, seed: u64) -> Dataset<Flat<2>, [f32; 1]> {
    let mut rng = seeded_rng(seed);
    let mut inputs = Batch::zeros(samples);
    let mut targets = Vec::with_capacity(samples);
    for x in inputs.as_mut_slice().chunks_mut(2) {
        x[0] = rng.random_range(-1.0..1.0);
        x[1] = rng.random_range(-1.0..1.0);
        let noise: f32 = rng.random_range(-0.05..0.05);
        targets.push([(3.0 * x[0]).sin() + x[1] * x[1] + noise]);
    }
    Dataset::with_targets(inputs, targets).unwrap()
}

/// Labels `[x0 > 0, x1 + x2 > 0, x3·x4 > 0]` of uniform features.
fn tags(samples: usize, seed: u64) -> Dataset<Flat<8>, [f32; 3]> {
    let mut rng = seeded_rng(seed);
    let mut inputs = Batch::zeros(samples);
    let mut targets = Vec::with_capacity(samples);
    for x in inputs.as_mut_slice().chunks_mut(8) {
        x.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
        let label = |yes: bool| f32::from(u8::from(yes));
        targets.push([
            label(x[0] > 0.0),
            label(x[1] + x[2] > 0.0),
            label(x[3] * x[4] > 0.0),
        ]);
    }
    Dataset::with_targets(inputs, targets).unwrap()
}

fn config(epochs: usize, batch_size: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size,
        verbose: false,
        ..FitConfig::default()
    }
}

#[test]
fn mean_squared_error_fits_a_noisy_curve() {
    let (train, test) = (curve(4000, 1), curve(1000, 2));
    let mut net = Regressor::new(3);
    let before = evaluate_with(&net, MeanSquaredError, &test, 256).unwrap();
    let mut optimizer = OptimizerState::new(Adam {
        learning_rate: 3e-3,
        ..Adam::default()
    });
    optimizer.schedule = Schedule::Cosine { epochs: 40 };
    let history = fit_with(
        &mut net,
        MeanSquaredError,
        &mut optimizer,
        &train,
        Validation::Data(&test),
        &config(40, 32),
    )
    .unwrap();
    assert_eq!(history.metric, "mae");
    let after = evaluate_with(&net, MeanSquaredError, &test, 256).unwrap();
    println!("test MSE {:.5}, MAE {:.4}", after.loss, after.metric);
    // Noise alone leaves 8.3e-4; a constant prediction about 0.6.
    assert!(
        after.loss < 2e-3,
        "test MSE {} (before {})",
        after.loss,
        before.loss
    );
    assert!(after.metric < 0.035, "test MAE {}", after.metric);
    assert_eq!(history.epochs.last().unwrap().val_loss, Some(after.loss));

    let predicted = predict_outputs(&net, test.images(), 100).unwrap();
    let mae: f32 = predicted
        .as_slice()
        .iter()
        .zip(test.targets())
        .map(|(y, t)| (y - t[0]).abs())
        .sum::<f32>()
        / test.len() as f32;
    assert!(
        (mae - after.metric).abs() < 1e-4,
        "{mae} vs {}",
        after.metric
    );
}

#[test]
fn mean_absolute_error_trains_too() {
    let (train, test) = (curve(4000, 3), curve(1000, 4));
    let mut net = Regressor::new(5);
    let mut optimizer = OptimizerState::new(Adam {
        learning_rate: 3e-3,
        ..Adam::default()
    });
    let train_config = config(30, 32);
    fit_with(
        &mut net,
        MeanAbsoluteError,
        &mut optimizer,
        &train,
        Validation::None,
        &train_config,
    )
    .unwrap();
    let score = evaluate_with(&net, MeanAbsoluteError, &test, 256).unwrap();
    println!("test MAE {:.4}", score.loss);
    assert_eq!(score.loss, score.metric);
    assert!(score.loss < 0.045, "test MAE {}", score.loss);
}

#[test]
fn binary_cross_entropy_learns_several_labels_per_sample() {
    let (train, test) = (tags(4000, 5), tags(1000, 6));
    let mut net = Tagger::new(7);
    let mut optimizer = OptimizerState::new(Adam {
        learning_rate: 3e-3,
        ..Adam::default()
    });
    let history = fit_with(
        &mut net,
        BinaryCrossentropy,
        &mut optimizer,
        &train,
        Validation::Split(0.1),
        &config(20, 32),
    )
    .unwrap();
    assert_eq!(history.metric, "binary_accuracy");
    let score = evaluate_with(&net, BinaryCrossentropy, &test, 256).unwrap();
    println!(
        "test binary accuracy {:.4}, loss {:.4}",
        score.metric, score.loss
    );
    assert!(score.metric > 0.98, "binary accuracy {}", score.metric);
    // The network ends with its sigmoid: its outputs are probabilities.
    let outputs = predict_outputs(&net, test.images(), 256).unwrap();
    assert!(outputs.as_slice().iter().all(|p| (0.0..=1.0).contains(p)));
    assert_eq!(
        <<Tagger as Network>::Head as Head>::ACTIVATION,
        OutputActivation::Sigmoid
    );
}

#[test]
fn a_network_ending_with_sigmoid_stops_at_its_logits_and_passes_a_gradient_check() {
    let net = Tagger::new(1);
    let input: Batch<Flat<8>> = Batch::from_fn(3, |i| (i as f32 * 0.37).sin());
    let mut workspace = Default::default();
    let probabilities = net.infer(&input, &mut workspace).clone();
    let logits = net.clone().forward_logits(&input, &mut workspace).clone();
    for (p, z) in probabilities.as_slice().iter().zip(logits.as_slice()) {
        assert!(
            (p - 1.0 / (1.0 + (-z).exp())).abs() < 1e-6,
            "{p} vs sigmoid({z})"
        );
    }
    // A step of 1e-3: 1e-2 moves some of the ReLUs' inputs across 0.
    let check = GradCheck {
        epsilon: 1e-3,
        ..GradCheck::default()
    };
    check.run(&net, &input).unwrap();
}

#[test]
fn targets_a_loss_cannot_use_are_refused() {
    let inputs = Batch::<Flat<8>>::zeros(4);
    let data = Dataset::with_targets(
        inputs,
        vec![[0.0, 1.0, 0.5]; 3]
            .into_iter()
            .chain([[0.0, 2.0, 1.0]])
            .collect(),
    )
    .unwrap();
    let mut net = Tagger::new(0);
    let mut optimizer = OptimizerState::new(Sgd::new(0.1));
    let error = fit_with(
        &mut net,
        BinaryCrossentropy,
        &mut optimizer,
        &data,
        Validation::None,
        &config(1, 2),
    )
    .unwrap_err();
    assert!(matches!(
        error,
        TrainError::InvalidTarget {
            set: "training",
            sample: 3,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "training sample 3: target value 1 is 2, not in [0, 1]"
    );
}
