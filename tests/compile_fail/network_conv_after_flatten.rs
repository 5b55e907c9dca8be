// A convolution cannot follow flatten.
constnet::network! {
    Net<input(28, 28, 1) flatten conv(32, 3) dense(10)>
}

fn main() {}
