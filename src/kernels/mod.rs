//! Kernel launchers: one module per shader family (shaders/<family>.wgsl), each function
//! named like its WGSL entry point and like its CPU twin in `crate::reference`. Launchers
//! check shapes, fill the parameter struct and record one or more dispatches into the
//! caller's encoder; they never submit or read back.

pub mod activations;
pub mod bench;
pub mod codes;
pub mod decl;
pub mod fista;
pub mod gemm;
pub mod matryoshka;
pub mod ops;
pub mod optim;
pub mod reduce;
pub mod rescale;
pub mod sparse;
pub mod topk;
pub mod toy;
pub mod toy_mlp;

/// The register-blocked GEMM (`GemmPath::Reg`), a path of the gemm family.
pub use gemm::reg as gemm_reg;

use crate::gpu::{GpuTensor, Shader};
use crate::{Error, Result};

/// Every shader, for validation tests and for warming the pipeline cache.
pub const SHADERS: &[&Shader] = &[
    &activations::SHADER,
    &bench::SHADER,
    &codes::SHADER,
    &fista::SHADER,
    &gemm::SHADER,
    &gemm::SUBGROUP_SHADER,
    &gemm::coop::SHADER,
    &gemm_reg::SHADER,
    &matryoshka::SHADER,
    &ops::SHADER,
    &optim::SHADER,
    &reduce::SHADER,
    &rescale::SHADER,
    &sparse::SHADER,
    &topk::SHADER,
    &toy::SHADER,
    &toy_mlp::SHADER,
];

/// Every declared entry point, for the contract test (tests/shaders.rs).
pub fn entries() -> Vec<&'static decl::Entry> {
    [
        codes::ENTRIES,
        gemm::ENTRIES,
        gemm_reg::ENTRIES,
        gemm::coop::ENTRIES,
        activations::ENTRIES,
        bench::ENTRIES,
        fista::ENTRIES,
        matryoshka::ENTRIES,
        ops::ENTRIES,
        optim::ENTRIES,
        reduce::ENTRIES,
        rescale::ENTRIES,
        topk::ENTRIES,
        toy::ENTRIES,
        toy_mlp::ENTRIES,
        sparse::ENTRIES,
    ]
    .concat()
}

/// Refuse a tensor whose shape is not the one a launcher needs.
pub(crate) fn expect_shape(kernel: &str, name: &str, t: &GpuTensor, shape: &[usize]) -> Result<()> {
    if t.shape != shape {
        return Err(Error::Internal(format!(
            "{kernel}: {name} has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    Ok(())
}

/// Refuse a tensor whose element count is not `len`.
pub(crate) fn expect_len(kernel: &str, name: &str, t: &GpuTensor, len: usize) -> Result<()> {
    if t.len() != len {
        return Err(Error::Internal(format!(
            "{kernel}: {name} has {} elements (shape {:?}), expected {len}",
            t.len(),
            t.shape
        )));
    }
    Ok(())
}
