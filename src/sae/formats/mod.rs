//! Other trainers' dictionaries: which layout a path holds, and the readers and writers
//! that turn each into the one in-memory [`SaeModel`] every command works on.
//!
//! | layout | files | encoder |
//! |---|---|---|
//! | SAELens v6 (`export.rs`) | cfg.json, sae_weights.safetensors | standard, topk, jumprelu |
//! | EleutherAI sparsify ([`sparsify`]) | cfg.json, sae.safetensors | topk (+ optional W_skip) |
//! | Gemma Scope ([`gemma_scope`]) | params.npz | jumprelu, no b_dec subtraction |
//! | dictionary_learning | ae.pt (a torch pickle) | refused: `tools/dl2saelens.py` converts it |
//!
//! Detection is by the files present, so `eval`, `encode`, `steer` and `info` take any of
//! them where they take an SAE folder, and `saeforge convert` writes the SAELens or the
//! sparsify layout from any of them. A model whose encoder adds nothing before W_enc
//! (Gemma Scope, SAELens' `apply_b_dec_to_input = false`) has b_dec W_enc folded into b_enc
//! ([`SaeModel::fold_b_dec`]), so saeforge's one encoder (x - b_dec) W_enc + b_enc serves them all.

pub mod gemma_scope;
pub mod sparsify;

use std::path::Path;

use super::export::{CFG_FILE, SaeModel, WEIGHTS_FILE};
use crate::{Error, Result};

/// The layouts saeforge reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Saelens,
    Sparsify,
    GemmaScope,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Saelens => "SAELens",
            Layout::Sparsify => "sparsify",
            Layout::GemmaScope => "Gemma Scope",
        }
    }
}

/// What `path` holds: a folder of one of the layouts, or a Gemma Scope params.npz given
/// directly. A dictionary_learning checkpoint (ae.pt, or any .pt / .pth) is refused with
/// the way to convert it; anything else with the files that were expected.
pub fn detect(path: &Path) -> Result<Layout> {
    let refuse_pickle = |p: &Path| {
        Error::input(format!(
            "{}: a torch pickle (dictionary_learning's ae.pt) cannot be read without running Python code; convert it first with `python3 tools/dl2saelens.py {} OUT` (needs torch), then give OUT to saeforge",
            p.display(),
            p.display()
        ))
    };
    if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        return match ext {
            "npz" => Ok(Layout::GemmaScope),
            "pt" | "pth" => Err(refuse_pickle(path)),
            _ => Err(Error::input(format!(
                "{}: not an SAE (a file; expected a folder with cfg.json and sae_weights.safetensors (SAELens) or sae.safetensors (sparsify), or a Gemma Scope params.npz)",
                path.display()
            ))),
        };
    }
    if !path.is_dir() {
        return Err(Error::input(format!(
            "{}: not an SAE folder (no such folder)",
            path.display()
        )));
    }
    let has = |name: &str| path.join(name).is_file();
    if has(WEIGHTS_FILE) {
        Ok(Layout::Saelens)
    } else if has(sparsify::WEIGHTS_FILE) {
        Ok(Layout::Sparsify)
    } else if has(gemma_scope::PARAMS_FILE) {
        Ok(Layout::GemmaScope)
    } else if has("ae.pt") {
        Err(refuse_pickle(&path.join("ae.pt")))
    } else if has(CFG_FILE) {
        Err(Error::input(format!(
            "{}: not an SAE folder (no {WEIGHTS_FILE} (SAELens) or {} (sparsify) beside {CFG_FILE})",
            path.display(),
            sparsify::WEIGHTS_FILE
        )))
    } else {
        Err(Error::input(format!(
            "{}: not an SAE folder (no {CFG_FILE}; expected the SAELens layout: {CFG_FILE} and {WEIGHTS_FILE}; or sparsify's {CFG_FILE} and {}; or Gemma Scope's {})",
            path.display(),
            sparsify::WEIGHTS_FILE,
            gemma_scope::PARAMS_FILE
        )))
    }
}

/// Refuse an output `--{flag} OUT` that is one of the files of the SAE at `sae` (an input
/// of the command: writing there would replace the SAE's weights with codes or rows).
pub fn check_not_sae_file(flag: &str, out: &Path, sae: &Path) -> Result<()> {
    let Ok(o) = out.canonicalize() else {
        return Ok(()); // not there yet: not one of the SAE's files
    };
    let files = if sae.is_dir() {
        [
            CFG_FILE,
            WEIGHTS_FILE,
            super::export::SPARSITY_FILE,
            "config.json",
            sparsify::WEIGHTS_FILE,
            gemma_scope::PARAMS_FILE,
        ]
        .iter()
        .map(|n| sae.join(n))
        .chain([super::checkpoint::path(sae)])
        .collect()
    } else {
        vec![sae.to_path_buf()]
    };
    if files.iter().any(|f| f.canonicalize().is_ok_and(|f| f == o)) {
        return Err(Error::input(format!(
            "--{flag} {}: is a file of the SAE {} (an input of this command); write elsewhere",
            out.display(),
            sae.display()
        )));
    }
    Ok(())
}

/// Read the SAE at `path` in whichever layout it is (see [`detect`]).
pub fn load(path: &Path) -> Result<(Layout, SaeModel)> {
    let layout = detect(path)?;
    let model = match layout {
        Layout::Saelens => SaeModel::load_saelens(path)?,
        Layout::Sparsify => sparsify::load(path)?,
        Layout::GemmaScope => gemma_scope::load(path)?,
    };
    Ok((layout, model))
}

impl SaeModel {
    /// Load the SAE at `path` in any layout saeforge reads (SAELens, sparsify, Gemma
    /// Scope: see [`load`]).
    pub fn load(path: &Path) -> Result<SaeModel> {
        load(path).map(|(_, m)| m)
    }
}
