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
//! ([`fold_b_dec`]), so saeforge's one encoder (x - b_dec) W_enc + b_enc serves them all.

pub mod gemma_scope;
pub mod sparsify;

use std::path::Path;

use super::export::{CFG_FILE, SaeModel, WEIGHTS_FILE};
use crate::data::FloatType;
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

/// The values of a little-endian float tensor (`what` names it in errors) as f32, refusing
/// non-finite values: every reader's last step.
pub(crate) fn to_f32(what: &dyn Fn() -> String, ft: FloatType, raw: &[u8]) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; raw.len() / ft.bytes()];
    crate::data::convert(ft, raw, &mut out);
    finite(what, out)
}

/// `values`, or Err naming (`what`) the first non-finite one.
pub(crate) fn finite(what: &dyn Fn() -> String, values: Vec<f32>) -> Result<Vec<f32>> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::input(format!(
            "{} element {i} is {}",
            what(),
            values[i]
        ))),
        None => Ok(values),
    }
}

/// A float tensor of a safetensors file, checked against the shape the layout needs
/// (`source` says where that shape comes from, e.g. "cfg.json (d_in 8, d_sae 16)").
pub(crate) fn take_tensor(
    st: &safetensors::SafeTensors,
    file: &Path,
    name: &str,
    shape: &[usize],
    source: &str,
) -> Result<Vec<f32>> {
    let view = st.tensor(name).map_err(|_| {
        Error::input(format!(
            "{}: missing tensor {name:?} {shape:?}",
            file.display()
        ))
    })?;
    if view.shape() != shape {
        return Err(Error::input(format!(
            "{}: tensor {name:?} has shape {:?}; {source} needs {shape:?}",
            file.display(),
            view.shape()
        )));
    }
    let ft = match view.dtype() {
        safetensors::Dtype::F32 => FloatType::F32,
        safetensors::Dtype::F16 => FloatType::F16,
        safetensors::Dtype::BF16 => FloatType::Bf16,
        other => {
            return Err(Error::input(format!(
                "{}: tensor {name:?} has dtype {other:?}; expected F32, F16 or BF16",
                file.display()
            )));
        }
    };
    to_f32(
        &|| format!("{}: tensor {name:?}", file.display()),
        ft,
        view.data(),
    )
}

/// Err naming the first tensor of `st` that is not in `expected`.
pub(crate) fn no_extra_tensors(
    st: &safetensors::SafeTensors,
    file: &Path,
    what: &str,
    expected: &[&str],
) -> Result<()> {
    match st.names().into_iter().find(|n| !expected.contains(n)) {
        Some(name) => Err(Error::input(format!(
            "{}: unexpected tensor {name:?} for {what} (expected {})",
            file.display(),
            expected.join(", ")
        ))),
        None => Ok(()),
    }
}

/// An encoder that computes x W_enc + b_enc (no b_dec subtracted first) as saeforge's
/// (x - b_dec) W_enc + b_enc: b_enc += b_dec W_enc, summed in f64 and rounded once.
pub(crate) fn fold_b_dec(m: &mut SaeModel) {
    let (d, n) = (m.d, m.n);
    for (j, b) in m.b_enc.iter_mut().enumerate() {
        let shift: f64 = (0..d)
            .map(|i| m.b_dec[i] as f64 * m.w_enc[i * n + j] as f64)
            .sum();
        *b = (*b as f64 + shift) as f32;
    }
}

/// The transpose of a (rows, cols) row-major matrix.
pub(crate) fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}
