//! Calibration images of another size than the network's input do not compile.

use constnet::prelude::*;

network! {
    pub Digits<input(28, 28, 1) conv(8, 3) relu maxpool(2) flatten dense(10) softmax>
}

fn main() {
    let network = Digits::new(0);
    let colour_images = Batch::<Hwc<32, 32, 3>>::zeros(10);
    let _ = Quantized::calibrate(&network, &colour_images);
}
