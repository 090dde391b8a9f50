//! One safetensors shard, memory-mapped, with its activation tensor located and checked.

use std::path::{Path, PathBuf};

use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// Floating dtypes we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    F32,
    F16,
    Bf16,
}

impl FloatType {
    pub fn bytes(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::Bf16 => 2,
        }
    }
    pub fn safetensors(self) -> Dtype {
        match self {
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::Bf16 => Dtype::BF16,
        }
    }
    fn from_safetensors(d: Dtype) -> Option<Self> {
        match d {
            Dtype::F32 => Some(FloatType::F32),
            Dtype::F16 => Some(FloatType::F16),
            Dtype::BF16 => Some(FloatType::Bf16),
            _ => None,
        }
    }
}

/// A validated shard: `rows` rows of `d` values of `dtype`, starting at byte `start`.
pub struct Shard {
    pub path: PathBuf,
    pub tensor: String,
    pub dtype: FloatType,
    /// Shape as stored ([tokens, d] or [batch, seq, d]).
    pub shape: Vec<usize>,
    pub rows: usize,
    pub d: usize,
    mmap: Mmap,
    start: usize,
}

/// Files saeforge itself writes that are never activation shards, skipped when a folder is
/// given (a `synth` folder holds its shards and truth.safetensors side by side).
pub const NOT_SHARDS: [&str; 4] = [
    "truth.safetensors",
    "sae_weights.safetensors",
    "sparsity.safetensors",
    "state.safetensors",
];

/// Expand files, folders (their *.safetensors, sorted, minus `NOT_SHARDS`) and glob
/// patterns into shard paths.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let s = input.to_string_lossy();
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::io(input, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|f| NOT_SHARDS.iter().any(|n| f == *n))
                })
                .collect();
            if found.is_empty() {
                return Err(Error::input(format!(
                    "{}: folder holds no *.safetensors files",
                    input.display()
                )));
            }
            found.sort();
            out.extend(found);
        } else if input.is_file() {
            out.push(input.clone());
        } else if s.contains(['*', '?', '[']) {
            let paths =
                glob::glob(&s).map_err(|e| Error::input(format!("{s}: bad glob pattern: {e}")))?;
            let mut found: Vec<PathBuf> = paths
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            if found.is_empty() {
                return Err(Error::input(format!("{s}: glob matches no files")));
            }
            found.sort();
            out.extend(found);
        } else {
            return Err(Error::input(format!(
                "{}: no such file or folder",
                input.display()
            )));
        }
    }
    if out.is_empty() {
        return Err(Error::input("no input shards given"));
    }
    Ok(out)
}

