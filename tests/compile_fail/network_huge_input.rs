// A network whose input or layers hold more values than a tensor can: a compile error spanned on
// the layer, not an overflow inside the macro.
constnet::network! {
    Huge<input(4294967296, 4294967296, 4294967296) flatten dense(10)>
}

constnet::network! {
    TooWide<input(65536, 65536, 2) flatten dense(10)>
}

constnet::network! {
    TooManyParams<input(100000) dense(100000)>
}

fn main() {}
