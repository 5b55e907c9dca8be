//! Weights trained in PyTorch: a `state_dict` saved as safetensors
//! (`safetensors.torch.save_file(model.state_dict(), path)`), loaded into a generated network.
//!
//! Each of the network's layers with tensors takes the tensors of one PyTorch module: the
//! module's prefix (`0`, `features.3`, `fc1`) joined to the same tensor name (`weight`, `bias`,
//! `running_mean`, `running_var`), matched in order or by a map ([`TorchNames`]). Layouts are
//! converted: a convolution kernel from OIHW to HWIO, a depthwise one (`groups = channels`) from
//! `[C, 1, K, K]` to `[K, K, C]`, a linear weight from `[out, in]` to `[in, out]`, and, for the
//! first dense layer after an image is flattened, its inputs from PyTorch's channel-major order
//! (C, H, W) to constnet's channels-innermost one (H, W, C).
//! BatchNorm's `num_batches_tracked` counter has no counterpart and is skipped.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{WeightsError, f32_values, parse, read_bounded, visit_tensors};
use crate::catalogue::{LayerKind, TorchLayout};
use crate::network::Network;
use crate::shape::Shape;

/// How the modules of a PyTorch `state_dict` are matched to the network's layers.
#[derive(Clone, Copy, Debug)]
pub enum TorchNames<'a> {
    /// In order: the file's module prefixes, sorted as numbers where they are numbers
    /// (`features.2` before `features.10`) and as text elsewhere, paired one to one with the
    /// network's layers that have tensors, first to last. This is the order of an
    /// `nn.Sequential` and of modules named in order (`conv1`, `conv2`, `fc1`).
    InOrder,
    /// By name: `(pytorch_prefix, layer)` pairs, e.g. `("features.0", "conv1")`, one for each
    /// of the network's layers with tensors.
    Map(&'a [(&'a str, &'a str)]),
}

/// PyTorch's name for the tensors of its BatchNorm layers' update counter, which constnet has
/// no use for.
const BATCH_COUNTER: &str = "num_batches_tracked";

/// Loads a PyTorch `state_dict` saved as safetensors into `network`, converting layouts. If any
/// tensor is missing, extra, not `F32` or of another shape than the network's layer (in
/// PyTorch's layout), nothing is changed and the error lists each problem, naming both the
/// PyTorch tensor and the layer.
///
/// Each tensor's layout is its layer kind's in the catalogue
/// ([`LayerKind::torch_layout`](crate::catalogue::LayerKind::torch_layout)): convolution,
/// depthwise and linear weights are transposed, the rest taken as they are; the tensors of a
/// layer of one's own are told by their number of dimensions (four, a convolution kernel;
/// three, a depthwise kernel; two, a linear weight).
///
/// PyTorch's `BatchNorm2d` adds `eps = 1e-5` to the variance, constnet's `batchnorm` Keras's
/// `1e-3`: set the layer's `epsilon` to match the network the weights were trained in.
///
/// # Errors
/// [`WeightsError`]: the file cannot be read, is not safetensors, or does not fit.
pub fn load_pytorch<N: Network>(
    network: &mut N,
    path: impl AsRef<Path>,
    names: TorchNames<'_>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    // Room for the counters beside the network's own tensors.
    let counters = 8 * N::LAYERS.len() as u64;
    let bytes = read_bounded(path, 4 * (N::PARAMS + N::BUFFERS) as u64 + counters)?;
    let file = parse(&path.into(), &bytes)?;
    let mismatch = |problems| WeightsError::Mismatch {
        origin: path.into(),
        problems,
    };
    let tensors = network_tensors(network);
    let file_names: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|name| !name.ends_with(BATCH_COUNTER))
        .collect();
    let prefixes = match_prefixes(&tensors, &file_names, names).map_err(mismatch)?;
    let torch_name = |t: &NetworkTensor| format!("{}.{}", prefixes[t.layer()], t.param());
    let mut problems = Vec::new();
    let mut values: HashMap<&str, Vec<f32>> = HashMap::new();
    for tensor in &tensors {
        match read_tensor::<N>(&file, &torch_name(tensor), tensor) {
            Ok(converted) => {
                values.insert(&tensor.name, converted);
            }
            Err(problem) => problems.push(problem),
        }
    }
    let used: Vec<String> = tensors.iter().map(torch_name).collect();
    let mut extra: Vec<&str> = file_names
        .iter()
        .copied()
        .filter(|name| !used.iter().any(|u| u == name))
        .collect();
    extra.sort_unstable();
    problems.extend(
        extra
            .iter()
            .map(|name| format!("`{name}` matches no tensor of this network")),
    );
    if !problems.is_empty() {
        return Err(mismatch(problems));
    }
    let mut copy = |name: &str, target: &mut [f32]| target.copy_from_slice(&values[name]);
    network.visit_params_mut(&mut copy);
    network.visit_buffers_mut(&mut copy);
    Ok(())
}

