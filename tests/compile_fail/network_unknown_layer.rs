// A typo in a layer name.
constnet::network! {
    Net<input(28, 28, 1) conv(32, 3) maxpol(2) flatten dense(10)>
}

fn main() {}
