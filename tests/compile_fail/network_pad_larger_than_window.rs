// A pooling's pad is at most half its window: a larger one makes windows of padding only.
constnet::network! {
    Net<input(28, 28, 1) conv(8, 3, padding = 1) maxpool(2, padding = 2) flatten dense(10)>
}

fn main() {}
