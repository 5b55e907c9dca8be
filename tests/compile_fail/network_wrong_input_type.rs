// A generated network fed images of another shape.
use constnet::{Batch, Hwc};

constnet::network! {
    MnistMlp<input(28, 28, 1) flatten dense(128) relu dense(10)>
}

fn main() {
    let net = MnistMlp::new(0);
    let cifar_images = Batch::<Hwc<32, 32, 3>>::zeros(1);
    net.infer(&cifar_images, &mut MnistMlpWorkspace::new());
}
