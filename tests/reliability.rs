//! What a user can rely on when things go wrong: every bad input to training is a typed error
//! that names the problem and changes nothing; a step that produces a NaN or an infinity is
//! not applied and the error names where it began; and the same seed trains the same weights,
//! bit for bit, on 1, 2 or 3 threads.

use constnet::data::{DataError, Dataset};
use constnet::init::seeded_rng;
use constnet::layers::Layer;
use constnet::network::Network;
use constnet::optim::{Adam, OptimizerError, OptimizerState, Sgd};
use constnet::rand::RngExt;
use constnet::train::{FitConfig, NonFinite, TrainError, Validation, evaluate, fit, predict};
use constnet::{Batch, Flat, Hwc, network};

network! {
    Small<input(8, 8, 1) conv(4, 3) relu maxpool(2) flatten dense(16) relu dense(3) softmax>
}

network! {
    /// Every layer kind whose backward pass sums over the batch: conv, dense, batchnorm.
    Reducing<input(10, 10, 1) conv(6, 3) batchnorm relu conv(8, 3, stride = 2) relu flatten
             dense(12) batchnorm relu dropout(0.2) dense(3) softmax>
}

network! {
    Other<input(8, 8, 1) flatten dense(3) softmax>
}

network! {
    /// Two dense layers with nothing between them: too large a learning rate grows both
    /// weights multiplicatively every step until the logits overflow.
    Linear<input(10, 10, 1) flatten dense(16) dense(3) softmax>
}

/// `samples` noisy 8x8 images whose class is which third of the image is brightest.
fn images<const H: usize, const W: usize>(samples: usize, seed: u64) -> Dataset<Hwc<H, W, 1>> {
    let mut rng = seeded_rng(seed);
    let labels: Vec<usize> = (0..samples).map(|i| i % 3).collect();
    let mut images = Batch::<Hwc<H, W, 1>>::zeros(samples);
    for (image, &label) in images.as_mut_slice().chunks_mut(H * W).zip(&labels) {
        for (i, pixel) in image.iter_mut().enumerate() {
            let third = (i % W) * 3 / W;
            *pixel = f32::from(u8::from(third == label)) + rng.random_range(0.0..0.5);
        }
    }
    Dataset::new(images, labels, 3).unwrap()
}

fn quiet(epochs: usize, batch_size: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size,
        verbose: false,
        ..FitConfig::default()
    }
}

/// Every parameter and buffer of `net`, by name.
fn state_of(net: &impl Layer) -> Vec<(String, Vec<f32>)> {
    let mut all = Vec::new();
    net.visit_params(&mut |name, _, values| all.push((name.to_string(), values.to_vec())));
    net.visit_buffers(&mut |name, _, values| all.push((name.to_string(), values.to_vec())));
    all
}

/// The optimiser's step count and every tensor's slots, to prove a failed call left it alone.
fn optimizer_of(optimizer: &OptimizerState, net: &impl Layer) -> (u64, Vec<Option<Vec<Vec<f32>>>>) {
    let mut slots = Vec::new();
    net.visit_params(&mut |name, _, _| slots.push(optimizer.tensor_state(name).map(<[_]>::to_vec)));
    (optimizer.steps(), slots)
}

/// A network and an optimiser that have trained one epoch, so a refusal has state to keep.
fn trained() -> (Small, OptimizerState) {
    let mut net = Small::new(1);
    let mut optimizer = OptimizerState::new(Adam::default());
    fit(
        &mut net,
        &mut optimizer,
        &images(48, 1),
        Validation::None,
        &quiet(1, 16),
    )
    .unwrap();
    (net, optimizer)
}

/// Runs `call` on a trained network and optimiser and checks it failed without changing them.
fn refused(call: impl FnOnce(&mut Small, &mut OptimizerState) -> TrainError) -> TrainError {
    let (mut net, mut optimizer) = trained();
    let (net_before, optimizer_before) = (state_of(&net), optimizer_of(&optimizer, &net));
    let error = call(&mut net, &mut optimizer);
    assert_eq!(state_of(&net), net_before, "{error}: the network changed");
    assert_eq!(
        optimizer_of(&optimizer, &net),
        optimizer_before,
        "{error}: the optimiser changed"
    );
    error
}

