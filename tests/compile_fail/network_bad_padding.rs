// padding is same or valid.
constnet::network! {
    Net<input(28, 28, 1) conv(32, 3, padding = full) flatten dense(10)>
}

fn main() {}
