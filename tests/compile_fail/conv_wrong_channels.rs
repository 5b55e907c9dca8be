// The second convolution expects 16 input channels but the first makes 32.
use constnet::init::seeded_rng;
use constnet::layers::{Chain, Conv2d};
use constnet::Hwc;

fn main() {
    let mut rng = seeded_rng(0);
    let _net = Chain::new(
        Conv2d::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>::new(&mut rng),
        Conv2d::<Hwc<26, 26, 16>, Hwc<24, 24, 64>, 3>::new(&mut rng),
    );
}
