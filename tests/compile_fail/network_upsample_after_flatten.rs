// Upsampling repeats pixels, so it needs an image: after `flatten` there is none.
constnet::network! {
    Net<input(8, 8, 1) conv(4, 3) flatten upsample(2) dense(10)>
}

fn main() {}
