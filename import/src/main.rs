//! `constnet-import MODEL.onnx --name Net --out DIR`: writes `DIR/net.rs`, one `network!`
//! defining `pub Net<...>`, and `DIR/net.safetensors`, its weights.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Turns an ONNX model into a constnet `network!` and its weights.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The ONNX model (opset 13 or newer).
    model: PathBuf,
    /// The network's type name.
    #[arg(long, default_value = "Net")]
    name: String,
    /// Where to write `<name>.rs` and `<name>.safetensors` (in snake case).
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let source = args.model.file_name().map_or_else(
        || args.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let written = constnet_import::import_file(&args.model)
        .and_then(|imported| imported.write(&args.out, &args.name, &source));
    match written {
        Ok([rust, weights]) => {
            println!("wrote {} and {}", rust.display(), weights.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", args.model.display());
            ExitCode::FAILURE
        }
    }
}
