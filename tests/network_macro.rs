//! What `network!` generates, seen from outside: parameter counts and the summary, agreement with
//! the same layers composed by hand, end-to-end gradient checks, and names for weight files.

use constnet::context::{Context, ConvPolicy, Settings};
use constnet::gradcheck::GradCheck;
use constnet::init::seeded_rng;
use constnet::layers::{Chain, Conv2d, Layer, ParamSet};
use constnet::loss::{Head, OutputActivation, sparse_softmax_cross_entropy};
use constnet::network::Network;
use constnet::rand::RngExt;
use constnet::{Batch, Hwc, network};

#[path = "support/compare.rs"]
mod compare;
use compare::{assert_close, noise};

network! {
    /// The Keras MNIST example network.
    pub MnistCnn<input(28, 28, 1) conv(32, 3) relu conv(64, 3) relu maxpool(2) dropout(0.25)
                 flatten dense(128) relu dropout(0.5) dense(10) softmax>
}

network! {
    /// Every smooth layer kind, for an end-to-end gradient check.
    Smooth<input(6, 6, 2), conv(3, 3, padding = same), tanh, avgpool(2), flatten, dense(5),
           sigmoid, dense(4), softmax>
}

network! {
    Strided<input(7, 7, 1) conv(4, 3, stride = 2) leaky_relu(0.1) batchnorm flatten dropout(0.2)
            dense(3)>
}

network! {
    Flat<input(12) dense(8) relu dense(3)>
}

network! {
    /// Global pooling in place of flatten: average after a convolution, maximum after another.
    Global<input(7, 6, 2) conv(4, 3) tanh globalavgpool dense(3) softmax>
}

network! {
    GlobalMax<input(6, 5, 3) conv(5, 2, padding = same) globalmaxpool dense(2)>
}

network! {
    /// Depthwise-separable convolutions (`dwconv` then a 1x1 `conv`), one of them strided.
    Separable<input(7, 7, 3) dwconv(3, padding = same) tanh conv(6, 1) tanh
              dwconv(3, stride = 2) globalavgpool dense(2)>
}

network! {
    /// Max pooling right after fused activations, so it takes their derivatives in its backward
    /// from its output: windows that leave a row and a column uncovered, then overlapping
    /// windows, followed by a dropout that must not scale that output in place.
    PooledActivations<input(11, 11, 2) conv(3, 3) tanh maxpool(2) conv(4, 2, padding = same)
                      sigmoid maxpool(3, stride = 1) dropout(0.3) flatten dense(3)>
}

network! {
    /// Batch normalisation folded into a convolution at inference, with and without pooling.
    Folded<input(9, 9, 3) conv(8, 3) batchnorm relu maxpool(2) conv(4, 2, padding = same)
           batchnorm flatten dense(5)>
}

/// Every value of every gradient tensor, in visiting order.
fn flatten_grads(grads: &impl ParamSet) -> (Vec<String>, Vec<f32>) {
    let (mut names, mut values) = (Vec::new(), Vec::new());
    grads.visit(&mut |name, _, v| {
        names.push(name.to_string());
        values.extend_from_slice(v);
    });
    (names, values)
}

