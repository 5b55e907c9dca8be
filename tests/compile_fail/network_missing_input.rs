// The input shape is missing.
constnet::network! {
    Net<conv(32, 3) flatten dense(10)>
}

fn main() {}
