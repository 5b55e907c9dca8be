// conv needs both the number of filters and the kernel size.
constnet::network! {
    Net<input(28, 28, 1) conv(32) flatten dense(10)>
}

fn main() {}