#[test]
fn a_label_past_the_networks_outputs_is_refused_by_fit_and_evaluate() {
    let mut labels = vec![0usize; 20];
    labels[13] = 7;
    let data = Dataset::new(Batch::<Hwc<8, 8, 1>>::zeros(20), labels, 10).unwrap();
    let error = refused(|net, optimizer| {
        fit(net, optimizer, &data, Validation::None, &quiet(1, 4)).unwrap_err()
    });
    assert!(matches!(
        error,
        TrainError::InvalidTarget {
            set: "training",
            sample: 13,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "training sample 13: label 7 is not below the network's 3 outputs"
    );
    let error = refused(|net, optimizer| {
        fit(
            net,
            optimizer,
            &images(9, 2),
            Validation::Data(&data),
            &quiet(1, 4),
        )
        .unwrap_err()
    });
    assert!(
        error
            .to_string()
            .starts_with("validation sample 13: label 7"),
        "{error}"
    );
    let error = evaluate(&Small::new(0), &data, 8).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("evaluation sample 13: label 7"),
        "{error}"
    );
}

#[test]
fn images_and_labels_that_disagree_are_refused_when_the_data_set_is_made() {
    let error = Dataset::new(Batch::<Hwc<8, 8, 1>>::zeros(8), vec![0; 6], 3).unwrap_err();
    assert!(matches!(
        error,
        DataError::CountMismatch {
            images: 8,
            labels: 6
        }
    ));
    assert_eq!(
        error.to_string(),
        "a data set needs one label per image: 8 images but 6 labels"
    );
}

#[test]
fn a_batch_size_of_zero_is_refused_by_fit_evaluate_and_predict() {
    let data = images::<8, 8>(12, 3);
    let error = refused(|net, optimizer| {
        fit(net, optimizer, &data, Validation::None, &quiet(1, 0)).unwrap_err()
    });
    assert!(matches!(error, TrainError::BatchSize));
    assert_eq!(error.to_string(), "the batch size must be at least 1");
    let net = Small::new(0);
    assert!(matches!(
        evaluate(&net, &data, 0),
        Err(TrainError::BatchSize)
    ));
    assert!(matches!(
        predict(&net, data.images(), 0),
        Err(TrainError::BatchSize)
    ));
}

#[test]
fn empty_data_is_refused_by_fit_evaluate_and_predict() {
    let empty = Dataset::new(Batch::<Hwc<8, 8, 1>>::zeros(0), Vec::new(), 3).unwrap();
    let error = refused(|net, optimizer| {
        fit(net, optimizer, &empty, Validation::None, &quiet(1, 4)).unwrap_err()
    });
    assert!(matches!(error, TrainError::EmptyData { set: "training" }));
    assert_eq!(error.to_string(), "the training data is empty");
    let error = refused(|net, optimizer| {
        fit(
            net,
            optimizer,
            &images(6, 4),
            Validation::Data(&empty),
            &quiet(1, 4),
        )
        .unwrap_err()
    });
    assert_eq!(error.to_string(), "the validation data is empty");
    let net = Small::new(0);
    let error = evaluate(&net, &empty, 4).unwrap_err();
    assert_eq!(error.to_string(), "the evaluation data is empty");
    let error = predict(&net, empty.images(), 4).unwrap_err();
    assert_eq!(error.to_string(), "the prediction data is empty");
}

#[test]
fn validation_splits_that_leave_a_side_empty_are_refused() {
    let data = images::<8, 8>(10, 5);
    for (fraction, expected) in [
        (
            0.0,
            "a validation split of 0 of 10 samples leaves 10 for training and 0 for validation",
        ),
        (
            1.0,
            "a validation split of 1 of 10 samples leaves 10 for training and 0 for validation",
        ),
        (
            0.01,
            "a validation split of 0.01 of 10 samples leaves 10 for training and 0 for",
        ),
        (
            0.99,
            "a validation split of 0.99 of 10 samples leaves 0 for training and 10 for",
        ),
        (1.5, "a validation split of 1.5 of 10 samples"),
    ] {
        let error = refused(|net, optimizer| {
            fit(
                net,
                optimizer,
                &data,
                Validation::Split(fraction),
                &quiet(1, 4),
            )
            .unwrap_err()
        });
        assert!(
            matches!(error, TrainError::Data(DataError::ValidationSplit { .. })),
            "{error}"
        );
        assert!(
            error.to_string().starts_with(expected),
            "{error}\nshould start {expected}"
        );
    }
}

#[test]
fn freezing_a_layer_the_network_lacks_lists_the_layers_it_has() {
    let net = Small::new(0);
    let mut optimizer = OptimizerState::new(Sgd::new(0.1));
    let error = optimizer.freeze(&net, &["conv"]).unwrap_err();
    assert!(matches!(error, OptimizerError::UnknownLayer { ref layer, .. } if layer == "conv"));
    assert_eq!(
        error.to_string(),
        "cannot freeze `conv`: the network has no such layer with parameters; it has conv1, \
         dense1, dense2"
    );
    assert!(!optimizer.is_frozen("conv1.weight"));
    let error = optimizer.freeze(&net, &["relu1"]).unwrap_err();
    assert!(
        error.to_string().starts_with("cannot freeze `relu1`"),
        "{error}"
    );
}

#[test]
fn an_optimiser_state_is_refused_by_another_network() {
    let (_, mut optimizer) = trained();
    let mut other = Other::new(0);
    let before = state_of(&other);
    let steps = optimizer.steps();
    let error = fit(
        &mut other,
        &mut optimizer,
        &images(12, 6),
        Validation::None,
        &quiet(1, 4),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            TrainError::Optimizer(OptimizerError::StateMismatch { index: 0, .. })
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "this optimiser state belongs to another network: its tensor 0 is `conv1.weight` of 36 \
         values, but this network's is `dense1.weight` of 192 values"
    );
    assert_eq!(state_of(&other), before);
    assert_eq!(optimizer.steps(), steps);
}

/// A learning rate this large makes SGD overshoot further every step until the logits
/// overflow; the failing step is reported and not applied: the network and optimiser are
/// exactly those of a run stopped one step earlier.
#[test]
fn a_diverging_learning_rate_stops_with_the_weights_from_before_the_step() {
    let data = images::<10, 10>(64, 7);
    let config = FitConfig {
        shuffle: false,
        ..quiet(50, 8)
    };
    let optimizer = || {
        OptimizerState::new(Sgd {
            momentum: 0.9,
            ..Sgd::new(1e3)
        })
    };
    let mut net = Linear::new(3);
    let mut state = optimizer();
    let error = fit(&mut net, &mut state, &data, Validation::None, &config).unwrap_err();
    let TrainError::Diverged {
        ref origin,
        epoch,
        step,
        ..
    } = error
    else {
        panic!("expected a divergence, got {error}")
    };
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "training diverged at epoch {epoch}, step {step}: "
        )),
        "{message}"
    );
    assert!(message.contains("the weights and optimiser state are those from before this step"));
    // The logits overflow first: the output of the last layer before softmax.
    assert_eq!(origin, &NonFinite::Output { layer: "dense2" }, "{message}");
    assert!(
        message.contains("the output of `dense2` became non-finite"),
        "{message}"
    );
    for (name, values) in state_of(&net) {
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name} holds non-finite values"
        );
    }

    // The same run, stopped after the last good step: the same weights, buffers and state.
    let steps_per_epoch = data.len().div_ceil(config.batch_size);
    let good_steps = (epoch - 1) * steps_per_epoch + step - 1;
    let mut replay = Linear::new(3);
    let mut replay_state = optimizer();
    let full_epochs = good_steps / steps_per_epoch;
    if full_epochs > 0 {
        let replay_config = FitConfig {
            epochs: full_epochs,
            ..config.clone()
        };
        fit(
            &mut replay,
            &mut replay_state,
            &data,
            Validation::None,
            &replay_config,
        )
        .unwrap();
    }
    let rest = good_steps % steps_per_epoch;
    if rest > 0 {
        let partial = data.take(rest * config.batch_size);
        let replay_config = FitConfig {
            epochs: 1,
            ..config.clone()
        };
        fit(
            &mut replay,
            &mut replay_state,
            &partial,
            Validation::None,
            &replay_config,
        )
        .unwrap();
    }
    assert_eq!(state.steps(), good_steps as u64);
    assert_eq!(replay_state.steps(), good_steps as u64);
    assert_eq!(state_of(&net), state_of(&replay), "{message}");
    assert_eq!(
        optimizer_of(&state, &net),
        optimizer_of(&replay_state, &replay)
    );
}

