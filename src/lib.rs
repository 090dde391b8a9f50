//! saeforge: sparse autoencoders trained on captured activations with hand-written WGSL
//! compute shaders on any adapter wgpu reaches, checked kernel by kernel against a plain
//! Rust reference (see DESIGN.md beside the repository for the contract).
//!
//! Layout: `gpu` owns the device, buffers and caches; `kernels` holds one launcher module
//! per shader family; `reference` holds the CPU twin of every launcher under the same name.

pub mod blas;
pub mod cli;
pub mod cpu_activations;
pub mod cpu_codes;
pub mod cpu_matryoshka;
pub mod cpu_optim;
pub mod cpu_reduce;
pub mod cpu_sparse;
pub mod data;
pub mod digest;
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

/// The seed of a unit test's random inputs: SAEFORGE_TEST_SEED, else a fresh one (printed,
/// so that a failure can be replayed), as the integration tests' `tests/common` does.
#[cfg(test)]
pub(crate) fn test_seed() -> u64 {
    let s = std::env::var("SAEFORGE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("SAEFORGE_TEST_SEED={s}");
    s
}
