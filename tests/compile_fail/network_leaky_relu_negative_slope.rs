// A negative slope makes leaky ReLU non-monotonic; Keras refuses it too.
constnet::network! {
    Net<input(784) dense(128) leaky_relu(-0.1) dense(10)>
}

fn main() {}
