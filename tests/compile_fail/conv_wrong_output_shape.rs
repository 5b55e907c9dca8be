// A valid 3x3 convolution of 28x28 makes 26x26, not 28x28.
use constnet::init::seeded_rng;
use constnet::layers::Conv2d;
use constnet::Hwc;

fn main() {
    let _conv = Conv2d::<Hwc<28, 28, 1>, Hwc<28, 28, 32>, 3>::new(&mut seeded_rng(0));
}
