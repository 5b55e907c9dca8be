// A negative number of units.
constnet::network! {
    Net<input(784) dense(-5)>
}

fn main() {}
