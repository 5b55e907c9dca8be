// dense needs a flat input: flatten is missing.
constnet::network! {
    Net<input(28, 28, 1) conv(32, 3) relu maxpool(2) dense(128) dense(10)>
}

fn main() {}
