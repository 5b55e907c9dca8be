// softmax must be the last layer.
constnet::network! {
    Net<input(784) dense(128) softmax dense(10)>
}

fn main() {}
