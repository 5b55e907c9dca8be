//! An int8 network takes the input shape of its f32 network, and no other.

use constnet::prelude::*;

network! {
    pub Digits<input(28, 28, 1) conv(8, 3) relu maxpool(2) flatten dense(10) softmax>
}

fn main() {
    let network = Digits::new(0);
    let int8 = Quantized::calibrate(&network, &Batch::zeros(4)).unwrap();
    let mut workspace = QuantizedWorkspace::default();
    let _ = int8.infer(&Batch::<Flat<784>>::zeros(1), &mut workspace);
}
