// GELU takes no arguments (its exact form is the only one).
constnet::network! {
    Net<input(16) dense(8) gelu(0.5) dense(2)>
}

fn main() {}
