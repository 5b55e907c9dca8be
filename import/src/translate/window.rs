//! A convolution's or pooling's window as ONNX writes it (`kernel_shape`, `strides`, `pads`,
//! `auto_pad`, `dilations`) and as `network!` writes it (`3, stride = 2, padding = 1`).

use constnet_catalogue::{ArgValue, Padding, Pads};
use constnet_onnx_proto as proto;

use crate::ImportError;
use crate::attributes::{ints, text};
use crate::model::node_error;

/// A convolution's or pooling's window, as `network!` writes it.
pub(super) struct Window {
    pub(super) size: usize,
    pub(super) stride: usize,
    pub(super) padding: Padding,
}

impl Window {
    /// The `stride` and `padding` options as the grammar's entries declare them.
    pub(super) fn arguments(&self) -> Vec<Option<ArgValue>> {
        vec![
            Some(ArgValue::Int(self.stride)),
            Some(ArgValue::Padding(self.padding)),
        ]
    }

    /// `, stride = s, padding = p` where they differ from the layer's defaults.
    pub(super) fn options(&self, default_stride: usize) -> String {
        let padding = match self.padding {
            Padding::Valid => String::new(),
            padding => format!(", padding = {padding}"),
        };
        format!("{}{padding}", stride_text(self.stride, default_stride))
    }
}

pub(super) fn stride_text(stride: usize, default: usize) -> String {
    if stride == default {
        String::new()
    } else {
        format!(", stride = {stride}")
    }
}

/// A node's square window of `kh` x `kw` with its strides, pads and dilations.
pub(super) fn square_window(
    node: &proto::Node,
    kh: usize,
    kw: usize,
) -> Result<Window, ImportError> {
    if kh != kw || kh == 0 {
        return Err(node_error(
            node,
            format!("has a {kh}x{kw} window; `network!` windows are square"),
        ));
    }
    let strides = ints(node, "strides").unwrap_or(vec![1, 1]);
    let stride = match strides[..] {
        [s, t] if s == t && s >= 1 => s as usize,
        _ => {
            return Err(node_error(
                node,
                format!("has strides {strides:?}; they must be equal"),
            ));
        }
    };
    if ints(node, "dilations").is_some_and(|d| d.iter().any(|&d| d != 1)) {
        return Err(node_error(
            node,
            "is dilated; `network!` windows are not".into(),
        ));
    }
    let auto_pad = text(node, "auto_pad");
    let padding = match auto_pad.as_deref() {
        None | Some("NOTSET") => explicit_pads(node)?,
        Some("VALID") => Padding::Valid,
        Some("SAME_UPPER") => Padding::Same,
        Some(other) => {
            return Err(node_error(
                node,
                format!("pads {other}; import reads NOTSET, VALID and SAME_UPPER"),
            ));
        }
    };
    Ok(Window {
        size: kh,
        stride,
        padding,
    })
}

/// The `pads` attribute, `[top, left, bottom, right]` in ONNX.
pub(super) fn explicit_pads(node: &proto::Node) -> Result<Padding, ImportError> {
    let Some(pads) = ints(node, "pads") else {
        return Ok(Padding::Valid);
    };
    let [top, left, bottom, right] = pads[..] else {
        return Err(node_error(
            node,
            format!("has pads {pads:?}; a 2-D window has four"),
        ));
    };
    let pad = |p: i64| {
        usize::try_from(p).map_err(|_| node_error(node, format!("has a negative pad {p}")))
    };
    let pads = Pads {
        top: pad(top)?,
        bottom: pad(bottom)?,
        left: pad(left)?,
        right: pad(right)?,
    };
    Ok(if pads.is_zero() {
        Padding::Valid
    } else {
        Padding::Explicit(pads)
    })
}
