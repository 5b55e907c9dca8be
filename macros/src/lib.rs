//! The `network!` procedural macro of constnet.
//!
//! It will parse a layer list, infer every shape at expansion time and generate a statically
//! shaped network built from `constnet-runtime` types. Until then this crate only reserves its
//! place in the workspace, so that the facade's public surface does not change when it lands.