/// The file's tensor `torch_name`, converted to `tensor`'s layout, or what keeps it from fitting.
fn read_tensor<N: Network>(
    file: &SafeTensors<'_>,
    torch_name: &str,
    tensor: &NetworkTensor,
) -> Result<Vec<f32>, String> {
    let layout = Layout::of::<N>(tensor);
    let torch_dims = layout.torch_dims(&tensor.dims);
    let name = &tensor.name;
    let Ok(view) = file.tensor(torch_name) else {
        return Err(format!(
            "`{torch_name}` {torch_dims:?} (for `{name}`) is missing"
        ));
    };
    if view.dtype() != Dtype::F32 {
        return Err(format!(
            "`{torch_name}` (for `{name}`) is {:?}, not F32",
            view.dtype()
        ));
    }
    if view.shape() != torch_dims.as_slice() {
        return Err(format!(
            "`{torch_name}` is {:?} in the file, but `{name}` needs {torch_dims:?} in PyTorch's \
             layout ({:?} in constnet's)",
            view.shape(),
            tensor.dims
        ));
    }
    Ok(layout.to_constnet(&f32_values(&view), &tensor.dims))
}

/// One tensor of the network: `layer.param`, its dimensions in constnet's layout, and the kind
/// of its layer.
struct NetworkTensor {
    name: String,
    dims: Vec<usize>,
    kind: LayerKind,
}

impl NetworkTensor {
    fn layer(&self) -> &str {
        self.name
            .split_once('.')
            .map_or(&self.name, |(layer, _)| layer)
    }

    fn param(&self) -> &str {
        self.name.split_once('.').map_or("", |(_, param)| param)
    }
}

/// Every parameter and buffer of `network`, in the order it visits them.
fn network_tensors<N: Network>(network: &N) -> Vec<NetworkTensor> {
    let kinds: HashMap<&str, LayerKind> = network
        .graph()
        .into_iter()
        .map(|node| (node.name, node.op))
        .collect();
    let mut tensors = Vec::new();
    let mut visit = |name: &str, dims: &[usize], _: &[f32]| {
        let layer = name.rsplit_once('.').map_or(name, |(layer, _)| layer);
        tensors.push(NetworkTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            kind: kinds.get(layer).copied().unwrap_or(LayerKind::Custom),
        })
    };
    visit_tensors(network, &mut visit);
    tensors
}

