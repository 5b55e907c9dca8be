//! Residual blocks in `network!`: `residual(...)` computes `x + f(x)`, or `project(x) + f(x)`
//! with `shortcut = project`. The generated passes agree with the block composed by hand, pass
//! end-to-end gradient checks (the gradient reaches the input by both paths), and name the
//! block's layers `res1.conv1`, its projection `res1.shortcut`.

use constnet::gradcheck::GradCheck;
use constnet::layers::{Layer, residual_add_forward};
use constnet::network::Network;
use constnet::prelude::*;

#[path = "support/swish.rs"]
mod swish;
use swish::Swish;

#[path = "support/compare.rs"]
mod compare;
use compare::{assert_close, noise};

network! {
    /// An identity block, then a strided block with a projection.
    Blocks<input(6, 6, 2) conv(4, 3, padding = same) relu
           residual(conv(4, 3, padding = same) tanh conv(4, 3, padding = same)) relu
           residual(conv(8, 3, stride = 2, padding = same) tanh, shortcut = project)
           globalavgpool dense(3) softmax>
}

network! {
    /// A network that starts with a block (so the input's gradient has two shares), blocks in
    /// a block, a depthwise convolution, global pooling and a layer of the user's.
    Nested<input(5, 5, 3)
           residual(dwconv(3, padding = same) tanh
                    residual(conv(3, 1) layer(Swish<Hwc<5, 5, 3>>))
                    residual(conv(3, 3, padding = same)))
           residual(conv(6, 3, stride = 2, padding = same), shortcut = project)
           globalavgpool dense(2)>
}

network! {
    /// Blocks on vectors, with dropout and batch normalisation inside; a dense projection.
    Vectors<input(8) residual(dense(8) batchnorm relu dropout(0.3) dense(8))
            residual(dense(5) tanh, shortcut = project) dense(3)>
}

network! {
    /// Batch normalisation in blocks, folded into the convolutions at inference, where each
    /// block's last convolution also adds the block's input (or its projection) and applies the
    /// ReLU after the block in its epilogue.
    Normalised<input(6, 6, 2) conv(4, 3, padding = same) batchnorm relu
               residual(conv(4, 3, padding = same) batchnorm relu conv(4, 3, padding = same) batchnorm)
               relu residual(conv(8, 3, stride = 2, padding = same) batchnorm relu
                             conv(8, 3, padding = same) batchnorm, shortcut = project)
               relu globalavgpool dense(2)>
}

/// `layer`'s inference output for `input`.
fn run<L: Layer>(layer: &L, input: &Batch<L::Input>) -> Batch<L::Output> {
    let mut output = Batch::default();
    layer.forward(input, &mut output, &mut Default::default());
    output
}

/// `body + skip`.
fn add<S: Shape>(body: &Batch<S>, skip: &Batch<S>) -> Batch<S> {
    let mut sum = Batch::default();
    residual_add_forward(body, skip, &mut sum);
    sum
}

#[test]
fn blocks_compute_the_input_plus_their_layers_output() {
    let net = Blocks::new(1);
    let input = noise::<Hwc<6, 6, 2>>(3, 2);
    let x = run(&net.relu1, &run(&net.conv1, &input));
    let f = run(
        &net.res1_conv2,
        &run(&net.res1_tanh1, &run(&net.res1_conv1, &x)),
    );
    let x = run(&net.relu2, &add(&f, &x));
    let f = run(&net.res2_tanh1, &run(&net.res2_conv1, &x));
    let x = add(&f, &run(&net.res2_shortcut, &x));
    let expected = run(
        &net.softmax1,
        &run(&net.dense1, &run(&net.globalavgpool1, &x)),
    );

    let mut workspace = Default::default();
    assert_close(
        "inference",
        net.infer(&input, &mut workspace).as_slice(),
        expected.as_slice(),
    );
    let mut trained = net.clone();
    let mut output = Batch::default();
    trained.forward_train(&input, &mut output, &mut workspace);
    assert_close("training forward", output.as_slice(), expected.as_slice());
}

#[test]
fn folded_batchnorm_in_a_block_infers_as_the_layers() {
    let mut net = Normalised::new(3);
    // Running statistics away from their initial values, so folding has work to do.
    let mut output = Batch::default();
    let mut workspace = Default::default();
    for seed in 0..3 {
        net.forward_train(&noise(8, seed), &mut output, &mut workspace);
    }
    let input = noise::<Hwc<6, 6, 2>>(2, 9);
    let x = run(&net.relu1, &run(&net.batchnorm1, &run(&net.conv1, &input)));
    let f = run(
        &net.res1_relu1,
        &run(&net.res1_batchnorm1, &run(&net.res1_conv1, &x)),
    );
    let f = run(&net.res1_batchnorm2, &run(&net.res1_conv2, &f));
    let x = run(&net.relu2, &add(&f, &x));
    let f = run(
        &net.res2_relu1,
        &run(&net.res2_batchnorm1, &run(&net.res2_conv1, &x)),
    );
    let f = run(&net.res2_batchnorm2, &run(&net.res2_conv2, &f));
    let x = run(&net.relu3, &add(&f, &run(&net.res2_shortcut, &x)));
    let expected = run(&net.dense1, &run(&net.globalavgpool1, &x));
    assert_close(
        "inference",
        net.infer(&input, &mut workspace).as_slice(),
        expected.as_slice(),
    );
    let plan = Normalised::plan(1);
    for fused in [
        "res1.conv2+res1.batchnorm2+res1+relu2",
        "res2.conv2+res2.batchnorm2+res2+relu3",
    ] {
        assert!(plan.contains(fused), "{fused} is not in\n{plan}");
    }
}

