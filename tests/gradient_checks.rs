//! Every layer passes a central-difference gradient check for its input and all its parameters,
//! in training mode, at odd sizes.

use constnet::gradcheck::GradCheck;
use constnet::init::seeded_rng;
use constnet::layers::*;
use constnet::loss::{softmax_cross_entropy, sparse_softmax_cross_entropy};
use constnet::rand::RngExt;
use constnet::{Batch, Flat, Hwc, Shape};

/// Random values in `±[0.1, 1]`: no input sits on a ReLU kink.
fn away_from_zero<S: Shape>(samples: usize, seed: u64) -> Batch<S> {
    let mut rng = seeded_rng(seed);
    Batch::from_fn(samples, |_| {
        let magnitude = rng.random_range(0.1..1.0);
        if rng.random::<bool>() {
            magnitude
        } else {
            -magnitude
        }
    })
}

/// Distinct values at least 0.05 apart, shuffled: no pooling window has a near-tie.
fn well_separated<S: Shape>(samples: usize, seed: u64) -> Batch<S> {
    let mut rng = seeded_rng(seed);
    let len = samples * S::LEN;
    let mut values: Vec<f32> = (0..len)
        .map(|i| (i as f32 - len as f32 / 2.0) * 0.05)
        .collect();
    for i in (1..len).rev() {
        values.swap(i, rng.random_range(0..=i));
    }
    Batch::from_vec(values).unwrap()
}

fn passes<L: Layer + Clone>(name: &str, layer: &L, input: &Batch<L::Input>) {
    match GradCheck::default().run(layer, input) {
        Ok(report) => {
            let params: Vec<_> = report.tensors.iter().map(|(t, _)| t.as_str()).collect();
            let expected = 1 + if L::PARAMS > 0 { 2 } else { 0 };
            assert_eq!(params.len(), expected, "{name}: checked {params:?}");
        }
        Err(mismatch) => panic!("{name}: {mismatch}"),
    }
}

#[test]
fn conv2d_valid_and_same_with_stride() {
    let mut rng = seeded_rng(1);
    let mut conv = Conv2d::<Hwc<5, 7, 3>, Hwc<3, 4, 4>, 3, 2, Same>::new(&mut rng);
    conv.params
        .bias
        .iter_mut()
        .for_each(|b| *b = rng.random_range(-0.5..0.5));
    passes("conv same stride 2", &conv, &away_from_zero(2, 2));
    let conv = Conv2d::<Hwc<6, 5, 2>, Hwc<4, 3, 3>, 3>::new(&mut rng);
    passes("conv valid", &conv, &away_from_zero(3, 3));
}

#[test]
fn conv2d_explicit_pads() {
    let mut rng = seeded_rng(31);
    let mut conv = Conv2d::<Hwc<6, 6, 2>, Hwc<3, 3, 3>, 3, 2, Pads<1, 1, 1, 1>>::new(&mut rng);
    conv.params
        .bias
        .iter_mut()
        .for_each(|b| *b = rng.random_range(-0.5..0.5));
    passes("conv pads 1 stride 2", &conv, &away_from_zero(2, 32));
    let conv = Conv2d::<Hwc<5, 4, 2>, Hwc<5, 3, 3>, 3, 1, Pads<2, 0, 0, 1>>::new(&mut rng);
    passes("conv asymmetric pads", &conv, &away_from_zero(2, 33));
    let dw = DepthwiseConv2d::<Hwc<6, 6, 3>, Hwc<3, 3, 3>, 3, 2, Pads<1, 1, 1, 1>>::new(&mut rng);
    passes("dwconv pads 1 stride 2", &dw, &away_from_zero(2, 34));
}

#[test]
fn pools() {
    passes(
        "max pool",
        &MaxPool2d::<Hwc<5, 7, 3>, Hwc<2, 3, 3>, 2>::new(),
        &well_separated(2, 4),
    );
    passes(
        "max pool k3 s2",
        &MaxPool2d::<Hwc<5, 7, 2>, Hwc<2, 3, 2>, 3, 2>::new(),
        &well_separated(2, 5),
    );
    passes(
        "avg pool",
        &AvgPool2d::<Hwc<5, 7, 3>, Hwc<2, 3, 3>, 2>::new(),
        &away_from_zero(2, 6),
    );
    passes(
        "max pool k3 s2 pads 1",
        &MaxPool2d::<Hwc<6, 5, 2>, Hwc<3, 3, 2>, 3, 2, Pads<1, 1, 1, 1>>::new(),
        &well_separated(2, 7),
    );
    passes(
        "avg pool same",
        &AvgPool2d::<Hwc<5, 7, 3>, Hwc<3, 4, 3>, 2, 2, Same>::new(),
        &away_from_zero(2, 8),
    );
}

#[test]
fn upsample() {
    passes(
        "upsample 2",
        &Upsample2d::<Hwc<3, 2, 3>, Hwc<6, 4, 3>, 2>::new(),
        &away_from_zero(2, 17),
    );
    passes(
        "upsample 3",
        &Upsample2d::<Hwc<2, 3, 1>, Hwc<6, 9, 1>, 3>::new(),
        &away_from_zero(3, 18),
    );
}

#[test]
fn depthwise_conv_valid_and_same_with_stride() {
    let mut rng = seeded_rng(13);
    let mut dw = DepthwiseConv2d::<Hwc<5, 7, 3>, Hwc<3, 4, 3>, 3, 2, Same>::new(&mut rng);
    dw.params
        .bias
        .iter_mut()
        .for_each(|b| *b = rng.random_range(-0.5..0.5));
    passes("dwconv same stride 2", &dw, &away_from_zero(2, 14));
    let dw = DepthwiseConv2d::<Hwc<6, 5, 4>, Hwc<4, 3, 4>, 3>::new(&mut rng);
    passes("dwconv valid", &dw, &away_from_zero(3, 15));
}

