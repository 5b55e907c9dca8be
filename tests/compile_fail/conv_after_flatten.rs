// A convolution needs an image, but flatten made a vector.
use constnet::init::seeded_rng;
use constnet::layers::{Chain, Conv2d, Flatten};
use constnet::Hwc;

fn main() {
    let mut rng = seeded_rng(0);
    let _net = Chain::new(
        Flatten::<Hwc<12, 12, 64>, 9216>::new(),
        Conv2d::<Hwc<12, 12, 64>, Hwc<10, 10, 64>, 3>::new(&mut rng),
    );
}
