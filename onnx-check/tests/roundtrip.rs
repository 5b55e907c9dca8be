//! Every layer kind of the grammar, exported to ONNX and run in tract on random inputs, gives
//! constnet's outputs within 1e-5. With `ONNX_CHECK_DIR` set, each model is also written there
//! with its inputs and constnet's outputs (`<name>.onnx`, `<name>.safetensors`), for
//! `scripts/check_onnx_ort.py` to run in ONNX Runtime. Each model also imports back (with
//! `constnet-import`) to the same layers and the same weights, bit for bit.

use constnet::catalogue::{LayerKind, Padding};
use constnet::init::seeded_rng;
use constnet::layers::{Build, Layer, NoParams, TensorVisitor, TensorVisitorMut, UpdateVisitor};
use constnet::onnx::{self, OnnxError};
use constnet::prelude::*;
use constnet::rand::RngExt;
use constnet::weights;
use tract_onnx::prelude::{Framework, InferenceModelExt, Tensor, tvec};

network! {
    /// Strided `same` convolution, batch normalisation, leaky ReLU, max pooling, flatten, dense,
    /// sigmoid, dropout and softmax.
    Classifier<input(9, 9, 2) conv(4, 3, stride = 2, padding = same) batchnorm leaky_relu(0.1)
               maxpool(2) flatten dense(6) sigmoid dropout(0.3) dense(3) softmax>
}

network! {
    /// Depthwise and pointwise convolutions, average pooling with a stride, residual blocks
    /// (identity and projection), a strided `same` convolution padding one column after and none
    /// before, global average pooling.
    Residual<input(9, 9, 3) dwconv(3, padding = same) relu conv(6, 1) tanh avgpool(2, stride = 1)
             residual(conv(6, 3, padding = same) batchnorm relu)
             residual(conv(8, 3, stride = 2, padding = same), shortcut = project)
             globalavgpool dense(4)>
}

network! {
    /// Global max pooling, batch normalisation and residual blocks on vectors (a dense
    /// projection), a valid convolution with an even kernel, a sigmoid head.
    Vectors<input(6, 6, 2) conv(3, 2) globalmaxpool dense(5) batchnorm
            residual(dense(5) tanh) residual(dense(3), shortcut = project) sigmoid>
}

network! {
    /// An image output: softmax over each pixel's channels, given back NHWC.
    ImageOut<input(4, 4, 2) conv(3, 3, padding = same) softmax>
}

network! {
    /// GELU and Swish on images and on vectors.
    SmoothActivations<input(6, 6, 2) conv(4, 3) gelu swish flatten dense(5) swish dense(3) gelu>
}

network! {
    /// Nearest-neighbour upsampling by 2 and by 3 between convolutions.
    Upsampling<input(5, 4, 2) conv(3, 3, padding = same) relu upsample(2) conv(2, 3) upsample(3)
               flatten dense(4)>
}

network! {
    /// PyTorch's paddings: a 7x7 stem with a pad of 3 and stride 2, max pooling 3x3 stride 2 with
    /// a pad of 1, a stride-2 convolution padding 1 on each side, asymmetric pads on a depthwise
    /// convolution, `same` average pooling.
    TorchPadding<input(16, 15, 3) conv(4, 7, stride = 2, padding = 3) batchnorm relu
                 maxpool(3, stride = 2, padding = 1)
                 residual(conv(4, 3, padding = 1) relu)
                 conv(6, 3, stride = 2, padding = 1) dwconv(3, padding = (2, 0, 1, 1))
                 avgpool(2, padding = same) flatten dense(3)>
}

network! {
    /// A flat input and an MLP.
    Mlp<input(12) dense(8) relu dense(3)>
}

/// Random values in [-1, 1] for every parameter, and running statistics away from (0, 1), so
/// that no layer's export is checked at its trivial initial values.
fn randomized<N: Network>(seed: u64) -> N {
    let mut net = N::new(seed);
    let mut rng = seeded_rng(seed + 1);
    net.visit_params_mut(&mut |_, values| {
        values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));
    });
    net.visit_buffers_mut(&mut |name, values| {
        let variance = name.ends_with("running_var");
        for v in values.iter_mut() {
            *v = if variance {
                rng.random_range(0.2..2.0)
            } else {
                rng.random_range(-0.5..0.5)
            };
        }
    });
    net
}

