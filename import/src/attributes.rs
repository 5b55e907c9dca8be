//! A node's attributes by name, of the types ONNX writes them in.

use constnet_onnx_proto as proto;

/// An `ints` attribute.
pub fn ints(node: &proto::Node, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

/// An `int` attribute.
pub fn int(node: &proto::Node, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// A `float` attribute.
pub fn float(node: &proto::Node, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// A string attribute.
pub fn text(node: &proto::Node, name: &str) -> Option<String> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}