/// The PyTorch module prefix of each of the network's layers with tensors, or the problems
/// that keep them from matching.
fn match_prefixes<'f>(
    tensors: &[NetworkTensor],
    file_names: &[&'f str],
    names: TorchNames<'f>,
) -> Result<HashMap<String, &'f str>, Vec<String>> {
    let mut layers: Vec<&str> = Vec::new();
    for tensor in tensors {
        if !layers.contains(&tensor.layer()) {
            layers.push(tensor.layer());
        }
    }
    match names {
        TorchNames::InOrder => {
            let mut modules: Vec<&str> = Vec::new();
            for name in file_names {
                let module = name.rsplit_once('.').map_or("", |(module, _)| module);
                if !modules.contains(&module) {
                    modules.push(module);
                }
            }
            modules.sort_by(|a, b| natural_order(a, b));
            if modules.len() != layers.len() {
                return Err(vec![format!(
                    "the file has tensors for {} modules ({}) but the network has {} layers \
                     with tensors ({}); pass TorchNames::Map to pair them",
                    modules.len(),
                    modules.join(", "),
                    layers.len(),
                    layers.join(", ")
                )]);
            }
            Ok(layers
                .iter()
                .map(|layer| layer.to_string())
                .zip(modules)
                .collect())
        }
        TorchNames::Map(pairs) => {
            let prefixes: HashMap<String, &str> = pairs
                .iter()
                .map(|&(module, layer)| (layer.to_string(), module))
                .collect();
            let unmapped: Vec<String> = layers
                .iter()
                .filter(|layer| !prefixes.contains_key(**layer))
                .map(|layer| format!("layer `{layer}` has no PyTorch module in the map"))
                .collect();
            if unmapped.is_empty() {
                Ok(prefixes)
            } else {
                Err(unmapped)
            }
        }
    }
}

