// The block's layers double the channels and halve the image: `x + f(x)` has no meaning
// without a projection of `x`.
constnet::network! {
    Net<input(28, 28, 16) residual(conv(32, 3, stride = 2, padding = same) relu) globalavgpool dense(10)>
}

fn main() {}
