// A 3x3 pool window on a 2x2 image.
constnet::network! {
    Net<input(2, 2, 8) maxpool(3) flatten dense(10)>
}

fn main() {}
