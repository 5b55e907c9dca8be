//! Nothing but tests: `tests/roundtrip.rs` exports networks to ONNX and runs them in tract.
