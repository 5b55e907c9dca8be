// The block keeps its input's shape, so the input is added as it is: a projection is a mistake.
constnet::network! {
    Net<input(14, 14, 8) residual(conv(8, 3, padding = same) relu, shortcut = project) flatten dense(10)>
}

fn main() {}
