//! Weights saved from PyTorch: a `state_dict` fixture (`tests/fixtures/pytorch_cnn*.safetensors`,
//! made by `scripts/make_pytorch_fixture.py` with numpy) loads into the same network written in
//! `network!`, which then computes the probabilities the fixture's NCHW forward pass computed,
//! within 1e-5. Mismatched files change nothing and say what does not fit.

use std::path::{Path, PathBuf};

use constnet::layers::Layer;
use constnet::prelude::*;
use constnet::weights::{Origin, TorchNames, WeightsError, load_pytorch};
use safetensors::SafeTensors;

network! {
    /// The fixture's network: Conv2d(2, 3, 3), BatchNorm2d, ReLU, MaxPool2d(2), Flatten,
    /// Linear(27, 5), ReLU, Linear(5, 4), softmax.
    TorchCnn<input(8, 8, 2) conv(3, 3) batchnorm relu maxpool(2) flatten dense(5) relu dense(4)
             softmax>
}

network! {
    /// The same but one unit wider in the middle.
    WiderCnn<input(8, 8, 2) conv(3, 3) batchnorm relu maxpool(2) flatten dense(6) relu dense(4)
             softmax>
}

const TORCH_NAMES: [(&str, &str); 4] = [
    ("features.0", "conv1"),
    ("features.1", "batchnorm1"),
    ("classifier.1", "dense1"),
    ("classifier.3", "dense2"),
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's inputs as NHWC images, and the probabilities PyTorch's layout gave for them.
fn inputs_and_outputs() -> (Batch<Hwc<8, 8, 2>>, Vec<f32>) {
    let bytes = std::fs::read(fixture("pytorch_cnn_io.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        let view = file.tensor(name).unwrap();
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let nchw = floats("inputs");
    assert_eq!(file.tensor("inputs").unwrap().shape(), [4, 2, 8, 8]);
    let images = Batch::from_fn(4, |at| {
        let (n, y, x, c) = (at / 128, at / 16 % 8, at / 2 % 8, at % 2);
        nchw[((n * 2 + c) * 8 + y) * 8 + x]
    });
    (images, floats("outputs"))
}

fn params_of(net: &impl Layer) -> Vec<f32> {
    let mut all = Vec::new();
    net.visit_params(&mut |_, _, values| all.extend_from_slice(values));
    net.visit_buffers(&mut |_, _, values| all.extend_from_slice(values));
    all
}

/// The loaded network's probabilities against the fixture's.
fn assert_reproduces_pytorch(net: &mut TorchCnn) {
    // PyTorch's BatchNorm2d default, which the fixture was computed with.
    net.batchnorm1.epsilon = 1e-5;
    let (images, want) = inputs_and_outputs();
    let mut workspace = TorchCnnWorkspace::default();
    let got = net.infer(&images, &mut workspace).as_slice().to_vec();
    assert_eq!(got.len(), want.len());
    for (at, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5,
            "probability {at}: {g} vs PyTorch's {w}"
        );
    }
}

#[test]
fn a_state_dict_mapped_by_name_reproduces_pytorch() {
    let mut net = TorchCnn::new(0);
    load_pytorch(
        &mut net,
        fixture("pytorch_cnn.safetensors"),
        TorchNames::Map(&TORCH_NAMES),
    )
    .unwrap();
    assert_reproduces_pytorch(&mut net);
}

#[test]
fn a_sequential_state_dict_in_order_reproduces_pytorch() {
    let mut net = TorchCnn::new(0);
    let path = fixture("pytorch_cnn_sequential.safetensors");
    load_pytorch(&mut net, &path, TorchNames::InOrder).unwrap();
    assert_reproduces_pytorch(&mut net);
}

/// Named modules sorted in order pair `classifier.*` with the convolution: every tensor is
/// then of the wrong shape, and the error says so for each, naming both sides.
#[test]
fn modules_that_do_not_fit_their_layers_change_nothing_and_are_listed() {
    let mut net = TorchCnn::new(0);
    let before = params_of(&net);
    let path = fixture("pytorch_cnn.safetensors");
    let error = load_pytorch(&mut net, &path, TorchNames::InOrder).unwrap_err();
    let WeightsError::Mismatch { origin, problems } = &error else {
        panic!("expected a mismatch, got {error}");
    };
    assert_eq!(origin, &Origin::File(path.clone()));
    assert!(
        problems.iter().any(
            |p| p.contains("`classifier.1.weight` is [5, 27] in the file")
                && p.contains("`conv1.weight` needs [3, 2, 3, 3]")
        ),
        "{problems:#?}"
    );
    assert_eq!(params_of(&net), before, "nothing may change");

    let mut wider = WiderCnn::new(0);
    let error = load_pytorch(&mut wider, &path, TorchNames::Map(&TORCH_NAMES)).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(
            "`classifier.1.weight` is [5, 27] in the file, but `dense1.weight` needs [6, 27]"
        ),
        "{text}"
    );
    assert!(text.contains("`classifier.1.bias` is [5]"), "{text}");
}

#[test]
fn a_map_that_leaves_a_layer_out_is_an_error() {
    let mut net = TorchCnn::new(0);
    let error = load_pytorch(
        &mut net,
        fixture("pytorch_cnn.safetensors"),
        TorchNames::Map(&TORCH_NAMES[..3]),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("layer `dense2` has no PyTorch module in the map"),
        "{error}"
    );
}
