//! Sparse-code launchers (the `codes` module: shaders/codes.wgsl, codes_topk.wgsl and
//! codes_compact.wgsl), in three families:
//!
//! * [`selection`]: the k largest positive entries of each row of the pre-activations as CSR
//!   (TopK codes after ReLU, AuxK codes over the dead latents), and the dead-latent list.
//!   [`selection::topk_codes`] records the whole chain (block_max, topk_threshold, topk_candidates,
//!   topk_select, csr_scan, csr_pack) with its intermediates in per-device scratch buffers;
//!   each stage also has its own launcher so that tests can hold it to its CPU twin.
//!   The per-row stages run one invocation per row on software adapters and a workgroup
//!   per row on hardware GPUs ([`selection::RowPath`]; `topk_threshold_group`,
//!   `topk_candidates_group`, `topk_select_group`), where a few thousand rows alone would
//!   leave the GPU nearly idle.
//! * [`compaction`]: the entries a ReLU or JumpReLU keeps, as CSR
//!   ([`compaction::activation_codes`]; also on either [`selection::RowPath`]).
//! * [`batch_topk`]: BatchTopK over the whole batch from the same block maxima and
//!   candidate lists, selected among by `topk::batchtopk_chunks` (or over x when a list
//!   overflows; [`batch_topk::batchtopk_codes`]).
//!
//! The `*_from_bmax` chains start from block maxima the caller already has: those that
//! `gemm::gemm_block_max` writes in the encoder GEMM's epilogue, saving a pass over pre
//! (for JumpReLU the GEMM is given the [`compaction::threshold_offsets`]).
//!
//! Why not the radix select of `topk`: it needs a workgroup per row and dozens of barriers
//! (histogram levels, a bitonic sort of up to 1024 candidates), and each barrier splits the
//! shader on lavapipe. Here one pass over the row keeps the maximum of every block of 32
//! entries, a bit search over those maxima bounds the k-th value from below, and only the
//! blocks that reach the bound are read again: a few percent of the row at k = 32 of 16384.

use crate::gpu::{DType, Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Grid, Slot, Uniform, Wg};

pub use crate::reference::codes::{BLOCK, BLOCK_LISTED, CAND, blocks};

pub mod batch_topk;
pub mod compaction;
pub mod selection;

pub static SHADER: Shader = crate::shader!("codes", "codes_topk", "codes_compact");

/// Invocations per workgroup of the 1-D kernels (`WG`).
const WG: usize = 64;
/// The single workgroup of csr_scan / dead_list / key_init (`WG_SCAN`).
const WG_SCAN: usize = 256;
/// topk_select_row: lanes per row (`WG_ROW`); the row's 32 bit-search passes run over
/// chunks of n / WG_ROW, within lavapipe's 65535-iterations-per-invocation loop limit.
const WG_ROW: usize = 64;

/// key_hist: keys per invocation (`KEY_EPT`); a workgroup histograms WG * KEY_EPT keys.
const KEY_EPT: usize = 32;

crate::uniform! {
    struct Params {
        rows: u32, n: u32, k: u32, nb: u32,
        has_cols: u32, cap: u32, dead_after: u32, block: u32,
        has_off: u32, eps: f32, shift: u32, last: u32,
        row0: u32, _pad: [u32; 3],
    }
}

const fn codes(name: &'static str, binds: &'static [Slot], wg: usize, grid: Grid) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .consts(&[
            ("WG", WG as f64),
            ("WG_SCAN", WG_SCAN as f64),
            ("WG_ROW", WG_ROW as f64),
            ("KEY_EPT", KEY_EPT as f64),
        ])
        .wg(Wg::Fixed(wg as u32))
        .grid(grid)
}

/// A 1-D kernel: `WG` invocations per workgroup, one per item.
const fn one_d(name: &'static str, binds: &'static [Slot]) -> Entry {
    codes(name, binds, WG, Grid::Items)
}

/// A single workgroup of `WG_SCAN` invocations.
const fn single(name: &'static str, binds: &'static [Slot]) -> Entry {
    codes(name, binds, WG_SCAN, Grid::Single)
}

/// Every entry point of the codes module (shaders/codes*.wgsl).
pub static ENTRIES: &[&Entry] = &[
    &selection::BLOCK_MAX,
    &selection::BLOCK_MAX_VEC4,
    &selection::TOPK_THRESHOLD,
    &selection::TOPK_THRESHOLD_VEC4,
    &selection::TOPK_CANDIDATES,
    &selection::TOPK_CANDIDATES_VEC4,
    &selection::TOPK_SELECT,
    &selection::TOPK_SELECT_ROW,
    &selection::TOPK_THRESHOLD_GROUP,
    &selection::TOPK_CANDIDATES_GROUP,
    &selection::TOPK_SELECT_GROUP,
    &selection::CSR_SCAN,
    &selection::CSR_PACK,
    &selection::DEAD_LIST,
    &compaction::THRESHOLD_OFFSETS,
    &compaction::COMPACT_COUNT,
    &compaction::COMPACT_COUNT_VEC4,
    &compaction::COMPACT_WRITE,
    &compaction::COMPACT_WRITE_VEC4,
    &compaction::COMPACT_COUNT_GROUP,
    &compaction::COMPACT_WRITE_GROUP,
    &batch_topk::KEY_INIT,
    &batch_topk::KEY_HIST,
    &batch_topk::KEY_FIND,
    &batch_topk::CSR_ROWS,
];

/// (rows, n) of the pre-activations x.
fn matrix(kernel: &str, x: &GpuTensor) -> Result<(usize, usize)> {
    match x.shape[..] {
        [rows, n] if n > 0 && n <= u32::MAX as usize / 2 => Ok((rows, n)),
        _ => Err(Error::Internal(format!(
            "{kernel}: x has shape {:?}, expected (rows, n) with n >= 1",
            x.shape
        ))),
    }
}

fn params(rows: usize, n: usize, k: usize, block: usize, cols: bool) -> Params {
    Params {
        rows: rows as u32,
        n: n as u32,
        k: k as u32,
        nb: blocks(n, block) as u32,
        has_cols: cols as u32,
        block: block as u32,
        ..Default::default()
    }
}

fn expect_block(kernel: &str, block: usize) -> Result<()> {
    if block == 0 || block > 4096 {
        return Err(Error::Internal(format!(
            "{kernel}: block {block} must be in 1..=4096"
        )));
    }
    Ok(())
}

/// A per-device scratch tensor of `len` elements (`Gpu::scratch`; may be longer, the
/// stages see the first `len`): the chains of `selection` and `compaction`.
fn scratch(gpu: &Gpu, purpose: &'static str, dtype: DType, len: usize) -> Result<GpuTensor> {
    Ok(gpu.scratch(purpose, dtype, len)?.prefix(&[len]))
}

/// The named dimensions of the code stages over x: (rows, n), its blocks and CAND.
fn dims(rows: usize, n: usize, block: usize) -> [(&'static str, usize); 4] {
    [
        ("rows", rows),
        ("n", n),
        ("nb", blocks(n, block)),
        ("CAND", CAND),
    ]
}
