// A fractional number of units.
constnet::network! {
    Net<input(784) dense(12.5)>
}

fn main() {}
