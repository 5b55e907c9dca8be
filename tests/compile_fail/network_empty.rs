// No layers at all.
constnet::network! {
    Net<>
}

fn main() {}
