//! Trains the Keras MNIST network on real MNIST. Not built yet: training (data loading,
//! optimisers, `fit`) arrives with the training issue; until then this says so and fails.

fn main() {
    eprintln!(
        "constnet's MNIST example is not built yet: the runtime (layers and kernels) is in place, \
         the network! macro and training are not. See README.md, \"Status\"."
    );
    std::process::exit(1);
}
