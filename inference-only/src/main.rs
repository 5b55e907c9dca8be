//! A program that only runs a network, as a service embedding a trained classifier would:
//! constnet with `default-features = false`, so none of the crates for data files, downloads,
//! progress bars or weight files is built. It classifies a synthetic image (a bright vertical
//! bar) with a freshly initialised network and prints the class probabilities.

use constnet::prelude::*;

network! {
    /// A small CNN for 28x28 grey images.
    pub Classifier<input(28, 28, 1) conv(8, 3) relu maxpool(2) flatten dense(10) softmax>
}

fn main() {
    let net = Classifier::new(7);
    let image = Batch::<Hwc<28, 28, 1>>::from_fn(1, |i| if i % 28 == 14 { 1.0 } else { 0.0 });
    let mut workspace = ClassifierWorkspace::default();
    let probabilities = net.infer(&image, &mut workspace);
    let class = argmax(probabilities)[0];
    let sum: f32 = probabilities.as_slice().iter().sum();
    println!(
        "class {class}, probabilities {:.3?} (sum {sum:.4})",
        probabilities.as_slice()
    );
}
