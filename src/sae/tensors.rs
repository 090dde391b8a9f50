//! Float tensors read from a dictionary's safetensors file, checked: present, of the
//! shape the layout needs, of a float dtype, finite. Shared by the SAELens reader
//! (`export`) and the other layouts' (`formats`).

use std::path::Path;

use crate::data::FloatType;
use crate::{Error, Result};

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

/// The safetensors dtype a SAELens cfg.json's "dtype" names ("float32", "torch.bfloat16",
/// ...); None for one saeforge does not read.
pub(crate) fn cfg_dtype(s: &str) -> Option<safetensors::Dtype> {
    match s.strip_prefix("torch.").unwrap_or(s) {
        "float32" | "float" => Some(safetensors::Dtype::F32),
        "float16" | "half" => Some(safetensors::Dtype::F16),
        "bfloat16" => Some(safetensors::Dtype::BF16),
        _ => None,
    }
}

/// Err naming the first of `names` in `st` whose dtype is not `want` (cfg.json's "dtype",
/// `said`). Missing tensors are left to [`take_tensor`].
pub(crate) fn same_dtype(
    st: &safetensors::SafeTensors,
    file: &Path,
    names: &[&str],
    want: safetensors::Dtype,
    said: &str,
) -> Result<()> {
    for name in names {
        if let Ok(v) = st.tensor(name)
            && v.dtype() != want
        {
            return Err(Error::input(format!(
                "{}: tensor {name:?} has dtype {:?}, but cfg.json says dtype {said:?} ({want:?})",
                file.display(),
                v.dtype()
            )));
        }
    }
    Ok(())
}
