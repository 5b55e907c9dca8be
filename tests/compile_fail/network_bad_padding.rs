// padding is same, valid, a number, or (top, bottom, left, right).
constnet::network! {
    Net<input(28, 28, 1) conv(32, 3, padding = full) flatten dense(10)>
}

fn main() {}
