// Mean squared error fits a network that ends with a linear layer: after softmax, the outputs
// are probabilities, and the compiler refuses the pairing.
use constnet::prelude::*;

network! {
    Classifier<input(4) dense(8) relu dense(3) softmax>
}

fn main() {
    let data = Dataset::with_targets(Batch::<Flat<4>>::zeros(2), vec![[0.0; 3]; 2]).unwrap();
    let mut net = Classifier::new(0);
    let mut optimizer = OptimizerState::new(Sgd::new(0.1));
    let _ = fit_with(
        &mut net,
        MeanSquaredError,
        &mut optimizer,
        &data,
        Validation::None,
        &FitConfig::default(),
    );
}