/// One NaN pixel in one training image: the first batch that holds it stops training, and the
/// error names the sample; the layers after the input carry it forward (ReLU and max-pooling
/// propagate NaN), so the first layer's output is where the network first sees it.
#[test]
fn a_nan_in_one_input_image_is_named_and_nothing_is_applied() {
    let clean = images::<8, 8>(40, 8);
    let mut pixels = clean.images().clone();
    pixels.sample_mut(21)[37] = f32::NAN;
    let data = Dataset::new(pixels, clean.labels().to_vec(), 3).unwrap();
    let config = FitConfig {
        shuffle: false,
        ..quiet(3, 8)
    };
    let mut net = Small::new(2);
    let mut optimizer = OptimizerState::new(Adam::default());
    let error = fit(&mut net, &mut optimizer, &data, Validation::None, &config).unwrap_err();
    assert!(
        matches!(
            error,
            TrainError::Diverged {
                origin: NonFinite::Input { sample: 21 },
                epoch: 1,
                step: 3,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().starts_with(
            "training diverged at epoch 1, step 3: training sample 21 (the input) became non-finite"
        ),
        "{error}"
    );
    let mut replay = Small::new(2);
    let mut replay_optimizer = OptimizerState::new(Adam::default());
    let replay_config = FitConfig {
        epochs: 1,
        ..config.clone()
    };
    fit(
        &mut replay,
        &mut replay_optimizer,
        &data.take(16),
        Validation::None,
        &replay_config,
    )
    .unwrap();
    assert_eq!(state_of(&net), state_of(&replay));
    assert_eq!(optimizer.steps(), 2);

    // Inference carries the NaN to that image's output, and only there.
    let mut workspace = SmallWorkspace::default();
    let output = net.infer(data.images(), &mut workspace);
    assert_eq!(nan_rows(output.as_slice(), data.len()), [21]);
    // So does a training pass, through every op it keeps an output of, the first being maxpool1
    // (the fused conv and ReLU before it are pooled from scratch, their output never stored).
    net.forward_logits(data.images(), &mut workspace);
    let mut first_nan_op = None;
    Small::visit_activations(&workspace, &mut |op, output, _| {
        if !output.is_empty() {
            assert_eq!(nan_rows(output, data.len()), [21], "{op}");
            first_nan_op.get_or_insert(op);
        }
    });
    assert_eq!(first_nan_op, Some("maxpool1"));
}

/// The samples (rows of `samples` equal parts of `values`) holding a NaN.
fn nan_rows(values: &[f32], samples: usize) -> Vec<usize> {
    values
        .chunks(values.len() / samples)
        .enumerate()
        .filter(|(_, row)| row.iter().any(|v| v.is_nan()))
        .map(|(row, _)| row)
        .collect()
}

/// The same seed gives bit-identical weights, buffers and optimiser state after training on 1,
/// 2 and 3 threads, with every kind of batch reduction and a last batch smaller than the rest.
#[test]
fn training_is_bit_identical_on_one_two_and_three_threads() {
    let data = images::<10, 10>(150, 9);
    let train_on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut net = Reducing::new(11);
                let mut optimizer = OptimizerState::new(Adam::default());
                fit(
                    &mut net,
                    &mut optimizer,
                    &data,
                    Validation::Split(0.2),
                    &quiet(3, 40),
                )
                .unwrap();
                let optimizer_state = optimizer_of(&optimizer, &net);
                (state_of(&net), optimizer_state)
            })
    };
    let one = train_on(1);
    assert_eq!(one, train_on(2), "1 and 2 threads");
    assert_eq!(one, train_on(3), "1 and 3 threads");
    assert_ne!(
        one.0,
        state_of(&Reducing::new(11)),
        "training changed the weights"
    );
}

/// The class probabilities of `predict` for a flat network: softmax applied once.
#[test]
fn predict_returns_distributions() {
    network! { Logits<input(4) dense(3)> }
    let net = Logits::new(0);
    let images = Batch::<Flat<4>>::from_fn(5, |i| i as f32 / 7.0);
    let predictions = predict(&net, &images, 2).unwrap();
    for row in predictions.probabilities.as_slice().chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
