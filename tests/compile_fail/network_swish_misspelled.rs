// A misspelled layer kind is matched to the closest one.
constnet::network! {
    Net<input(16) dense(8) swsh dense(2)>
}

fn main() {}
