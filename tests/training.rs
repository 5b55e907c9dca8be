//! Training seen from outside: real MNIST (through `MNIST_DIR`), determinism, weight files,
//! fine-tuning with frozen layers, early stopping, and every malformed input the readers meet.

use std::io::Write;
use std::path::Path;

use constnet::data::{Dataset, idx, load_mnist};
use constnet::init::seeded_rng;
use constnet::layers::Layer;
use constnet::optim::{Adam, OptimizerState, Sgd};
use constnet::rand::RngExt;
use constnet::train::{EarlyStopping, FitConfig, Validation, evaluate, fit, predict};
use constnet::weights::{self, WeightsError};
use constnet::{Batch, Hwc, network};
use tempfile::TempDir;

network! {
    Tiny<input(8, 8, 1) conv(4, 3) relu maxpool(2) flatten dense(16) relu dropout(0.1) dense(3) softmax>
}

network! {
    OtherTiny<input(8, 8, 1) conv(6, 3) relu flatten dense(3) softmax>
}

network! {
    Mlp<input(28, 28, 1) flatten dense(128) relu dense(10) softmax>
}

/// A fresh directory, removed with everything in it when the returned guard is dropped.
fn temp_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("constnet-training-{name}-"))
        .tempdir()
        .unwrap()
}

/// Three classes of 8x8 images: a bright row, a bright column, or a bright diagonal, with noise.
fn synthetic(samples: usize, seed: u64) -> Dataset<Hwc<8, 8, 1>> {
    let mut rng = seeded_rng(seed);
    let labels: Vec<usize> = (0..samples).map(|i| i % 3).collect();
    let mut images = Batch::zeros(samples);
    for (image, &label) in images.as_mut_slice().chunks_mut(64).zip(&labels) {
        let at = rng.random_range(1..7usize);
        for (i, pixel) in image.iter_mut().enumerate() {
            let (y, x) = (i / 8, i % 8);
            let bright = match label {
                0 => y == at,
                1 => x == at,
                _ => y == x,
            };
            *pixel = if bright { 1.0 } else { 0.0 } + rng.random_range(0.0..0.3);
        }
    }
    Dataset::new(images, labels, 3).unwrap()
}

fn quiet(epochs: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: 16,
        verbose: false,
        ..FitConfig::default()
    }
}

fn params_of(net: &impl Layer) -> Vec<(String, Vec<f32>)> {
    let mut all = Vec::new();
    net.visit_params(&mut |name, _, values| all.push((name.to_string(), values.to_vec())));
    all
}

/// Trains a small MLP on the real MNIST files for one epoch (about a second) and checks the
/// test accuracy is far above chance. Skipped (with a message) only when `MNIST_DIR` is not set;
/// `.ci/run` sets it.
#[test]
fn real_mnist_trains_to_high_accuracy_in_seconds() {
    let Ok(dir) = std::env::var("MNIST_DIR") else {
        eprintln!("MNIST_DIR is not set: skipping the real-data test");
        return;
    };
    let (train, test) =
        load_mnist::<Hwc<28, 28, 1>>(Path::new(&dir)).expect("MNIST_DIR holds MNIST");
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    let mut net = Mlp::new(1);
    let mut optimizer = OptimizerState::new(Adam::default());
    let config = FitConfig {
        epochs: 1,
        batch_size: 32,
        verbose: false,
        ..FitConfig::default()
    };
    fit(&mut net, &mut optimizer, &train, Validation::None, &config).unwrap();
    let result = evaluate(&net, &test, 256).unwrap();
    assert!(
        result.accuracy >= 0.95,
        "test accuracy {} after one epoch",
        result.accuracy
    );
}