#[test]
fn parameter_count_and_summary_match_keras() {
    assert_eq!(MnistCnn::PARAMS, 1_199_882);
    let summary = MnistCnn::summary();
    for line in [
        "Model: \"MnistCnn\"",
        " conv1 (conv(32, 3))",
        "(None, 26, 26, 32)",
        " maxpool1 (maxpool(2))",
        "(None, 12, 12, 64)",
        " flatten1 (flatten)",
        "(None, 9216)",
        " dense1 (dense(128))",
        "1,179,776",
        "Total params: 1,199,882",
        "Trainable params: 1,199,882",
        "Non-trainable params: 0",
    ] {
        assert!(summary.contains(line), "summary lacks {line:?}:\n{summary}");
    }
    let outputs: Vec<&[usize]> = MnistCnn::LAYERS.iter().map(|l| l.output).collect();
    assert_eq!(outputs[0], &[26, 26, 32]);
    assert_eq!(outputs[4], &[12, 12, 64]);
    assert_eq!(outputs[10], &[10]);
    assert_eq!(
        <<MnistCnn as Network>::Head as Head>::ACTIVATION,
        OutputActivation::Softmax
    );
    assert_eq!(
        <<Strided as Network>::Head as Head>::ACTIVATION,
        OutputActivation::Identity
    );
    let strided: Vec<&str> = Strided::LAYERS.iter().map(|l| l.spec).collect();
    assert_eq!(strided[0], "conv(4, 3, stride = 2)");
    assert_eq!(
        Strided::LAYERS[2].buffers,
        8,
        "batchnorm keeps 4 means and 4 variances"
    );
}

