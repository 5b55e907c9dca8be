//! Small models built here, node by node: what each imports as, and what is refused with which
//! node named.

use constnet_import::import_bytes;
use constnet_onnx_proto::{self as proto, Message};

/// An attribute: ints, an int or a string.
#[derive(Clone, Copy)]
enum Attr {
    Ints(&'static [i64]),
    Int(i64),
    Text(&'static str),
}

fn node(op: &str, inputs: &[&str], output: &str, attributes: &[(&str, Attr)]) -> proto::Node {
    proto::Node {
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute: attributes
            .iter()
            .map(|(name, value)| {
                let mut attribute = proto::Attribute {
                    name: name.to_string(),
                    ..Default::default()
                };
                match value {
                    Attr::Ints(ints) => attribute.ints = ints.to_vec(),
                    Attr::Int(i) => attribute.i = *i,
                    Attr::Text(s) => attribute.s = s.as_bytes().to_vec(),
                }
                attribute
            })
            .collect(),
    }
}

fn tensor(name: &str, dims: &[i64], values: Vec<f32>) -> proto::Tensor {
    proto::Tensor {
        dims: dims.to_vec(),
        data_type: proto::FLOAT,
        float_data: values,
        name: name.into(),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[i64]) -> proto::ValueInfo {
    let dim = |size: i64| proto::Dimension {
        dim_value: (size > 0).then_some(size),
        dim_param: (size <= 0).then(|| "batch".to_string()),
    };
    proto::ValueInfo {
        name: name.into(),
        r#type: Some(proto::Type {
            tensor_type: Some(proto::TensorType {
                elem_type: proto::FLOAT,
                shape: Some(proto::Shape {
                    dim: dims.iter().map(|&d| dim(d)).collect(),
                }),
            }),
        }),
    }
}

/// A model of `nodes` from `input` (dimensions after the batch) to the last node's output.
fn model(
    input: &[i64],
    nodes: Vec<proto::Node>,
    weights: Vec<proto::Tensor>,
    opset: i64,
) -> Vec<u8> {
    let output = nodes.last().expect("a node").output[0].clone();
    let input: Vec<i64> = [0].iter().chain(input).copied().collect();
    proto::Model {
        ir_version: 8,
        graph: Some(proto::Graph {
            node: nodes,
            initializer: weights,
            input: vec![value("x", &input)],
            output: vec![value(&output, &[0])],
            ..Default::default()
        }),
        opset_import: vec![proto::OperatorSetId {
            domain: String::new(),
            version: opset,
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

fn refused(bytes: &[u8]) -> String {
    import_bytes(bytes).expect_err("refused").to_string()
}

fn iota(len: usize) -> Vec<f32> {
    (0..len).map(|i| i as f32 / 10.0).collect()
}

#[test]
fn an_image_the_model_only_flattens_keeps_its_order() {
    // Keras's MNIST MLP as tf2onnx writes it: [batch, 28, 28, 1] flattened, no transposition.
    let bytes = model(
        &[4, 3, 2],
        vec![
            node("Flatten", &["x"], "flat", &[("axis", Attr::Int(1))]),
            node("Gemm", &["flat", "w", "b"], "y", &[]),
        ],
        vec![tensor("w", &[24, 5], iota(120)), tensor("b", &[5], iota(5))],
        17,
    );
    let imported = import_bytes(&bytes).unwrap();
    assert_eq!(imported.layer_list(""), "input(4, 3, 2)\nflatten\ndense(5)");
    let tensors = imported.tensors();
    assert_eq!(tensors[0].0, "dense1.weight");
    assert_eq!(tensors[0].2, iota(120), "rows in the model's order");
}

#[test]
fn a_flatten_of_nchw_values_reorders_the_dense_rows() {
    // [batch, c = 2, h = 1, w = 3] after a 1x1 convolution: CHW order into the dense layer.
    let bytes = model(
        &[2, 1, 3],
        vec![
            node(
                "Conv",
                &["x", "k"],
                "c",
                &[("kernel_shape", Attr::Ints(&[1, 1]))],
            ),
            node("Flatten", &["c"], "flat", &[]),
            node("Gemm", &["flat", "w"], "y", &[("transB", Attr::Int(1))]),
        ],
        vec![
            tensor("k", &[2, 2, 1, 1], vec![1.0, 0.0, 0.0, 1.0]),
            tensor("w", &[1, 6], iota(6)),
        ],
        17,
    );
    let imported = import_bytes(&bytes).unwrap();
    let list = imported.layer_list("");
    assert_eq!(list, "input(1, 3, 2)\nconv(2, 1)\nflatten\ndense(1)");
    let dense = &imported.tensors()[2];
    // constnet's row (pixel p, channel c) is the model's column c·3 + p.
    assert_eq!(dense.2, vec![0.0, 0.3, 0.1, 0.4, 0.2, 0.5]);
}

#[test]
fn a_projection_on_a_shortcut_that_keeps_the_shape_is_refused() {
    let bytes = model(
        &[2, 3, 3],
        vec![
            node("Relu", &["x"], "r", &[]),
            node(
                "Conv",
                &["x", "k"],
                "p",
                &[("kernel_shape", Attr::Ints(&[1, 1]))],
            ),
            node("Add", &["r", "p"], "y", &[]),
        ],
        vec![tensor("k", &[2, 2, 1, 1], iota(4))],
        17,
    );
    let message = refused(&bytes);
    assert!(
        message.starts_with("node `y` (Add): adds a projection"),
        "{message}"
    );
}

#[test]
fn the_model_must_be_a_network() {
    let relu = || vec![node("Relu", &["x"], "y", &[])];
    assert!(refused(&model(&[4], relu(), vec![], 12)).contains("uses opset 12"));
    assert!(refused(&[0xff, 0x01, 0x02]).starts_with("not an ONNX model"));
    let cycle = vec![
        node("Relu", &["z"], "y", &[]),
        node("Relu", &["y"], "z", &[]),
    ];
    let message = refused(&model(&[4], cycle, vec![], 17));
    assert!(
        message.contains("reads `z`, which no earlier node makes"),
        "{message}"
    );
    let two_inputs = vec![node("Add", &["x", "x"], "y", &[])];
    let message = refused(&model(&[4], two_inputs, vec![], 17));
    assert!(message.contains("node `y` (Add)"), "{message}");
}

#[test]
fn windows_network_cannot_express_are_refused_by_node() {
    let conv = |attributes: &[(&str, Attr)], kernel: &[i64]| {
        let len = kernel.iter().product::<i64>() as usize;
        model(
            &[4, 6, 6],
            vec![node("Conv", &["x", "k"], "c", attributes)],
            vec![tensor("k", kernel, iota(len))],
            17,
        )
    };
    let grouped = conv(&[("group", Attr::Int(2))], &[4, 2, 3, 3]);
    assert!(refused(&grouped).contains("grouped convolution (2 groups"));
    let dilated = conv(&[("dilations", Attr::Ints(&[2, 2]))], &[4, 4, 3, 3]);
    assert!(refused(&dilated).contains("is dilated"));
    let lower = conv(&[("auto_pad", Attr::Text("SAME_LOWER"))], &[4, 4, 3, 3]);
    assert!(refused(&lower).contains("pads SAME_LOWER"));
    let pool = |attributes: &[(&str, Attr)]| {
        let mut all = vec![("kernel_shape", Attr::Ints(&[2, 2]))];
        all.extend_from_slice(attributes);
        model(
            &[4, 6, 6],
            vec![node("AveragePool", &["x"], "p", &all)],
            vec![],
            17,
        )
    };
    let counting = pool(&[
        ("pads", Attr::Ints(&[1, 1, 1, 1])),
        ("count_include_pad", Attr::Int(1)),
    ]);
    assert!(refused(&counting).contains("counts the padding"));
    assert!(refused(&pool(&[("ceil_mode", Attr::Int(1))])).contains("ceil_mode = 1"));
    let wide = pool(&[("pads", Attr::Ints(&[2, 2, 2, 2]))]);
    let message = refused(&wide);
    assert!(
        message.contains("as `avgpool`: a pad of 2 is more than half the pooling window"),
        "{message}"
    );
}
