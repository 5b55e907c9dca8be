//! Int8 inference by post-training quantization: the int8 network follows its `f32` network,
//! gives the same bytes on every instruction-set path and however a batch is split between
//! threads, saves and loads with every problem named, and refuses what it cannot run by name.

use constnet::context::{Context, Isa};
use constnet::layers::Layer;
use constnet::network::Network;
use constnet::quant::{QuantizeError, Quantized, QuantizedWorkspace};
use constnet::{Batch, Shape};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

constnet::network! {
    /// Convolutions (one padded and strided), batch normalisation, both poolings, a sigmoid
    /// run as a table, and logits out.
    Mixed<input(12, 12, 3) conv(8, 3, padding = same) batchnorm relu maxpool(2)
          conv(12, 3, stride = 2, padding = 1) sigmoid avgpool(2, padding = same) flatten
          dense(16) relu dropout(0.2) dense(5)>
}

constnet::network! {
    /// The Keras MNIST network's shape, smaller.
    Small<input(14, 14, 1) conv(8, 3) relu conv(16, 3) relu maxpool(2) flatten dense(32) relu
          dense(10) softmax>
}

constnet::network! {
    Residual<input(8, 8, 2) conv(4, 3, padding = same) relu
             residual(conv(4, 3, padding = same) relu) flatten dense(3)>
}

/// `samples` random inputs of `N`, in [0, 1).
fn inputs<N: Network>(samples: usize, seed: u64) -> Batch<N::Input> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Batch::from_fn(samples, |_| rng.random())
}

/// A network whose batch normalisation has statistics of its own, not the identity.
fn mixed() -> Mixed {
    let mut network = Mixed::new(3);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
    network.visit_buffers_mut(&mut |name, values| {
        for v in values.iter_mut() {
            *v = if name.ends_with("running_var") {
                rng.random_range(0.5..2.0)
            } else {
                rng.random_range(-0.3..0.3)
            };
        }
    });
    network
}

#[test]
fn int8_logits_follow_the_f32_network() {
    let network = mixed();
    let calibration = inputs::<Mixed>(200, 1);
    let int8 = Quantized::calibrate(&network, &calibration).unwrap();
    let test = inputs::<Mixed>(100, 2);
    let mut f32_workspace = Default::default();
    let expected = network.infer(&test, &mut f32_workspace).clone();
    let mut workspace = QuantizedWorkspace::default();
    let got = int8.infer(&test, &mut workspace);
    let range = expected.as_slice().iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .as_slice()
        .iter()
        .zip(expected.as_slice())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // Six requantized tensors, each off by at most half a step of a range a little wider than
    // the values: a few percent of the largest logit.
    assert!(
        worst <= 0.05 * range,
        "int8 logits off by {worst}, the largest is {range}"
    );
    assert!(
        worst > 0.0,
        "int8 gives exactly the f32 logits: is it running f32?"
    );
    let agree = got
        .as_slice()
        .chunks(5)
        .zip(expected.as_slice().chunks(5))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    assert!(agree >= 90, "{agree} of 100 predictions agree");
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

#[test]
fn every_instruction_set_gives_the_same_bytes() {
    let network = Small::new(5);
    let int8 = Quantized::calibrate(&network, &inputs::<Small>(64, 6)).unwrap();
    let test = inputs::<Small>(9, 7);
    let outputs: Vec<Vec<u32>> = Isa::supported()
        .into_iter()
        .map(|isa| {
            let context = Context::builder().threads(1).isa(isa).build().unwrap();
            let mut workspace = QuantizedWorkspace::default();
            context.install(|| {
                int8.infer(&test, &mut workspace)
                    .as_slice()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
        })
        .collect();
    assert!(
        outputs.windows(2).all(|pair| pair[0] == pair[1]),
        "paths differ"
    );
}

#[test]
fn splitting_a_batch_between_threads_changes_no_bit() {
    let network = Small::new(8);
    let int8 = Quantized::calibrate(&network, &inputs::<Small>(64, 9)).unwrap();
    let test = inputs::<Small>(7, 10);
    let two = Context::builder().threads(2).build().unwrap();
    let mut workspace = QuantizedWorkspace::default();
    let together: Vec<f32> = two.install(|| int8.infer(&test, &mut workspace).as_slice().to_vec());
    for (i, sample) in test
        .as_slice()
        .chunks(<Small as Layer>::Input::LEN)
        .enumerate()
    {
        let one = Batch::from_vec(sample.to_vec()).unwrap();
        let alone = two.install(|| int8.infer(&one, &mut workspace).as_slice().to_vec());
        assert_eq!(alone, together[i * 10..(i + 1) * 10], "sample {i}");
    }
}

#[test]
fn a_saved_network_loads_to_the_same_outputs() {
    let network = mixed();
    let int8 = Quantized::calibrate(&network, &inputs::<Mixed>(50, 11)).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("mixed-int8.safetensors");
    int8.save(&path).unwrap();
    let loaded = Quantized::<Mixed>::load(&path).unwrap();
    let test = inputs::<Mixed>(4, 12);
    let (mut a, mut b) = (QuantizedWorkspace::default(), QuantizedWorkspace::default());
    assert_eq!(
        int8.infer(&test, &mut a).as_slice(),
        loaded.infer(&test, &mut b).as_slice()
    );
    assert_eq!(int8.plan(), loaded.plan());
}

#[test]
fn a_file_of_another_network_is_refused_with_each_problem_named() {
    let small = Quantized::calibrate(&Small::new(1), &inputs::<Small>(10, 13)).unwrap();
    let error = Quantized::<Mixed>::from_bytes(&small.to_bytes().unwrap()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("do not fit"), "{message}");
    assert!(
        message.contains("`conv1.weight` is [3, 3, 1, 8] in the file but [3, 3, 3, 8]"),
        "{message}"
    );
    assert!(
        message.contains("`dense2.weight_scale`") || message.contains("missing"),
        "{message}"
    );
    let truncated = &small.to_bytes().unwrap()[..100];
    let error = Quantized::<Small>::from_bytes(truncated).unwrap_err();
    assert!(
        error.to_string().contains("not a valid safetensors"),
        "{error}"
    );
}

#[test]
fn layers_int8_cannot_run_are_named() {
    let error = Quantized::calibrate(&Residual::new(1), &inputs::<Residual>(4, 14)).unwrap_err();
    assert!(
        matches!(error, QuantizeError::Unsupported { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("residual"), "{error}");
    let empty = Batch::default();
    let error = Quantized::calibrate(&Small::new(1), &empty).unwrap_err();
    assert!(matches!(error, QuantizeError::NoCalibrationData), "{error}");
    let mut bad = inputs::<Small>(3, 15);
    bad.as_mut_slice()[17] = f32::NAN;
    let error = Quantized::calibrate(&Small::new(1), &bad).unwrap_err();
    assert!(error.to_string().contains("`input`"), "{error}");
}

#[test]
fn a_quantized_network_is_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Quantized<Small>>();
    let int8 = Quantized::calibrate(&Small::new(2), &inputs::<Small>(20, 16)).unwrap();
    let test = inputs::<Small>(3, 17);
    let mut workspace = QuantizedWorkspace::default();
    let expected = int8.infer(&test, &mut workspace).clone();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut workspace = QuantizedWorkspace::default();
                assert_eq!(int8.infer(&test, &mut workspace), &expected);
            });
        }
    });
}