/// Exports `N`, runs it in tract and in constnet on `samples` random samples, and checks that
/// every output agrees within 1e-5 (relative to the value, for values above 1).
fn round_trip<N: Network>(samples: usize) {
    let net = randomized::<N>(7);
    let mut rng = seeded_rng(11);
    let input: Batch<N::Input> = Batch::from_fn(samples, |_| rng.random_range(-1.0..1.0));
    let expected = net.infer(&input, &mut Default::default()).clone();
    let bytes = onnx::to_bytes(&net).unwrap();
    operators_follow_the_catalogue(&net, &bytes);

    let shape: Vec<usize> = [samples]
        .iter()
        .chain(<N::Input as Shape>::DIMS)
        .copied()
        .collect();
    let model = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let tensor = Tensor::from_shape(&shape, input.as_slice()).unwrap();
    let outputs = model.run(tvec!(tensor.into())).unwrap();
    let actual = outputs[0].as_slice::<f32>().unwrap();

    assert_eq!(
        actual.len(),
        expected.as_slice().len(),
        "{}: output length",
        N::NAME
    );
    let worst = actual
        .iter()
        .zip(expected.as_slice())
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0f32, f32::max);
    println!("{}: worst relative difference {worst:.2e}", N::NAME);
    assert!(
        worst <= 1e-5,
        "{}: tract differs from constnet by {worst}",
        N::NAME
    );
    write_for_onnx_runtime::<N>(&bytes, &input, &expected);
    imports_back(&net, &bytes);
}

/// Importing the exported model gives back the network: the same layers, named as `network!`
/// names them (less the dropout the export leaves out), and every tensor bit for bit. `same`
/// comes back as the pads it makes on the layer's input, which the export writes: the same
/// windows, so the same layer type's arithmetic. So the imported network computes what the
/// original computes, bit for bit.
fn imports_back<N: Network>(net: &N, bytes: &[u8]) {
    let imported = constnet_import::import_bytes(bytes).unwrap();
    let graph = net.graph();
    let input_of = |value: usize| match value {
        0 => <N::Input as Shape>::DIMS,
        value => graph[value - 1].output,
    };
    let original: Vec<(String, LayerKind)> = graph
        .iter()
        .filter(|node| !matches!(node.op, LayerKind::Add | LayerKind::Dropout { .. }))
        .map(|node| {
            let input = input_of(node.inputs[0]);
            (node.name.to_string(), same_as_pads(node.op, input))
        })
        .collect();
    let mut back: Vec<(String, LayerKind)> = imported
        .layers()
        .into_iter()
        .map(|(name, layer)| (name, layer.kind))
        .collect();
    let mut original_sorted = original.clone();
    original_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    back.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(back, original_sorted, "{}: imported layers", N::NAME);
    let own = weights::to_bytes(net).unwrap();
    let own = safetensors::SafeTensors::deserialize(&own).unwrap();
    let tensors = imported.tensors();
    assert_eq!(tensors.len(), own.len(), "{}: tensors", N::NAME);
    for (name, dims, values) in tensors {
        let view = own
            .tensor(&name)
            .unwrap_or_else(|_| panic!("{}: no {name}", N::NAME));
        assert_eq!(view.shape(), dims.as_slice(), "{}: {name}", N::NAME);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            view.data(),
            bytes.as_slice(),
            "{}: {name} bit for bit",
            N::NAME
        );
    }
}

/// Each layer's ONNX operators, layout transpositions aside, are those the catalogue gives
/// its kind ([`LayerKind::onnx`](constnet::catalogue::LayerKind::onnx)): a node belongs to the
/// layer with the longest name its output carries (`conv1`, `conv1.<step>`; `res1.conv1` is not
/// the block `res1`'s).
fn operators_follow_the_catalogue<N: Network>(net: &N, bytes: &[u8]) {
    use constnet::catalogue::OnnxOp;
    let model = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .unwrap();
    let graph = model.graph.expect("the model has a graph");
    let layers = net.graph();
    let owner = |output: &str| {
        let carries = |name: &str| output == name || output.starts_with(&format!("{name}."));
        let named = layers
            .iter()
            .map(|layer| layer.name)
            .filter(|name| carries(name));
        named.max_by_key(|name| name.len())
    };
    for layer in &layers {
        let written: Vec<&str> = graph
            .node
            .iter()
            .filter(|node| {
                node.op_type != "Transpose" && owner(&node.output[0]) == Some(layer.name)
            })
            .map(|node| node.op_type.as_str())
            .collect();
        let catalogued: Vec<&str> = match layer.op.onnx() {
            OnnxOp::Node(op) => vec![op],
            OnnxOp::Nodes(ops) => ops.to_vec(),
            OnnxOp::Identity | OnnxOp::Unsupported => vec![],
        };
        assert_eq!(written, catalogued, "{}: {}", N::NAME, layer.name);
    }
}

/// `kind` with `same` padding written as the pads it makes on an `input` image.
fn same_as_pads(kind: LayerKind, input: &[usize]) -> LayerKind {
    let explicit = |padding: Padding, window: usize, stride: usize| match (padding, input) {
        (Padding::Same, &[h, w, _]) => {
            let pads = padding.pads((h, w), window, stride);
            if pads.is_zero() {
                Padding::Valid
            } else {
                Padding::Explicit(pads)
            }
        }
        _ => padding,
    };
    match kind {
        LayerKind::Conv {
            filters,
            kernel,
            stride,
            padding,
        } => LayerKind::Conv {
            filters,
            kernel,
            stride,
            padding: explicit(padding, kernel, stride),
        },
        LayerKind::DepthwiseConv {
            kernel,
            stride,
            padding,
        } => LayerKind::DepthwiseConv {
            kernel,
            stride,
            padding: explicit(padding, kernel, stride),
        },
        LayerKind::Pool {
            max,
            size,
            stride,
            padding,
        } => LayerKind::Pool {
            max,
            size,
            stride,
            padding: explicit(padding, size, stride),
        },
        kind => kind,
    }
}

