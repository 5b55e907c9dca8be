//! ONNX models turned into `network!` networks compute what the models compute: the fixtures of
//! `scripts/make_onnx_fixtures.py` (PyTorch's layout: NCHW input, OIHW kernels, symmetric pads on
//! stride-2 convolutions, residual blocks, batch norm with eps 1e-5; and a Keras model as tf2onnx
//! writes it), imported at compile time by `onnx_network!` and by the `constnet-import` tool's
//! files, against the float64 forward pass the fixtures hold.

use constnet::layers::Layer;
use constnet::network::Network;
use constnet::{Batch, Shape, weights};
use constnet_import::ImportError;
use safetensors::SafeTensors;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx");

constnet_macros::onnx_network!("tests/fixtures/onnx/torch_resnet.onnx", TorchResnet);
constnet_macros::onnx_network!("tests/fixtures/onnx/torch_mixed.onnx", TorchMixed);
constnet_macros::onnx_network!("tests/fixtures/onnx/keras_nhwc.onnx", KerasNhwc);
constnet_macros::onnx_network!("tests/fixtures/onnx/keras_tf2onnx.onnx", KerasTf2onnx);

/// The network as `constnet-import --name TorchResnetCli` writes it (checked current below).
mod cli {
    include!("fixtures/onnx/torch_resnet_cli.rs");
}

/// A fixture's tensor as floats, with its dimensions.
fn tensor(io: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = io.tensor(name).expect("the fixture holds the tensor");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (view.shape().to_vec(), values)
}

/// The fixture's inputs in constnet's NHWC order (`nchw` says how the model takes them).
fn inputs_nhwc(dims: &[usize], values: &[f32], nchw: bool) -> Vec<f32> {
    if !nchw {
        return values.to_vec();
    }
    let [n, c, h, w] = dims[..] else {
        panic!("an NCHW input has four dimensions")
    };
    let mut nhwc = vec![0.0; values.len()];
    for s in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    nhwc[((s * h + y) * w + x) * c + ch] = values[((s * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    nhwc
}

/// `net`, given the model's weights, computes the fixture's outputs within 1e-5 (relative to
/// the value, for values above 1).
fn matches_fixture<N: Network>(mut net: N, model: &str, nchw: bool) {
    let imported = constnet_import::import_file(format!("{FIXTURES}/{model}.onnx")).unwrap();
    weights::from_bytes(&mut net, &imported.safetensors().unwrap()).unwrap();
    let bytes = std::fs::read(format!("{FIXTURES}/{model}.io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&bytes).unwrap();
    let (dims, input) = tensor(&io, "input");
    let (_, expected) = tensor(&io, "output");
    let input = inputs_nhwc(&dims, &input, nchw);
    let batch = Batch::<N::Input>::from_vec(input).unwrap();
    let mut workspace = Default::default();
    let output = net.infer(&batch, &mut workspace);
    assert_eq!(
        output.as_slice().len(),
        expected.len(),
        "{model}: output length"
    );
    let worst = output
        .as_slice()
        .iter()
        .zip(&expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0f32, f32::max);
    println!("{model}: worst relative difference {worst:.2e}");
    assert!(worst <= 1e-5, "{model}: differs from the model by {worst}");
}

#[test]
fn a_pytorch_resnet_with_padding_and_projections() {
    matches_fixture(TorchResnet::new(0), "torch_resnet", true);
}

#[test]
fn depthwise_asymmetric_pads_a_flatten_of_nchw_values_gelu_and_swish() {
    matches_fixture(TorchMixed::new(0), "torch_mixed", true);
}

#[test]
fn a_keras_model_as_tf2onnx_writes_it() {
    matches_fixture(KerasNhwc::new(0), "keras_nhwc", false);
}

/// tf2onnx folds batch normalisation into the convolution and writes `Flatten` as a `Reshape`
/// whose shape the graph computes; the expected outputs are Keras's own, in float32.
#[test]
fn a_keras_model_converted_by_tf2onnx() {
    matches_fixture(KerasTf2onnx::new(0), "keras_tf2onnx", false);
}

/// The tool's contract: `net.rs` with one `network!` and `net.safetensors` that
/// `weights::load` reads; the committed copy is what the tool writes today.
#[test]
fn the_tools_files_compile_and_load() {
    let imported = constnet_import::import_file(format!("{FIXTURES}/torch_resnet.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [rust, safetensors] = imported
        .write(dir.path(), "TorchResnetCli", "torch_resnet.onnx")
        .unwrap();
    assert_eq!(rust.file_name().unwrap(), "torch_resnet_cli.rs");
    let committed = std::fs::read_to_string(format!("{FIXTURES}/torch_resnet_cli.rs")).unwrap();
    assert_eq!(std::fs::read_to_string(&rust).unwrap(), committed);
    let mut net = cli::TorchResnetCli::new(0);
    weights::load(&mut net, &safetensors).unwrap();
    let mut reference = TorchResnet::new(0);
    weights::from_bytes(&mut reference, &imported.safetensors().unwrap()).unwrap();
    let input = Batch::<<TorchResnet as Layer>::Input>::from_fn(2, |i| (i % 7) as f32 / 7.0);
    let (mut first, mut second) = (Default::default(), Default::default());
    let a = net.infer(&input, &mut first);
    let b = reference.infer(&input, &mut second);
    assert_eq!(a.as_slice(), b.as_slice());
    assert_eq!(
        <cli::TorchResnetCli as Layer>::Input::DIMS,
        &[16, 16, 3],
        "the network takes NHWC input"
    );
}

#[test]
fn an_unsupported_operator_is_refused_by_node() {
    let error =
        constnet_import::import_file(format!("{FIXTURES}/unsupported_op.onnx")).unwrap_err();
    let ImportError::Node { node, op, problem } = &error else {
        panic!("not a node's error: {error}");
    };
    assert_eq!((node.as_str(), op.as_str()), ("lrn_4", "LRN"));
    assert!(problem.contains("no equivalent in `network!`"), "{problem}");
}

#[test]
fn shapes_that_disagree_are_refused_by_node() {
    let error =
        constnet_import::import_file(format!("{FIXTURES}/shape_mismatch.onnx")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "node `gemm_3` (Gemm): has a weight for 30 inputs, but its input has 32 values"
    );
}