/// Dotted names compared part by part, as numbers where both parts are numbers.
fn natural_order(a: &str, b: &str) -> Ordering {
    let mut a_parts = a.split('.');
    let mut b_parts = b.split('.');
    loop {
        match (a_parts.next(), b_parts.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// How a tensor is laid out in PyTorch compared with constnet.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// The same (biases, batch normalisation's vectors).
    Same,
    /// A convolution kernel: PyTorch OIHW, constnet HWIO.
    Conv,
    /// A depthwise kernel: PyTorch `[C, 1, K, K]`, constnet `[K, K, C]`.
    Depthwise,
    /// A linear weight: PyTorch `[out, in]`, constnet `[in, out]`; with `image`, the inputs are
    /// a flattened `[h, w, c]` image, which PyTorch flattens channel-major.
    Dense { image: Option<[usize; 3]> },
}

impl Layout {
    /// The layout of `tensor` of network `N`: its layer kind's
    /// ([`LayerKind::torch_layout`]), a linear weight fed by a flattened image noting the
    /// image.
    fn of<N: Network>(tensor: &NetworkTensor) -> Self {
        let param = tensor.name.rsplit_once('.').map_or("", |(_, param)| param);
        match tensor.kind.torch_layout(param, tensor.dims.len()) {
            TorchLayout::Same => Layout::Same,
            TorchLayout::Conv => Layout::Conv,
            TorchLayout::Depthwise => Layout::Depthwise,
            TorchLayout::Linear => Layout::Dense {
                image: flattened_image::<N>(tensor.layer()),
            },
        }
    }

    /// The dimensions PyTorch stores for a tensor of constnet dimensions `dims`.
    fn torch_dims(self, dims: &[usize]) -> Vec<usize> {
        match self {
            Layout::Same => dims.to_vec(),
            Layout::Conv => vec![dims[3], dims[2], dims[0], dims[1]],
            Layout::Depthwise => vec![dims[2], 1, dims[0], dims[1]],
            Layout::Dense { .. } => vec![dims[1], dims[0]],
        }
    }

    /// `torch` (PyTorch's layout) in constnet's layout, of dimensions `dims`.
    fn to_constnet(self, torch: &[f32], dims: &[usize]) -> Vec<f32> {
        match self {
            Layout::Same => torch.to_vec(),
            Layout::Conv => {
                let [k_h, k_w, c_in, c_out] = [dims[0], dims[1], dims[2], dims[3]];
                let mut hwio = vec![0.0; torch.len()];
                for (at, value) in hwio.iter_mut().enumerate() {
                    let (kh, kw, ci, co) = (
                        at / (k_w * c_in * c_out),
                        at / (c_in * c_out) % k_w,
                        at / c_out % c_in,
                        at % c_out,
                    );
                    *value = torch[((co * c_in + ci) * k_h + kh) * k_w + kw];
                }
                hwio
            }
            Layout::Depthwise => {
                let [k_h, k_w, channels] = [dims[0], dims[1], dims[2]];
                let mut hwc = vec![0.0; torch.len()];
                for (at, value) in hwc.iter_mut().enumerate() {
                    let (kh, kw, c) = (at / (k_w * channels), at / channels % k_w, at % channels);
                    *value = torch[(c * k_h + kh) * k_w + kw];
                }
                hwc
            }
            Layout::Dense { image } => {
                let (inputs, outputs) = (dims[0], dims[1]);
                let mut in_out = vec![0.0; torch.len()];
                for (at, value) in in_out.iter_mut().enumerate() {
                    let (input, output) = (at / outputs, at % outputs);
                    let torch_input = match image {
                        Some([h, w, c]) => {
                            let (y, x, channel) = (input / (w * c), input / c % w, input % c);
                            (channel * h + y) * w + x
                        }
                        None => input,
                    };
                    *value = torch[output * inputs + torch_input];
                }
                in_out
            }
        }
    }
}

/// The `[h, w, c]` image whose flattening feeds dense layer `layer` of `N`, if its input is a
/// flattened image: the nearest image before it, with no dense layer in between (flatten,
/// dropout and activations keep the order of the values).
fn flattened_image<N: Network>(layer: &str) -> Option<[usize; 3]> {
    let index = N::LAYERS.iter().position(|info| info.name == layer)?;
    let image = |dims: &[usize]| <[usize; 3]>::try_from(dims).ok();
    for info in N::LAYERS[..index].iter().rev() {
        if info.output.len() == 3 {
            return image(info.output);
        }
        if info.spec.starts_with("dense") {
            return None;
        }
    }
    image(<N::Input as Shape>::DIMS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_prefixes_sort_as_numbers_where_they_are_numbers() {
        let mut modules = vec![
            "features.10",
            "classifier.1",
            "features.2",
            "fc1",
            "features.0",
        ];
        modules.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            modules,
            [
                "classifier.1",
                "fc1",
                "features.0",
                "features.2",
                "features.10"
            ]
        );
    }

    /// Each element lands where the layouts put it: conv `[o][i][h][w]` → `[h][w][i][o]`, dense
    /// `[out][in]` → `[in][out]`, a flattened image's inputs from (C, H, W) to (H, W, C).
    #[test]
    fn layouts_move_each_value_to_its_place() {
        let conv_dims = [2, 3, 4, 5];
        let torch: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let hwio = Layout::Conv.to_constnet(&torch, &conv_dims);
        assert_eq!(Layout::Conv.torch_dims(&conv_dims), [5, 4, 2, 3]);
        // HWIO [1][2][3][4] is OIHW [4][3][1][2].
        assert_eq!(
            hwio[((3 + 2) * 4 + 3) * 5 + 4],
            torch[((4 * 4 + 3) * 2 + 1) * 3 + 2]
        );

        let image = Layout::Dense {
            image: Some([2, 3, 4]),
        };
        let dense_dims = [24, 5];
        let torch: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let in_out = image.to_constnet(&torch, &dense_dims);
        assert_eq!(image.torch_dims(&dense_dims), [5, 24]);
        // constnet input (y 1, x 2, c 3) is PyTorch input (c 3, y 1, x 2), output 4.
        let constnet_input = (3 + 2) * 4 + 3;
        let torch_input = (3 * 2 + 1) * 3 + 2;
        assert_eq!(in_out[constnet_input * 5 + 4], torch[4 * 24 + torch_input]);
        let flat = Layout::Dense { image: None }.to_constnet(&torch, &dense_dims);
        assert_eq!(flat[constnet_input * 5 + 4], torch[4 * 24 + constnet_input]);
    }
}
