// A mistake inside a block is reported on the layer at fault, with the shape that reached it.
constnet::network! {
    Net<input(28, 28, 1) conv(8, 3) relu residual(dense(8) relu) flatten dense(10)>
}

fn main() {}