/// The generated network and a hand-written `Chain` of clones of its layers agree on inference,
/// training outputs and every gradient.
#[test]
fn matches_the_same_layers_composed_by_hand() {
    let mut net = MnistCnn::new(7);
    let mut chain = Chain::new(
        net.conv1.clone(),
        Chain::new(
            net.relu1.clone(),
            Chain::new(
                net.conv2.clone(),
                Chain::new(
                    net.relu2.clone(),
                    Chain::new(
                        net.maxpool1,
                        Chain::new(
                            net.dropout1.clone(),
                            Chain::new(
                                net.flatten1,
                                Chain::new(
                                    net.dense1.clone(),
                                    Chain::new(
                                        net.relu3.clone(),
                                        Chain::new(
                                            net.dropout2.clone(),
                                            Chain::new(net.dense2.clone(), net.softmax1),
                                        ),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    );
    let input = noise::<Hwc<28, 28, 1>>(5, 1);
    let (mut net_out, mut chain_out) = (Batch::default(), Batch::default());
    net.forward(&input, &mut net_out, &mut Default::default());
    chain.forward(&input, &mut chain_out, &mut Default::default());
    assert_close("inference", net_out.as_slice(), chain_out.as_slice());

    let mut workspace = Default::default();
    let mut chain_cache = Default::default();
    net.forward_train(&input, &mut net_out, &mut workspace);
    chain.forward_train(&input, &mut chain_out, &mut chain_cache);
    assert_close("training forward", net_out.as_slice(), chain_out.as_slice());

    let grad_output = noise(5, 2);
    let (mut net_grads, mut chain_grads) = (net.new_grads(), chain.new_grads());
    let (mut net_dx, mut chain_dx) = (Batch::default(), Batch::default());
    net.backward(
        &input,
        &net_out,
        &grad_output,
        &mut workspace,
        Some(&mut net_dx),
        &mut net_grads,
    );
    chain.backward(
        &input,
        &chain_out,
        &grad_output,
        &mut chain_cache,
        Some(&mut chain_dx),
        &mut chain_grads,
    );
    assert_close("input gradient", net_dx.as_slice(), chain_dx.as_slice());
    let (names, net_values) = flatten_grads(&net_grads);
    let (_, chain_values) = flatten_grads(&chain_grads);
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "dense1.weight",
            "dense1.bias",
            "dense2.weight",
            "dense2.bias"
        ]
    );
    assert_close("parameter gradients", &net_values, &chain_values);
}

#[test]
fn generated_networks_pass_an_end_to_end_gradient_check() {
    for (name, report) in [
        (
            "Smooth",
            GradCheck::default().run(&Smooth::new(3), &noise(3, 4)),
        ),
        // A step of 1e-2 on a conv bias moves some pre-activations across leaky ReLU's kink at
        // 0 (the difference then measures the kink, 1.11 against 1.15); 1e-3 does not.
        (
            "Strided",
            GradCheck {
                epsilon: 1e-3,
                ..GradCheck::default()
            }
            .run(&Strided::new(5), &noise(4, 6)),
        ),
        (
            "Flat",
            GradCheck::default().run(&Flat::new(7), &noise(3, 8)),
        ),
        (
            "Global",
            GradCheck::default().run(&Global::new(10), &noise(3, 11)),
        ),
        // As for GlobalMax: a step of 1e-2 on a conv weight moves a window's maximum to
        // another pixel (backward 0.0866, the difference 0.0899), with or without the fusion.
        (
            "PooledActivations",
            GradCheck {
                epsilon: 1e-3,
                ..GradCheck::default()
            }
            .run(&PooledActivations::new(16), &noise(3, 17)),
        ),
        (
            "Separable",
            GradCheck::default().run(&Separable::new(14), &noise(2, 15)),
        ),
        // The maximum over 30 pixels is flat between kinks: a step of 1e-2 on a conv weight
        // hands a channel's maximum to another pixel (backward 0.053, the difference -0.045);
        // 1e-3 keeps every maximum where it is.
        (
            "GlobalMax",
            GradCheck {
                epsilon: 1e-3,
                ..GradCheck::default()
            }
            .run(&GlobalMax::new(12), &noise(2, 13)),
        ),
    ] {
        let report = report.unwrap_or_else(|mismatch| panic!("{name}: {mismatch}"));
        assert!(report.tensors.len() >= 5, "{:?}", report.tensors);
    }
}

/// Training through the logits with the fused loss gives the same parameter gradients as
/// backpropagating the same loss through the softmax layer.
#[test]
fn logits_path_agrees_with_the_softmax_path() {
    let mut net = Smooth::new(9);
    let input = noise(4, 10);
    let labels = [0, 3, 1, 1];
    let mut workspace = Default::default();
    let logits = net.forward_logits(&input, &mut workspace).clone();
    let mut grad_logits = Batch::default();
    sparse_softmax_cross_entropy(&logits, &labels, &mut grad_logits);
    let mut fused = net.new_grads();
    net.backward_logits(&input, &grad_logits, &mut workspace, None, &mut fused);

    let mut probabilities = Batch::default();
    net.forward_train(&input, &mut probabilities, &mut workspace);
    // d(−log p_label)/dp = −1/p at the label, 0 elsewhere, averaged over the batch.
    let grad_probabilities = Batch::from_fn(4, |i| {
        let (sample, class) = (i / 4, i % 4);
        if class == labels[sample] {
            -1.0 / probabilities.sample(sample)[class] / 4.0
        } else {
            0.0
        }
    });
    let mut through_softmax = net.new_grads();
    net.backward(
        &input,
        &probabilities,
        &grad_probabilities,
        &mut workspace,
        None,
        &mut through_softmax,
    );
    let (_, a) = flatten_grads(&fused);
    let (_, b) = flatten_grads(&through_softmax);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn parameters_and_buffers_are_named_by_layer() {
    let mut net = Strided::new(0);
    let mut names = Vec::new();
    net.visit_params(&mut |name, dims, values| {
        assert_eq!(dims.iter().product::<usize>(), values.len());
        names.push(name.to_string());
    });
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "batchnorm1.weight",
            "batchnorm1.bias",
            "dense1.weight",
            "dense1.bias"
        ]
    );
    let mut buffers = Vec::new();
    net.visit_buffers(&mut |name, _, _| buffers.push(name.to_string()));
    assert_eq!(
        buffers,
        ["batchnorm1.running_mean", "batchnorm1.running_var"]
    );
    net.visit_params_mut(&mut |name, values| {
        if name == "dense1.bias" {
            values.fill(0.5);
        }
    });
    assert_eq!(net.dense1.params.bias[..], [0.5; 3]);
}

#[test]
fn one_sample_and_a_batch_infer_the_same() {
    let net = MnistCnn::new(11);
    let batch = noise::<Hwc<28, 28, 1>>(6, 12);
    let mut workspace = Default::default();
    let all = net.infer(&batch, &mut workspace).clone();
    for i in 0..batch.len() {
        let one = batch.to_tensor(i).to_batch();
        let single = net.infer(&one, &mut workspace);
        assert_close("sample", single.as_slice(), all.sample(i));
        let total: f32 = single.as_slice().iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "softmax output sums to 1, not {total}"
        );
    }
}

#[test]
fn same_seed_same_network() {
    let (a, b, c) = (MnistCnn::new(1), MnistCnn::new(1), MnistCnn::new(2));
    assert_eq!(a.dense1.params, b.dense1.params);
    assert_ne!(a.dense1.params, c.dense1.params);
}

/// Inference with batch normalisation folded into the convolutions (running statistics moved
/// by training passes, scales and shifts set) agrees with the layers run one by one.
#[test]
fn folded_batchnorm_infers_as_the_layers() {
    let mut net = Folded::new(3);
    let mut workspace = FoldedWorkspace::default();
    for seed in 0..5 {
        net.forward_logits(&noise(6, seed), &mut workspace);
    }
    let mut rng = seeded_rng(4);
    for values in [
        &mut net.batchnorm1.params.weight,
        &mut net.batchnorm1.params.bias,
        &mut net.batchnorm2.params.weight,
        &mut net.batchnorm2.params.bias,
    ] {
        values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-2.0..2.0));
    }
    let layers = Chain::new(
        net.conv1.clone(),
        Chain::new(
            net.batchnorm1.clone(),
            Chain::new(
                net.relu1.clone(),
                Chain::new(
                    net.maxpool1,
                    Chain::new(
                        net.conv2.clone(),
                        Chain::new(
                            net.batchnorm2.clone(),
                            Chain::new(net.flatten1, net.dense1.clone()),
                        ),
                    ),
                ),
            ),
        ),
    );
    let input = noise::<Hwc<9, 9, 3>>(4, 9);
    let mut want = Batch::default();
    layers.forward(&input, &mut want, &mut Default::default());
    let got = net.infer(&input, &mut workspace);
    assert_close("folded inference", got.as_slice(), want.as_slice());
    let ops: Vec<&str> = Folded::PLAN.iter().map(|op| op.name).collect();
    assert_eq!(
        ops,
        [
            "conv1+batchnorm1+relu1+maxpool1",
            "conv2+batchnorm2",
            "flatten1",
            "dense1"
        ]
    );
}

/// The plan of the Keras CNN: each conv and dense layer fused with its ReLU, the second conv
/// also with the pooling after it, flatten a view, dropout absent from inference, outputs
/// alternating between two buffers.
#[test]
fn the_plan_fuses_views_and_alternates_buffers() {
    use constnet::plan::InferenceSlot::{Buffer, Output, View};
    let ops: Vec<_> = MnistCnn::PLAN
        .iter()
        .map(|op| (op.name, op.inference))
        .collect();
    assert_eq!(
        ops,
        [
            ("conv1+relu1", Buffer(0)),
            ("conv2+relu2+maxpool1", Buffer(1)),
            ("flatten1", View),
            ("dense1+relu3", Buffer(0)),
            ("dense2", Buffer(1)),
            ("softmax1", Output),
        ]
    );
    // Kept for training: conv1+relu1, conv2+relu2, maxpool1, dense1+relu3, dense2 and softmax1,
    // each output with its gradient, but conv2+relu2's output, which maxpool1 pools from scratch;
    // both dropouts scale their input in place.
    let kept = 21_632 + 36_864 + 9_216 + 128 + 10 + 10;
    assert_eq!(MnistCnn::TRAINING_VALUES, 2 * kept - 36_864);
    let plan = MnistCnn::plan(128);
    let conv2 = Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::algorithm(128).to_string();
    let row = plan
        .lines()
        .find(|row| row.starts_with(" conv2+relu2+maxpool1 "));
    let row = row.unwrap_or_else(|| panic!("no row of conv2 in\n{plan}"));
    let runs = "conv(64, 3) + relu (activation epilogue) + maxpool(2) (pooling from scratch)";
    for cell in [runs, &conv2, "(12, 12, 64)", "buffer B"] {
        assert!(row.contains(cell), "{cell} is not in\n{plan}");
    }
    let activations = "Activations at batch 128: inference 15,799,296 bytes (2 buffers and the \
                       output), training 50,614,272 bytes (the outputs backward reads and every gradient)\n";
    match Settings::current().conv {
        // conv2's filters with Winograd F(4x4, 3x3): 36 x 32 x 64 transformed.
        ConvPolicy::Auto => assert!(
            plan.ends_with(&format!(
                "{activations}Transformed filters kept between calls (Winograd): 294,912 bytes \
                 at inference; training keeps as many again for input gradients\n"
            )),
            "{plan}"
        ),
        ConvPolicy::Gemm => assert!(plan.ends_with(activations), "{plan}"),
        _ => assert!(plan.contains(activations), "{plan}"),
    }
    // A context that forces the GEMM plans it, whatever the default.
    let gemm = Context::builder().threads(1).conv(ConvPolicy::Gemm).build();
    let plan = gemm
        .expect("a context builds")
        .install(|| MnistCnn::plan(128));
    assert!(plan.ends_with(activations), "{plan}");
}

/// Inference keeps Winograd's transformed filters in the workspace between calls, and a
/// change to the weights, even a write to a public field, reaches the next call.
#[test]
fn inference_follows_changed_weights() {
    let mut net = MnistCnn::new(21);
    let images = noise::<Hwc<28, 28, 1>>(4, 22);
    let mut workspace = MnistCnnWorkspace::default();
    let before = net.infer(&images, &mut workspace).clone();
    // Both convolutions' (the first keeps none unless Winograd is forced: one input channel).
    let filter_values = Conv2d::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>::cached_filter_values(4)
        + Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::cached_filter_values(4);
    let filter_bytes = workspace.filter_bytes();
    assert_eq!(
        filter_bytes,
        filter_values * size_of::<f32>(),
        "as the plan table counts"
    );
    for (i, weight) in net.conv2.params.weight.iter_mut().enumerate() {
        if i % 7 == 0 {
            *weight = -*weight;
        }
    }
    let after = net.infer(&images, &mut workspace).clone();
    let fresh = net
        .infer(&images, &mut MnistCnnWorkspace::default())
        .clone();
    assert_eq!(
        after.as_slice(),
        fresh.as_slice(),
        "stale transformed filters"
    );
    assert_ne!(
        after.as_slice(),
        before.as_slice(),
        "the weights changed nothing"
    );
    assert_eq!(
        net.infer(&images, &mut workspace).as_slice(),
        fresh.as_slice()
    );
}

/// Global pooling turns each channel into one value, so the dense layer after it sees as many
/// inputs as the image has channels, whatever its size.
#[test]
fn global_pooling_reduces_each_channel_to_one_value() {
    assert_eq!(Global::PARAMS, (3 * 3 * 2 * 4 + 4) + (4 * 3 + 3));
    let pool = Global::LAYERS
        .iter()
        .find(|layer| layer.name == "globalavgpool1")
        .expect("the layer is named after its kind");
    assert_eq!((pool.spec, pool.output), ("globalavgpool", &[4][..]));
    assert!(GlobalMax::summary().contains("globalmaxpool1"));
    // dwconv: a 3x3 filter and a bias per channel; the 1x1 conv mixes the channels.
    assert_eq!(
        Separable::PARAMS,
        (9 * 3 + 3) + (3 * 6 + 6) + (9 * 6 + 6) + (6 * 2 + 2)
    );
    let strided = Separable::LAYERS
        .iter()
        .find(|l| l.name == "dwconv2")
        .unwrap();
    assert_eq!(strided.output, [3, 3, 6]);
    let net = Global::new(1);
    let mut workspace = GlobalWorkspace::default();
    let probabilities = net.infer(&noise(5, 2), &mut workspace);
    assert_eq!(probabilities.len(), 5);
}
