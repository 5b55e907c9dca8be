//! The MNIST network, written once: the training example (`examples/mnist.rs`) and the serving
//! program (`inference-only/`) both include this file, so the weights one saves are the weights
//! the other embeds.

constnet::network! {
    /// The network of the Keras MNIST example (`mnist_cnn.py`): 1,199,882 parameters.
    pub MnistCnn<input(28, 28, 1) conv(32, 3) relu conv(64, 3) relu maxpool(2) dropout(0.25)
                 flatten dense(128) relu dropout(0.5) dense(10) softmax>
}
