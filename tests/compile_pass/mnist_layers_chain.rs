// The Keras MNIST network composed by hand: every shape agrees, so it builds.
use constnet::init::seeded_rng;
use constnet::layers::*;
use constnet::{Batch, Flat, Hwc};

fn main() {
    let mut rng = seeded_rng(0);
    let net = Chain::new(
        Conv2d::<Hwc<28, 28, 1>, Hwc<26, 26, 32>, 3>::new(&mut rng),
        Chain::new(
            Relu::<Hwc<26, 26, 32>>::new(),
            Chain::new(
                Conv2d::<Hwc<26, 26, 32>, Hwc<24, 24, 64>, 3>::new(&mut rng),
                Chain::new(
                    Relu::<Hwc<24, 24, 64>>::new(),
                    Chain::new(
                        MaxPool2d::<Hwc<24, 24, 64>, Hwc<12, 12, 64>, 2>::new(),
                        Chain::new(
                            Flatten::<Hwc<12, 12, 64>, 9216>::new(),
                            Chain::new(
                                Dense::<9216, 128>::new(&mut rng),
                                Chain::new(Relu::<Flat<128>>::new(), Dense::<128, 10>::new(&mut rng)),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    );
    let mut logits = Batch::default();
    net.forward(
        &Batch::<Hwc<28, 28, 1>>::zeros(1),
        &mut logits,
        &mut Default::default(),
    );
    assert_eq!(logits.len(), 1);
}
