// A 5x5 kernel on the 4x4 output of the pool.
constnet::network! {
    Net<input(16, 16, 1) conv(32, 3) maxpool(3) conv(64, 5) flatten dense(10)>
}

fn main() {}
