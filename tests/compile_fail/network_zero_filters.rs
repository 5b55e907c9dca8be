// A convolution with no filters.
constnet::network! {
    Net<input(28, 28, 1) conv(0, 3) flatten dense(10)>
}

fn main() {}
