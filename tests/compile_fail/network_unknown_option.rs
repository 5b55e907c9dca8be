// A typo in an option name.
constnet::network! {
    Net<input(28, 28, 1) conv(32, 3, strid = 2) flatten dense(10)>
}

fn main() {}
