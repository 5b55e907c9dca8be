// A dense layer fed 8 features where it expects 9.
use constnet::init::seeded_rng;
use constnet::layers::{Chain, Dense};

fn main() {
    let mut rng = seeded_rng(0);
    let _net = Chain::new(Dense::<4, 8>::new(&mut rng), Dense::<9, 2>::new(&mut rng));
}
