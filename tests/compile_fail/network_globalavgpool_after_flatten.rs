// Global pooling reduces an image; a flat vector has no pixels to pool.
constnet::network! {
    Net<input(28, 28, 1) conv(8, 3) flatten globalavgpool dense(10)>
}

fn main() {}
