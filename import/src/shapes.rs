//! The target of a `Reshape` whose shape is computed in the graph, as tf2onnx writes Keras's
//! `Flatten`: `Shape` of a value, then `Gather`, `Slice`, `Cast`, `Concat`, `Unsqueeze` and
//! `Squeeze` of that shape and constants. Evaluated on the dimensions the translation knows of
//! each value it has passed, the batch standing for itself ([`BATCH`]).

use std::collections::HashMap;

use crate::model::Model;

/// The batch size in an evaluated shape: known to be the batch, not its value.
pub const BATCH: i64 = i64::MIN;

/// Most operators one evaluation visits (a model's flatten visits about six): a bound on the
/// work a crafted graph of shape operators reading each other many times can ask for.
const MAX_VISITS: usize = 256;

/// Longest shape evaluated.
const MAX_RANK: usize = 16;

/// The value of the int64 tensor `name`, if `name` is a constant or is computed from constants
/// and the shapes in `known` by shape operators alone.
pub fn evaluate(model: &Model, known: &HashMap<String, Vec<i64>>, name: &str) -> Option<Vec<i64>> {
    evaluate_within(model, known, name, &mut MAX_VISITS.clone())
}

fn evaluate_within(
    model: &Model,
    known: &HashMap<String, Vec<i64>>,
    name: &str,
    visits: &mut usize,
) -> Option<Vec<i64>> {
    *visits = visits.checked_sub(1)?;
    if let Some(constant) = model.constant(name) {
        return (constant.ints.len() <= MAX_RANK).then(|| constant.ints.clone());
    }
    let node = &model.nodes[model.producer(name)?];
    let mut input = |index: usize| {
        let name = node.input.get(index).filter(|n| !n.is_empty())?;
        evaluate_within(model, known, name, visits)
    };
    let value = match node.op_type.as_str() {
        "Shape" => known.get(node.input.first()?)?.clone(),
        "Cast" | "Unsqueeze" | "Squeeze" | "Identity" => input(0)?,
        "Gather" => {
            let data = input(0)?;
            let axis = attribute(node, "axis").unwrap_or(0);
            if axis != 0 {
                return None;
            }
            input(1)?
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + data.len() as i64 } else { i };
                    data.get(usize::try_from(i).ok()?).copied()
                })
                .collect::<Option<Vec<i64>>>()?
        }
        "Slice" => {
            let data = input(0)?;
            let (starts, ends) = (input(1)?, input(2)?);
            let axes_ok = node.input.get(3).is_none_or(|a| a.is_empty()) || input(3)? == [0];
            let steps_ok = node.input.get(4).is_none_or(|s| s.is_empty()) || input(4)? == [1];
            let ([start], [end], true, true) = (&starts[..], &ends[..], axes_ok, steps_ok) else {
                return None;
            };
            let clamp = |i: i64| {
                let len = data.len() as i64;
                (if i < 0 { i + len } else { i }).clamp(0, len) as usize
            };
            let (start, end) = (clamp(*start), clamp(*end));
            data.get(start..end.max(start))?.to_vec()
        }
        "Concat" => {
            let mut joined = Vec::new();
            for index in 0..node.input.len() {
                joined.extend(input(index)?);
                if joined.len() > MAX_RANK {
                    return None;
                }
            }
            joined
        }
        _ => return None,
    };
    Some(value)
}

fn attribute(node: &constnet_onnx_proto::Node, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}