#[test]
fn learns_the_synthetic_task_and_the_same_seed_gives_the_same_weights() {
    let data = synthetic(300, 1);
    let train_once = || {
        let mut net = Tiny::new(3);
        let mut optimizer = OptimizerState::new(Adam {
            learning_rate: 0.01,
            ..Adam::default()
        });
        let history = fit(
            &mut net,
            &mut optimizer,
            &data,
            Validation::Split(0.2),
            &quiet(8),
        )
        .unwrap();
        (net, history)
    };
    let (a, history) = train_once();
    let (b, _) = train_once();
    assert_eq!(params_of(&a), params_of(&b), "same seed, same weights");
    let last = history.epochs.last().unwrap();
    assert!(last.val_metric.unwrap() > 0.9, "{history:?}");
    assert!(last.loss < history.epochs[0].loss);
}

#[test]
fn save_then_load_reproduces_predictions_exactly() {
    let data = synthetic(120, 2);
    let mut net = Tiny::new(4);
    let mut optimizer = OptimizerState::new(Adam::default());
    fit(&mut net, &mut optimizer, &data, Validation::None, &quiet(2)).unwrap();
    let dir = temp_dir("roundtrip");
    let path = dir.path().join("tiny.safetensors");
    weights::save(&net, &path).unwrap();
    let mut loaded = Tiny::new(99);
    weights::load(&mut loaded, &path).unwrap();
    let (before, after) = (
        predict(&net, data.images(), 32).unwrap(),
        predict(&loaded, data.images(), 32).unwrap(),
    );
    assert_eq!(before, after);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["tiny.safetensors"], "no temporary file remains");
}

#[test]
fn fine_tuning_leaves_frozen_layers_bit_identical() {
    let data = synthetic(150, 3);
    let mut net = Tiny::new(5);
    let mut pretraining = OptimizerState::new(Adam::default());
    fit(
        &mut net,
        &mut pretraining,
        &data,
        Validation::None,
        &quiet(1),
    )
    .unwrap();
    let dir = temp_dir("finetune");
    let path = dir.path().join("pretrained.safetensors");
    weights::save(&net, &path).unwrap();

    let mut tuned = Tiny::new(0);
    weights::load(&mut tuned, &path).unwrap();
    let before = params_of(&tuned);
    let mut optimizer = OptimizerState::new(Sgd {
        momentum: 0.9,
        ..Sgd::new(0.001)
    });
    optimizer.freeze(&tuned, &["conv1"]).unwrap();
    fit(
        &mut tuned,
        &mut optimizer,
        &data,
        Validation::None,
        &quiet(2),
    )
    .unwrap();
    for ((name, old), (_, new)) in before.iter().zip(params_of(&tuned)) {
        if name.starts_with("conv1.") {
            assert_eq!(old, &new, "{name} is frozen");
        } else {
            assert_ne!(old, &new, "{name} is trained");
        }
    }
}

#[test]
fn early_stopping_and_best_checkpoint() {
    let data = synthetic(90, 4);
    let mut net = Tiny::new(6);
    // A learning rate this large makes the loss climb: training must stop early.
    let mut optimizer = OptimizerState::new(Sgd::new(3.0));
    let dir = temp_dir("checkpoint");
    let checkpoint = dir.path().join("best.safetensors");
    let config = FitConfig {
        early_stopping: Some(EarlyStopping {
            patience: 2,
            min_delta: 0.0,
        }),
        checkpoint: Some(checkpoint.clone()),
        ..quiet(30)
    };
    match fit(
        &mut net,
        &mut optimizer,
        &data,
        Validation::Data(&data),
        &config,
    ) {
        Ok(history) => {
            assert!(
                history.stopped_early && history.epochs.len() < 30,
                "{history:?}"
            );
            assert!(checkpoint.exists(), "the best epoch was saved");
        }
        Err(error) => assert!(error.to_string().contains("diverged"), "{error}"),
    }
}

