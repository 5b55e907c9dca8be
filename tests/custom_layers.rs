//! Layers of one's own in `network!`: `layer(T)` inserts any type implementing `Layer` and
//! `Build`, checked against its neighbours' shapes by the compiler. Its gradients flow through
//! the generated passes, and its parameters take part in training, freezing and weight files.

use constnet::gradcheck::GradCheck;
use constnet::init::{SeededRng, seeded_rng};
use constnet::layers::{
    Build, Layer, ParamSet, TensorVisitor, TensorVisitorMut, UpdateVisitor, WeightBias,
};
use constnet::prelude::*;
use constnet::rand::RngExt;

#[path = "support/swish.rs"]
mod swish;
use swish::Swish;

/// `y = x · weight[c] + bias[c]` per feature: a layer with parameters, initialised from the
/// network's generator.
#[derive(Clone, Debug)]
pub struct Affine<const N: usize> {
    params: WeightBias,
}

impl<const N: usize> Layer for Affine<N> {
    type Input = Flat<N>;
    type Output = Flat<N>;
    type Grads = WeightBias;
    type Cache = ();
    const PARAMS: usize = 2 * N;

    fn forward(&self, input: &Batch<Flat<N>>, output: &mut Batch<Flat<N>>, _cache: &mut ()) {
        output.resize(input.len());
        let rows = output
            .as_mut_slice()
            .chunks_mut(N)
            .zip(input.as_slice().chunks(N));
        for (y, x) in rows {
            for c in 0..N {
                y[c] = x[c] * self.params.weight[c] + self.params.bias[c];
            }
        }
    }

    fn backward(
        &self,
        input: &Batch<Flat<N>>,
        _output: &Batch<Flat<N>>,
        grad_output: &Batch<Flat<N>>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<Flat<N>>>,
        grads: &mut WeightBias,
    ) {
        grads.weight.fill(0.0);
        grads.bias.fill(0.0);
        for (x, dy) in input
            .as_slice()
            .chunks(N)
            .zip(grad_output.as_slice().chunks(N))
        {
            for c in 0..N {
                grads.weight[c] += x[c] * dy[c];
                grads.bias[c] += dy[c];
            }
        }
        if let Some(dx) = grad_input {
            dx.resize(input.len());
            let rows = dx
                .as_mut_slice()
                .chunks_mut(N)
                .zip(grad_output.as_slice().chunks(N));
            for (dx, dy) in rows {
                for c in 0..N {
                    dx[c] = dy[c] * self.params.weight[c];
                }
            }
        }
    }

    fn new_grads(&self) -> WeightBias {
        self.params.zeros_like()
    }
    fn visit_params(&self, visit: &mut TensorVisitor<'_>) {
        self.params.visit(visit);
    }
    fn visit_params_mut(&mut self, visit: &mut TensorVisitorMut<'_>) {
        self.params.visit_mut(visit);
    }
    fn update_params(&mut self, grads: &WeightBias, update: &mut UpdateVisitor<'_>) {
        self.params.zip_mut(grads, update);
    }
}

impl<const N: usize> Build for Affine<N> {
    fn build(rng: &mut SeededRng) -> Self {
        let dims: &'static [usize] = Box::leak(Box::new([N]));
        let mut params = WeightBias::zeros(dims, N);
        params
            .weight
            .iter_mut()
            .for_each(|w| *w = rng.random_range(0.5..1.5));
        Self { params }
    }
}

network! {
    /// Custom layers on an image and on a flat vector, between built-in ones.
    Custom<input(5, 5, 2) conv(3, 3) layer(Swish<Hwc<3, 3, 3>>) flatten dense(4)
           layer(Affine<4>) tanh dense(3) softmax>
}

fn noise<S: Shape>(samples: usize, seed: u64) -> Batch<S> {
    let mut rng = seeded_rng(seed);
    Batch::from_fn(samples, |_| rng.random_range(-1.0..1.0))
}

#[test]
fn custom_layers_are_named_counted_and_shown() {
    let names: Vec<&str> = Custom::LAYERS.iter().map(|layer| layer.name).collect();
    assert_eq!(
        names,
        [
            "conv1", "layer1", "flatten1", "dense1", "layer2", "tanh1", "dense2", "softmax1"
        ]
    );
    assert_eq!(Custom::LAYERS[1].spec, "layer(Swish<Hwc<3, 3, 3>>)");
    assert_eq!(Custom::LAYERS[4].params, 8);
    assert_eq!(
        Custom::PARAMS,
        (3 * 3 * 2 * 3 + 3) + (27 * 4 + 4) + 8 + (4 * 3 + 3)
    );
    let mut names = Vec::new();
    Custom::new(0).visit_params(&mut |name, _, _| names.push(name.to_string()));
    assert!(names.contains(&"layer2.weight".to_string()), "{names:?}");
    assert!(Custom::summary().contains("layer(Affine<4>)"));
}

#[test]
fn gradients_flow_through_custom_layers() {
    let report = GradCheck::default()
        .run(&Custom::new(3), &noise(3, 4))
        .unwrap_or_else(|mismatch| panic!("{mismatch}"));
    let checked: Vec<&str> = report.tensors.iter().map(|(t, _)| t.as_str()).collect();
    assert!(checked.contains(&"layer2.weight"), "{checked:?}");
    assert!(checked.contains(&"layer2.bias"), "{checked:?}");
}

/// The same seed builds the same network, custom layers included; training moves their
/// parameters unless the layer is frozen; weight files carry them.
#[test]
fn custom_parameters_train_freeze_and_save() {
    let affine_weight = |net: &Custom| net.layer2.params.weight.clone();
    assert_eq!(
        affine_weight(&Custom::new(5)),
        affine_weight(&Custom::new(5))
    );
    let images = noise::<Hwc<5, 5, 2>>(24, 6);
    let labels = (0..24).map(|i| i % 3).collect();
    let data = Dataset::new(images, labels, 3).unwrap();
    let config = FitConfig {
        epochs: 2,
        batch_size: 8,
        verbose: false,
        ..FitConfig::default()
    };
    for frozen in [false, true] {
        let mut net = Custom::new(5);
        let before = affine_weight(&net);
        let mut optimizer = OptimizerState::new(Adam::default());
        if frozen {
            optimizer.freeze(&net, &["layer2"]).unwrap();
        }
        fit(&mut net, &mut optimizer, &data, Validation::None, &config).unwrap();
        assert_eq!(affine_weight(&net) == before, frozen, "frozen: {frozen}");
    }
    let mut trained = Custom::new(5);
    trained.layer2.params.weight[1] = 7.0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.safetensors");
    weights::save(&trained, &path).unwrap();
    let mut loaded = Custom::new(9);
    weights::load(&mut loaded, &path).unwrap();
    assert_eq!(affine_weight(&loaded), affine_weight(&trained));
}
