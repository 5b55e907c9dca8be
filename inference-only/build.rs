//! Puts the weights to build in where `include_bytes!` finds them: the file
//! `CONSTNET_MNIST_WEIGHTS` names (what `cargo run --release --example mnist -- --save FILE`
//! wrote), copied into `OUT_DIR`. Without it the program is built with no weights, and says so
//! when run.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=CONSTNET_MNIST_WEIGHTS");
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let embedded = PathBuf::from(out_dir).join("mnist_cnn.safetensors");
    match std::env::var_os("CONSTNET_MNIST_WEIGHTS") {
        Some(weights) => {
            let weights = PathBuf::from(weights);
            println!("cargo::rerun-if-changed={}", weights.display());
            if let Err(error) = std::fs::copy(&weights, &embedded) {
                println!(
                    "cargo::error=CONSTNET_MNIST_WEIGHTS={}: {error}",
                    weights.display()
                );
            }
        }
        None => {
            if let Err(error) = std::fs::write(&embedded, b"") {
                println!("cargo::error={}: {error}", embedded.display());
            }
        }
    }
}