/// With `ONNX_CHECK_DIR` set, writes the model and its inputs and expected outputs there.
fn write_for_onnx_runtime<N: Network>(
    model: &[u8],
    input: &Batch<N::Input>,
    expected: &Batch<N::Output>,
) {
    let Some(dir) = std::env::var_os("ONNX_CHECK_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{}.onnx", N::NAME)), model).unwrap();
    let shape = |dims: &[usize]| {
        [input.len()]
            .iter()
            .chain(dims)
            .copied()
            .collect::<Vec<_>>()
    };
    let bytes = |values: &[f32]| {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let (input_bytes, output_bytes) = (bytes(input.as_slice()), bytes(expected.as_slice()));
    let tensors = [
        ("input", shape(<N::Input as Shape>::DIMS), &input_bytes),
        ("output", shape(<N::Output as Shape>::DIMS), &output_bytes),
    ];
    let views = tensors.iter().map(|(name, dims, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims.clone(), data)
                .unwrap();
        (*name, view)
    });
    safetensors::serialize_to_file(views, None, &dir.join(format!("{}.safetensors", N::NAME)))
        .unwrap();
}

#[test]
fn convolutions_pooling_batchnorm_and_dense_layers() {
    round_trip::<Classifier>(5);
}

#[test]
fn depthwise_convolutions_and_residual_blocks() {
    round_trip::<Residual>(4);
}

#[test]
fn layers_on_vectors_and_a_sigmoid_head() {
    round_trip::<Vectors>(6);
}

#[test]
fn an_image_output_comes_back_nhwc() {
    round_trip::<ImageOut>(3);
}

#[test]
fn gelu_and_swish() {
    round_trip::<SmoothActivations>(4);
}

#[test]
fn nearest_neighbour_upsampling() {
    round_trip::<Upsampling>(5);
}

#[test]
fn explicit_and_asymmetric_padding() {
    round_trip::<TorchPadding>(3);
}

#[test]
fn a_flat_input() {
    round_trip::<Mlp>(1);
}

/// A layer of the user's: ONNX export has no description for it.
#[derive(Clone, Debug, Default)]
struct Doubler;

impl Layer for Doubler {
    type Input = Flat<4>;
    type Output = Flat<4>;
    type Grads = NoParams;
    type Cache = ();
    const PARAMS: usize = 0;

    fn forward(&self, input: &Batch<Flat<4>>, output: &mut Batch<Flat<4>>, _cache: &mut ()) {
        output.resize(input.len());
        for (y, x) in output.as_mut_slice().iter_mut().zip(input.as_slice()) {
            *y = 2.0 * x;
        }
    }

    fn backward(
        &self,
        _input: &Batch<Flat<4>>,
        _output: &Batch<Flat<4>>,
        grad_output: &Batch<Flat<4>>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<Flat<4>>>,
        _grads: &mut NoParams,
    ) {
        if let Some(dx) = grad_input {
            dx.resize(grad_output.len());
            for (d, g) in dx.as_mut_slice().iter_mut().zip(grad_output.as_slice()) {
                *d = 2.0 * g;
            }
        }
    }

    fn new_grads(&self) -> NoParams {
        NoParams
    }
    fn visit_params(&self, _visit: &mut TensorVisitor<'_>) {}
    fn visit_params_mut(&mut self, _visit: &mut TensorVisitorMut<'_>) {}
    fn update_params(&mut self, _grads: &NoParams, _update: &mut UpdateVisitor<'_>) {}
}

impl Build for Doubler {
    fn build(_rng: &mut constnet::init::SeededRng) -> Self {
        Doubler
    }
}

network! {
    WithCustom<input(4) layer(Doubler) dense(2)>
}

#[test]
fn a_layer_of_your_own_is_refused_by_name() {
    let error = onnx::to_bytes(&WithCustom::new(0)).unwrap_err();
    assert!(matches!(&error, OnnxError::Unsupported { layer, .. } if layer == "layer1"));
    let path = std::env::temp_dir().join(format!("constnet-onnx-{}.onnx", std::process::id()));
    assert!(onnx::export(&WithCustom::new(0), &path).is_err());
    assert!(!path.exists(), "a refused export leaves no file");
}

network! {
    /// Nothing but dropout: the identity at inference.
    OnlyDropout<input(5) dropout(0.5)>
}

#[test]
fn a_network_that_passes_its_input_on() {
    round_trip::<OnlyDropout>(2);
}
