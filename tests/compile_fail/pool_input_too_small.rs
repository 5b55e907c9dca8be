// A 3x3 pooling window cannot fit a 2x2 input.
use constnet::layers::MaxPool2d;
use constnet::Hwc;

fn main() {
    let _pool = MaxPool2d::<Hwc<2, 2, 16>, Hwc<1, 1, 16>, 3>::new();
}
