// A dropout rate of 1.5 drops more than everything.
constnet::network! {
    Net<input(784) dense(128) dropout(1.5) dense(10)>
}

fn main() {}