#[test]
fn gradients_reach_every_layer_and_the_input_through_both_paths() {
    // Steps of 1e-2 move some of the ReLUs' inputs across 0 (after batch normalisation, many
    // sit near it), so the difference would measure the kink: `Blocks` and `Vectors` step 1e-3.
    let small_step = GradCheck {
        epsilon: 1e-3,
        ..GradCheck::default()
    };
    for (name, report) in [
        ("Blocks", small_step.run(&Blocks::new(4), &noise(3, 5))),
        (
            "Nested",
            GradCheck::default().run(&Nested::new(6), &noise(2, 7)),
        ),
        ("Vectors", small_step.run(&Vectors::new(8), &noise(6, 9))),
    ] {
        let report = report.unwrap_or_else(|mismatch| panic!("{name}: {mismatch}"));
        assert!(
            report.tensors.iter().any(|(tensor, _)| tensor == "input"),
            "{name}: {:?}",
            report.tensors
        );
        assert!(
            report
                .tensors
                .iter()
                .any(|(tensor, _)| tensor.contains(".shortcut.")),
            "{name}: {:?}",
            report.tensors
        );
    }
}

#[test]
fn block_layers_are_named_by_block() {
    let net = Nested::new(1);
    let mut names = Vec::new();
    net.visit_params(&mut |name, _, _| names.push(name.to_string()));
    assert_eq!(
        names,
        [
            "res1.dwconv1.weight",
            "res1.dwconv1.bias",
            "res1.res1.conv1.weight",
            "res1.res1.conv1.bias",
            "res1.res2.conv1.weight",
            "res1.res2.conv1.bias",
            "res2.conv1.weight",
            "res2.conv1.bias",
            "res2.shortcut.weight",
            "res2.shortcut.bias",
            "dense1.weight",
            "dense1.bias",
        ]
    );
    let summary = Nested::summary();
    for row in [
        "res1.res1.layer1 (layer(Swish<Hwc<5, 5, 3>>))",
        "res1.res1 (add)",
        "res2.shortcut (conv(6, 1, stride = 2))",
        "res2 (add)",
    ] {
        assert!(summary.contains(row), "{row} is not in\n{summary}");
    }
    let params = 3 * 9 + 3 + 3 * 3 + 3 + 27 * 3 + 3 + 27 * 6 + 6 + 3 * 6 + 6 + 6 * 2 + 2;
    assert_eq!(Nested::PARAMS, params);
}

#[test]
fn the_plan_keeps_a_block_input_in_a_third_buffer() {
    let plan = Blocks::plan(1);
    for row in [
        "res1.conv1+res1.tanh1",
        // The last convolution of a block adds its input in the epilogue, then the ReLU after.
        "res1.conv2+res1+relu2",
        "conv(4, 3, padding = same) + conv1+relu1 (residual epilogue) + relu (activation epilogue)",
        "res2.shortcut",
        // Not after a tanh: the sum comes after the activation.
        "add: res2.conv1+res2.tanh1 + res2.shortcut",
        "buffer C",
    ] {
        assert!(plan.contains(row), "{row} is not in\n{plan}");
    }
    assert!(plan.contains("(3 buffers and the output)"), "{plan}");
    assert!(!Flat::plan(1).contains("buffer C"));
}

network! {
    Flat<input(4) dense(4) relu dense(2)>
}

#[test]
fn a_block_freezes_and_saves_by_its_name() {
    use constnet::optim::{OptimizerState, Sgd};
    let net = Nested::new(2);
    let mut state = OptimizerState::new(Sgd::new(0.1));
    state.freeze(&net, &["res1"]).unwrap();
    assert!(state.is_frozen("res1.res2.conv1.weight") && state.is_frozen("res1.dwconv1.bias"));
    assert!(!state.is_frozen("res2.shortcut.weight"));

    let path = std::env::temp_dir().join(format!(
        "constnet-residual-{}.safetensors",
        std::process::id()
    ));
    constnet::weights::save(&net, &path).unwrap();
    let mut loaded = Nested::new(3);
    constnet::weights::load(&mut loaded, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let input = noise::<Hwc<5, 5, 3>>(2, 4);
    let (mut a, mut b) = (Default::default(), Default::default());
    assert_eq!(
        net.infer(&input, &mut a).as_slice(),
        loaded.infer(&input, &mut b).as_slice()
    );
}

#[test]
fn the_graph_names_each_layer_and_the_values_it_reads() {
    use constnet::catalogue::{LayerKind, Padding};
    let graph = Blocks::new(0).graph();
    let described: Vec<(&str, &[usize])> = graph.iter().map(|n| (n.name, n.inputs)).collect();
    assert_eq!(
        described,
        [
            ("conv1", &[0][..]),
            ("relu1", &[1]),
            ("res1.conv1", &[2]),
            ("res1.tanh1", &[3]),
            ("res1.conv2", &[4]),
            ("res1", &[5, 2]),
            ("relu2", &[6]),
            ("res2.conv1", &[7]),
            ("res2.tanh1", &[8]),
            ("res2.shortcut", &[7]),
            ("res2", &[9, 10]),
            ("globalavgpool1", &[11]),
            ("dense1", &[12]),
            ("softmax1", &[13]),
        ]
    );
    assert_eq!(
        graph[9].op,
        LayerKind::Conv {
            filters: 8,
            kernel: 1,
            stride: 2,
            padding: Padding::Valid
        }
    );
    assert_eq!(graph[10].output, &[3, 3, 8]);
}