#[test]
fn weights_of_another_network_are_rejected_with_every_mismatch_and_nothing_loaded() {
    let dir = temp_dir("mismatch");
    let path = dir.path().join("other.safetensors");
    weights::save(&OtherTiny::new(0), &path).unwrap();
    let mut net = Tiny::new(1);
    let before = params_of(&net);
    let error = weights::load(&mut net, &path).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, WeightsError::Mismatch { .. }));
    for expected in [
        "other.safetensors: the weights do not fit this network (nothing was loaded)",
        "`conv1.weight` is [3, 3, 1, 6] in the file but [3, 3, 1, 4] in this network",
        "`dense2.weight` [16, 3] is missing",
        "`dense1.weight` is [216, 3] in the file but [36, 16] in this network",
    ] {
        assert!(message.contains(expected), "{message}\nlacks {expected}");
    }
    assert_eq!(before, params_of(&net), "a failed load changes nothing");

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = weights::load(&mut net, &truncated).unwrap_err().to_string();
    assert!(
        error.contains("truncated.safetensors: not a valid safetensors file"),
        "{error}"
    );
    let error = weights::load(&mut net, dir.path().join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("absent.safetensors"), "{error}");
}

/// Every malformed IDX input gives an error naming the file and the problem, never a panic.
#[test]
fn malformed_idx_files_are_clear_errors() {
    let dir = temp_dir("idx");
    let good_images = dir.path().join("images.idx");
    let good_labels = dir.path().join("labels.idx");
    idx::write_idx(&good_images, &[2, 8, 8], &[0; 128]).unwrap();
    idx::write_idx(&good_labels, &[2], &[0, 1]).unwrap();
    assert!(Dataset::<Hwc<8, 8, 1>>::from_idx(&good_images, &good_labels, 3).is_ok());

    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let good_bytes = std::fs::read(&good_images).unwrap();
    let mut gzipped = Vec::new();
    {
        let mut encoder = flate2_writer(&mut gzipped);
        encoder.write_all(&good_bytes).unwrap();
    }
    let cases = [
        (
            write("magic.idx", &[0x42, 0x42, 0x08, 1, 0, 0, 0, 0]),
            good_labels.clone(),
            "magic.idx: not an IDX file",
        ),
        (
            write("truncated.idx", &good_bytes[..100]),
            good_labels.clone(),
            "truncated.idx: the dimensions [2, 8, 8] need 128 values but the file holds 84 (truncated?)",
        ),
        (
            write("truncated.gz", &gzipped[..gzipped.len() - 10]),
            good_labels.clone(),
            "truncated.gz: the gzip data is corrupt or truncated",
        ),
        (
            good_images.clone(),
            write("three-labels.idx", &[0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 2]),
            "2 images but 3 labels",
        ),
        (
            write(
                "small-images.idx",
                &[
                    [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4].as_slice(),
                    &[0; 32],
                ]
                .concat(),
            ),
            good_labels.clone(),
            "small-images.idx: the images are 4x4 but the network expects 8x8x1",
        ),
        (
            dir.path().join("missing.idx"),
            good_labels.clone(),
            "missing.idx",
        ),
    ];
    for (images, labels, expected) in cases {
        let error = Dataset::<Hwc<8, 8, 1>>::from_idx(&images, &labels, 3)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(expected),
            "{error}\nshould contain {expected}"
        );
    }
}

/// A gzip encoder over `out` (the reader side is what the library uses; tests need to write).
fn flate2_writer(out: &mut Vec<u8>) -> impl Write + '_ {
    flate2::write::GzEncoder::new(out, flate2::Compression::default())
}

/// Weights in memory round-trip as a file does, and are checked the same way: bytes of another
/// network or no safetensors at all change nothing and say which.
#[test]
fn weights_as_bytes_round_trip_and_are_checked() {
    let trained = Tiny::new(3);
    let bytes = weights::to_bytes(&trained).unwrap();
    let mut served = Tiny::new(4);
    weights::from_bytes(&mut served, &bytes).unwrap();
    assert_eq!(params_of(&served), params_of(&trained));

    let mut net = Tiny::new(5);
    let before = params_of(&net);
    let other = weights::to_bytes(&OtherTiny::new(0)).unwrap();
    let error = weights::from_bytes(&mut net, &other)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("the weight bytes: the weights do not fit this network"),
        "{error}"
    );
    let error = weights::from_bytes(&mut net, &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(error, WeightsError::Format { .. }), "{error}");
    assert_eq!(before, params_of(&net), "a failed load changes nothing");
}
