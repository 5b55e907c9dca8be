// Every wrong layer is reported in one compile, each with the shape that reached it. The dense
// layer after the first error fixes the shape again, so the second shape error is found too;
// the arguments of every layer are checked whatever the shapes.
constnet::network! {
    Net<input(28, 28, 1) conv(32, 3) dense(64) relu conv(8, 3) dropout(1.5) dense(10)
        maxpool(2) softmax>
}

fn main() {}
