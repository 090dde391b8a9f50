//! saeforge: sparse autoencoders trained on captured activations with hand-written WGSL
//! compute shaders on any adapter wgpu reaches, checked kernel by kernel against a plain
//! Rust reference (see DESIGN.md beside the repository for the contract).
//!
//! Layout: `gpu` owns the device, buffers and caches; `kernels` holds one launcher module
//! per shader family; `reference` holds the CPU twin of every launcher under the same name.

pub mod blas;
pub mod cli;
pub mod cpu_codes;
pub mod cpu_optim;
pub mod cpu_sparse;
pub mod data;
pub mod digest;
pub mod engine_choice;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod io;
pub mod kernels;
pub mod lock;
pub mod reference;
pub mod report;
pub mod sae;
pub mod stop;
pub mod sweep;
pub mod synth;
pub mod toy;

pub use error::{Error, Result};