impl Shard {
    /// Map and validate one shard; `tensor` picks the tensor when there are several.
    pub fn open(path: &Path, tensor: Option<&str>) -> Result<Shard> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bad = |msg: String| Error::input(format!("{}: {msg}", path.display()));
        if len < 8 {
            return Err(bad(format!(
                "not a safetensors file ({len} bytes; a header length alone needs 8)"
            )));
        }
        // SAFETY: the file is opened read-only; a shard changed by another process while we
        // train is outside what we support (as for every mmap-based reader).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let mut floats: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (name, view) in st.iter() {
            names.push(name.to_string());
            if FloatType::from_safetensors(view.dtype()).is_some()
                && matches!(view.shape().len(), 2 | 3)
            {
                floats.push((name.to_string(), view));
            }
        }
        names.sort();
        let (name, view) = match tensor {
            Some(t) => {
                let view = st.tensor(t).map_err(|_| {
                    bad(format!(
                        "--tensor {t:?} not found (tensors: {})",
                        names.join(", ")
                    ))
                })?;
                (t.to_string(), view)
            }
            None => match floats.len() {
                1 => floats.remove(0),
                0 => {
                    let any = st.iter().next();
                    return Err(match any {
                        Some((n, v)) if FloatType::from_safetensors(v.dtype()).is_none() => {
                            bad(format!(
                                "tensor {n:?} has dtype {:?}; expected F32, F16 or BF16",
                                v.dtype()
                            ))
                        }
                        Some((n, v)) => bad(format!(
                            "tensor {n:?} has rank {} (shape {:?}); expected [tokens, d] or [batch, seq, d]",
                            v.shape().len(),
                            v.shape()
                        )),
                        None => bad("holds no tensors".into()),
                    });
                }
                _ => {
                    let mut f: Vec<&str> = floats.iter().map(|(n, _)| n.as_str()).collect();
                    f.sort();
                    return Err(bad(format!(
                        "{} floating tensors ({}); pick one with --tensor",
                        f.len(),
                        f.join(", ")
                    )));
                }
            },
        };
        let dtype = FloatType::from_safetensors(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor {name:?} has dtype {:?}; expected F32, F16 or BF16",
                view.dtype()
            ))
        })?;
        let shape = view.shape().to_vec();
        if !matches!(shape.len(), 2 | 3) {
            return Err(bad(format!(
                "tensor {name:?} has rank {} (shape {shape:?}); expected [tokens, d] or [batch, seq, d]",
                shape.len()
            )));
        }
        let d = *shape.last().unwrap();
        let rows: usize = shape[..shape.len() - 1].iter().product();
        if d == 0 {
            return Err(bad(format!("tensor {name:?} has d = 0 (shape {shape:?})")));
        }
        if rows == 0 {
            return Err(bad(format!(
                "tensor {name:?} has zero rows (shape {shape:?})"
            )));
        }
        let start = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
        if view.data().len() != rows * d * dtype.bytes() {
            return Err(bad(format!(
                "tensor {name:?}: {} data bytes for shape {shape:?} of {dtype:?}",
                view.data().len()
            )));
        }
        drop(st);
        Ok(Shard {
            path: path.to_path_buf(),
            tensor: name,
            dtype,
            shape,
            rows,
            d,
            mmap,
            start,
        })
    }

    /// The raw bytes of rows `start .. start + count`.
    pub fn row_bytes(&self, start: usize, count: usize) -> &[u8] {
        let w = self.d * self.dtype.bytes();
        &self.mmap[self.start + start * w..self.start + (start + count) * w]
    }

    /// Convert rows `start .. start + count` into `out` (count * d f32).
    pub fn read_rows(&self, start: usize, count: usize, out: &mut [f32]) {
        convert(self.dtype, self.row_bytes(start, count), out);
    }
}

/// Little-endian f32 / f16 / bf16 bytes -> f32, through `half`'s slice conversion.
pub fn convert(dtype: FloatType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        FloatType::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(s) => out.copy_from_slice(s),
            Err(_) => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        },
        FloatType::F16 => match bytemuck::try_cast_slice::<u8, half::f16>(bytes) {
            Ok(s) => s.convert_to_f32_slice(out),
            Err(_) => {
                let v: Vec<half::f16> = bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                v.convert_to_f32_slice(out)
            }
        },
        FloatType::Bf16 => match bytemuck::try_cast_slice::<u8, half::bf16>(bytes) {
            Ok(s) => s.convert_to_f32_slice(out),
            Err(_) => {
                let v: Vec<half::bf16> = bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                    .collect();
                v.convert_to_f32_slice(out)
            }
        },
    }
}

/// Open and validate every shard; all must share d.
pub fn open_shards(paths: &[PathBuf], tensor: Option<&str>) -> Result<Vec<Shard>> {
    let shards: Vec<Shard> = paths
        .iter()
        .map(|p| Shard::open(p, tensor))
        .collect::<Result<_>>()?;
    if let Some(first) = shards.first() {
        for s in &shards[1..] {
            if s.d != first.d {
                return Err(Error::input(format!(
                    "{}: tensor {:?} has d = {}, but {} has d = {}; all shards must share d",
                    s.path.display(),
                    s.tensor,
                    s.d,
                    first.path.display(),
                    first.d
                )));
            }
        }
    }
    Ok(shards)
}
