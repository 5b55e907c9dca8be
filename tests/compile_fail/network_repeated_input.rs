// Two inputs.
constnet::network! {
    Net<input(784) dense(128) input(128) dense(10)>
}

fn main() {}