/// The operators of a QDQ export, in order.
fn operators(model: &[u8]) -> Vec<String> {
    use constnet_onnx_proto::Message;
    let model = constnet_onnx_proto::Model::decode(model).expect("a model");
    let graph = model.graph.expect("a graph");
    graph.node.into_iter().map(|node| node.op_type).collect()
}

#[test]
fn the_qdq_export_quantizes_every_tensor_the_int8_network_keeps_in_bytes() {
    let int8 = Quantized::calibrate(&mixed(), &inputs::<Mixed>(50, 18)).unwrap();
    let model = constnet::onnx::quantized_to_bytes(&int8);
    let ops = operators(&model);
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    // The input and the outputs of conv1+bn1+relu1, maxpool1, conv2, sigmoid1, avgpool1 and
    // dense1+relu: seven pairs; dense2 writes f32.
    assert_eq!(count("QuantizeLinear"), 7, "{ops:?}");
    // Those seven, and the weight and bias of each of the four layers with weights.
    assert_eq!(count("DequantizeLinear"), 7 + 8, "{ops:?}");
    for op in ["Conv", "MaxPool", "AveragePool", "Sigmoid", "Gemm", "Relu"] {
        assert!(count(op) >= 1, "no {op} in {ops:?}");
    }
    assert_eq!(
        ops.last().map(String::as_str),
        Some("Gemm"),
        "logits are the output"
    );
    if let Some(dir) = std::env::var_os("CONSTNET_INT8_ONNX_DIR") {
        write_for_onnx_runtime(
            std::path::Path::new(&dir),
            "mixed",
            &int8,
            &inputs::<Mixed>(64, 19),
        );
        let small = Quantized::calibrate(&Small::new(20), &inputs::<Small>(64, 21)).unwrap();
        write_for_onnx_runtime(
            std::path::Path::new(&dir),
            "small",
            &small,
            &inputs::<Small>(64, 22),
        );
    }
}

/// Writes `int8` as `dir/name.onnx` and, in `dir/name.safetensors`, inputs, constnet's
/// outputs for them and the step of the last tensor the network quantizes, for
/// `scripts/check_int8_onnx_runtime.py`.
fn write_for_onnx_runtime<N: Network>(
    dir: &std::path::Path,
    name: &str,
    int8: &Quantized<N>,
    input: &Batch<N::Input>,
) {
    use safetensors::{Dtype, tensor::TensorView};
    std::fs::create_dir_all(dir).unwrap();
    constnet::onnx::export_quantized(int8, dir.join(format!("{name}.onnx"))).unwrap();
    let mut workspace = QuantizedWorkspace::default();
    let output = int8.infer(input, &mut workspace).clone();
    let bytes = |values: &[f32]| {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let samples = input.len();
    let mut input_dims = vec![samples];
    input_dims.extend_from_slice(<N::Input as Shape>::DIMS);
    let step = int8.output_step();
    let data = [
        ("input", input_dims, bytes(input.as_slice())),
        (
            "output",
            vec![samples, <N::Output as Shape>::LEN],
            bytes(output.as_slice()),
        ),
        ("step", vec![1], bytes(&[step])),
    ];
    let views = data.iter().map(|(name, dims, bytes)| {
        (
            *name,
            TensorView::new(Dtype::F32, dims.clone(), bytes).unwrap(),
        )
    });
    let file = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join(format!("{name}.safetensors")), file).unwrap();
}