#[test]
fn global_pools() {
    passes(
        "global max pool",
        &GlobalMaxPool2d::<Hwc<3, 5, 4>, 4>::new(),
        &well_separated(3, 11),
    );
    passes(
        "global avg pool",
        &GlobalAvgPool2d::<Hwc<3, 5, 4>, 4>::new(),
        &away_from_zero(3, 12),
    );
}

#[test]
fn dense_and_flatten() {
    let mut rng = seeded_rng(7);
    let mut dense = Dense::<13, 6>::new(&mut rng);
    dense
        .params
        .bias
        .iter_mut()
        .for_each(|b| *b = rng.random_range(-0.5..0.5));
    passes("dense", &dense, &away_from_zero(4, 8));
    passes(
        "flatten",
        &Flatten::<Hwc<3, 2, 2>, 12>::new(),
        &away_from_zero(2, 9),
    );
}

#[test]
fn activations() {
    passes("relu", &Relu::<Hwc<3, 3, 2>>::new(), &away_from_zero(2, 10));
    passes(
        "leaky relu",
        &LeakyRelu::<Flat<9>>::leaky(0.1),
        &away_from_zero(3, 11),
    );
    passes(
        "sigmoid",
        &Sigmoid::<Flat<9>>::new(),
        &away_from_zero(3, 12),
    );
    passes("tanh", &Tanh::<Flat<9>>::new(), &away_from_zero(3, 13));
    passes("gelu", &Gelu::<Hwc<3, 3, 2>>::new(), &away_from_zero(3, 15));
    passes("swish", &Swish::<Flat<9>>::new(), &away_from_zero(3, 16));
    passes(
        "softmax",
        &Softmax::<Flat<7>>::new(),
        &away_from_zero(3, 14),
    );
}

#[test]
fn dropout_in_training_mode() {
    passes(
        "dropout",
        &Dropout::<Flat<20>>::new(0.3, 5),
        &away_from_zero(4, 15),
    );
}

#[test]
fn batchnorm_on_images_and_vectors() {
    let mut rng = seeded_rng(16);
    let mut bn = BatchNorm::<Hwc<3, 3, 4>>::new();
    bn.params
        .weight
        .iter_mut()
        .for_each(|g| *g = rng.random_range(0.5..1.5));
    bn.params
        .bias
        .iter_mut()
        .for_each(|b| *b = rng.random_range(-0.5..0.5));
    passes("batchnorm hwc", &bn, &away_from_zero(4, 17));
    passes(
        "batchnorm flat",
        &BatchNorm::<Flat<6>>::new(),
        &away_from_zero(5, 18),
    );
}

#[test]
fn a_chain_of_layers_end_to_end() {
    let mut rng = seeded_rng(19);
    let net = Chain::new(
        Conv2d::<Hwc<6, 6, 2>, Hwc<4, 4, 3>, 3>::new(&mut rng),
        Chain::new(
            Tanh::<Hwc<4, 4, 3>>::new(),
            Chain::new(
                AvgPool2d::<Hwc<4, 4, 3>, Hwc<2, 2, 3>, 2>::new(),
                Chain::new(
                    Flatten::<Hwc<2, 2, 3>, 12>::new(),
                    Dense::<12, 5>::new(&mut rng),
                ),
            ),
        ),
    );
    let report = GradCheck::default()
        .run(&net, &away_from_zero(3, 20))
        .unwrap_or_else(|mismatch| panic!("chain: {mismatch}"));
    let names: Vec<_> = report.tensors.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "input",
            "0.weight",
            "0.bias",
            "1.1.1.1.weight",
            "1.1.1.1.bias"
        ]
    );
}

/// The fused loss's gradient is the derivative of the loss it returns.
#[test]
fn softmax_cross_entropy_gradient() {
    let logits = away_from_zero::<Flat<6>>(4, 21);
    let labels = [0, 5, 2, 2];
    let mut grad = Batch::default();
    sparse_softmax_cross_entropy(&logits, &labels, &mut grad);
    let mut scratch = Batch::default();
    let epsilon = 1e-2;
    for i in 0..logits.as_slice().len() {
        let mut loss_at = |delta: f32| {
            let mut shifted = logits.clone();
            shifted.as_mut_slice()[i] += delta;
            sparse_softmax_cross_entropy(&shifted, &labels, &mut scratch) as f64
        };
        let numeric = (loss_at(epsilon) - loss_at(-epsilon)) / (2.0 * epsilon as f64);
        let analytic = grad.as_slice()[i] as f64;
        assert!(
            (numeric - analytic).abs() <= 1e-2 * numeric.abs().max(analytic.abs()) + 1e-3,
            "logit {i}: backward gives {analytic}, finite differences {numeric}"
        );
    }
    let soft_targets = Batch::<Flat<6>>::from_fn(4, |_| 1.0 / 6.0);
    let mut soft_grad = Batch::default();
    softmax_cross_entropy(&logits, &soft_targets, &mut soft_grad);
    let row_sums: Vec<f32> = soft_grad
        .as_slice()
        .chunks(6)
        .map(|r| r.iter().sum())
        .collect();
    assert!(
        row_sums.iter().all(|s| s.abs() < 1e-6),
        "softmax − target sums to 0: {row_sums:?}"
    );
}
