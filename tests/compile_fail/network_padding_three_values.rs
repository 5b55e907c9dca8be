// Explicit padding is one number or four: (top, bottom, left, right).
constnet::network! {
    Net<input(28, 28, 1) conv(8, 3, padding = (1, 1, 0)) flatten dense(10)>
}

fn main() {}
