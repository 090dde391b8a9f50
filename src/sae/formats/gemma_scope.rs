//! Gemma Scope's params.npz: `W_enc` (d, n), `W_dec` (n, d), `b_enc` (n), `b_dec` (d) and
//! `threshold` (n), float32. Its JumpReLU encoder is pre = x W_enc + b_enc (b_dec is not
//! subtracted first), z = pre where pre > threshold; read here with b_dec W_enc folded into
//! b_enc (`SaeModel::fold_b_dec`), so saeforge's encoder gives the same codes. The archive is
//! read with `zip` and each member with `npyz`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sae::export::{SaeKind, SaeModel};
use crate::sae::tensors::finite;
use crate::{Error, Result};

pub const PARAMS_FILE: &str = "params.npz";

/// The tensors and the dimensions of their shapes ('d' and 'n').
const TENSORS: [(&str, &[char]); 5] = [
    ("W_enc", &['d', 'n']),
    ("W_dec", &['n', 'd']),
    ("b_enc", &['n']),
    ("b_dec", &['d']),
    ("threshold", &['n']),
];

/// Read params.npz (`path` is the file or a folder holding it).
pub fn load(path: &Path) -> Result<SaeModel> {
    let file: PathBuf = if path.is_dir() {
        path.join(PARAMS_FILE)
    } else {
        path.to_path_buf()
    };
    let bad = |msg: String| Error::input(format!("{}: {msg}", file.display()));
    let f = crate::data::open_input(&file)?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| bad(format!("not a readable .npz (zip) archive: {e}")))?;
    let mut arrays: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("member {i}: {e}")))?;
        let member = entry
            .name()
            .map_err(|e| bad(format!("member {i}: {e}")))?
            .to_string();
        let Some(name) = member.strip_suffix(".npy") else {
            return Err(bad(format!("member {member:?} is not a .npy array")));
        };
        let name = name.to_string();
        if !TENSORS.iter().any(|(t, _)| *t == name) {
            return Err(bad(format!(
                "unexpected array {name:?} for a Gemma Scope JumpReLU SAE (expected W_enc, W_dec, b_enc, b_dec, threshold)"
            )));
        }
        // The member's size, and the bytes its header takes (counted as npyz reads it), say
        // how many data bytes the archive holds for the array.
        let size = entry.size();
        let read = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let counted = Counted {
            inner: entry,
            read: read.clone(),
        };
        let npy = npyz::NpyFile::new(counted).map_err(|e| bad(format!("array {name:?}: {e}")))?;
        let header = read.get();
        let held = size.saturating_sub(header);
        if npy.order() != npyz::Order::C {
            return Err(bad(format!(
                "array {name:?} is in Fortran order; expected C order (numpy's default)"
            )));
        }
        let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
        let dtype = match npy.dtype() {
            npyz::DType::Plain(ts) => ts.to_string(),
            other => other.descr(),
        };
        let what = || format!("{}: array {name:?}", file.display());
        let item: u64 = if dtype == "<f8" { 8 } else { 4 };
        let needs = npy.len().saturating_mul(item);
        let truncated = |held: u64| {
            bad(format!(
                "array {name:?} is truncated: shape {shape:?} of {dtype} needs {needs} bytes of data, the archive holds {held}"
            ))
        };
        if matches!(dtype.as_str(), "<f4" | "<f8") && held < needs {
            return Err(truncated(held));
        }
        // A member shorter than its own zip entry says (a damaged archive): the bytes read.
        let short = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => truncated(read.get().saturating_sub(header)),
            _ => bad(format!("array {name:?}: {e}")),
        };
        let values = match dtype.as_str() {
            "<f4" => npy.into_vec::<f32>().map_err(short)?,
            "<f8" => npy
                .into_vec::<f64>()
                .map_err(short)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            other => {
                return Err(bad(format!(
                    "array {name:?} has dtype {other}; expected float32 (<f4) or float64 (<f8)"
                )));
            }
        };
        let values = finite(&what, values)?;
        arrays.insert(name, (shape, values));
    }
    let shape_of = |name: &str| {
        arrays
            .get(name)
            .map(|a| a.0.clone())
            .ok_or_else(|| bad(format!("missing array {name:?}")))
    };
    let w_enc_shape = shape_of("W_enc")?;
    let [d, n] = w_enc_shape[..] else {
        return Err(bad(format!(
            "array \"W_enc\" has shape {w_enc_shape:?}; expected (d_in, d_sae)"
        )));
    };
    if d == 0 || n == 0 {
        return Err(bad(format!("array \"W_enc\" has shape {w_enc_shape:?}")));
    }
    for (name, dims) in TENSORS {
        let want: Vec<usize> = dims.iter().map(|&c| if c == 'd' { d } else { n }).collect();
        let got = shape_of(name)?;
        if got != want {
            return Err(bad(format!(
                "array {name:?} has shape {got:?}; W_enc {w_enc_shape:?} needs {want:?}"
            )));
        }
    }
    let mut take = |name: &str| arrays.remove(name).map(|a| a.1).unwrap_or_default();
    let mut m = SaeModel {
        kind: SaeKind::Jumprelu,
        d,
        n,
        w_enc: take("W_enc"),
        b_enc: take("b_enc"),
        w_dec: take("W_dec"),
        b_dec: take("b_dec"),
        threshold: take("threshold"),
        skip: None,
        d_out: None,
    };
    m.fold_b_dec();
    Ok(m)
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}
