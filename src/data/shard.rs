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
    /// " (sequence s, position p)" for row `row` of a [batch, seq, d] tensor, "" for
    /// [tokens, d]: error messages name the token a user can find in their capture.
    pub fn position_of(&self, row: usize) -> String {
        if self.shape.len() == 3 && self.shape[1] > 0 {
            let seq = self.shape[1];
            format!(" (sequence {}, position {})", row / seq, row % seq)
        } else {
            String::new()
        }
    }

    /// The one-line refusal of a NaN / Inf value at (row, col) for commands that must see
    /// every row (encode, steer): what it is, where, and how to proceed.
    pub fn nonfinite_error(&self, row: usize, col: usize, value: f32) -> crate::Error {
        crate::Error::input(format!(
            "{}: tensor {:?} row {row}{} column {col} is {value}; the SAE cannot encode it \
             (repair or drop the row; train's --skip-nonfinite skips such rows)",
            self.path.display(),
            self.tensor,
            self.position_of(row),
        ))
    }
    /// Map and validate one shard; `tensor` picks the tensor when there are several.
    pub fn open(path: &Path, tensor: Option<&str>) -> Result<Shard> {
        let file = open_input(path)?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bad = |msg: String| Error::input(format!("{}: {msg}", path.display()));
        if len < 8 {
            return Err(bad(format!(
                "not a safetensors file ({len} bytes; the header length alone needs 8)"
            )));
        }
        // SAFETY: the file is opened read-only; a shard changed by another process while we
        // train is outside what we support (as for every mmap-based reader).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = parse_safetensors(path, &mmap)?;
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
        if d == 0 {
            return Err(bad(format!("tensor {name:?} has d = 0 (shape {shape:?})")));
        }
        // d > 0 and safetensors checked the whole product, so this cannot overflow.
        let rows: usize = shape[..shape.len() - 1].iter().product();
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

/// Open a file named on the command line, with "no such file" as bad input rather than an
/// I/O failure.
pub fn open_input(path: &Path) -> Result<std::fs::File> {
    if path.is_dir() {
        return Err(Error::input(format!(
            "{}: is a folder, expected a safetensors file",
            path.display()
        )));
    }
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::input(format!("{}: no such file or folder", path.display()))
        }
        std::io::ErrorKind::PermissionDenied => {
            Error::input(format!("{}: permission denied", path.display()))
        }
        _ => Error::io(path, e),
    })
}

/// Read a whole input file (an SAE's weights, a checkpoint, a truth file), naming it.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_input(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Parse a safetensors file, explaining what is wrong in one line when it is not valid:
/// truncated (header or data), offsets that do not match the data, or not safetensors at all.
pub fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::input(format!("{}: {}", path.display(), explain(bytes, &e))))
}

/// Bytes per element of a safetensors dtype name (None for sub-byte or unknown ones).
fn dtype_bytes(name: &str) -> Option<u64> {
    Some(match name {
        "F64" | "I64" | "U64" | "C64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        _ => return None,
    })
}

/// (name, dtype, shape, [start, end]) of every tensor in a header that is valid JSON.
type HeaderEntry = (String, String, Vec<u64>, (u64, u64));

fn header_entries(bytes: &[u8]) -> Option<(u64, Vec<HeaderEntry>)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let v: serde_json::Value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let mut out = Vec::new();
    for (name, t) in v.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t.get("dtype")?.as_str()?.to_string();
        let shape = t
            .get("shape")?
            .as_array()?
            .iter()
            .map(|x| x.as_u64())
            .collect::<Option<Vec<u64>>>()?;
        let off = t.get("data_offsets")?.as_array()?;
        let (a, b) = (off.first()?.as_u64()?, off.get(1)?.as_u64()?);
        out.push((name.clone(), dtype, shape, (a, b)));
    }
    out.sort_by_key(|e| e.3);
    Some((n, out))
}

fn explain(bytes: &[u8], e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    let len = bytes.len() as u64;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match e {
        E::HeaderTooSmall => {
            format!("not a safetensors file ({len} bytes; the header length alone needs 8)")
        }
        E::HeaderTooLarge => format!(
            "not a safetensors file (its first 8 bytes give a header length of {} bytes, more than safetensors allows)",
            n.unwrap_or(0)
        ),
        E::InvalidHeaderLength => format!(
            "truncated or not a safetensors file (the header is {} bytes long, but the file holds only {len})",
            n.unwrap_or(0)
        ),
        E::InvalidHeader(_) => "not a safetensors file (its header is not UTF-8 text)".into(),
        E::InvalidHeaderDeserialization(err) => {
            format!("not a safetensors file (its header is not the expected JSON: {err})")
        }
        E::InvalidOffset(name) => format!(
            "header offsets don't match the data: tensor {name:?} does not start where the previous one ends"
        ),
        E::TensorInvalidInfo => {
            let bad = header_entries(bytes).and_then(|(_, es)| {
                es.into_iter().find_map(|(name, dtype, shape, (a, b))| {
                    let need = dtype_bytes(&dtype)?
                        .checked_mul(shape.iter().try_fold(1u64, |p, &x| p.checked_mul(x))?)?;
                    (b.checked_sub(a) != Some(need)).then(|| {
                        format!(
                            "header offsets don't match: tensor {name:?} spans bytes {a}..{b} ({} bytes), but shape {shape:?} of {dtype} needs {need}",
                            b.saturating_sub(a)
                        )
                    })
                })
            });
            bad.unwrap_or_else(|| {
                "header offsets don't match a tensor's shape and dtype".to_string()
            })
        }
        E::MetadataIncompleteBuffer => match header_entries(bytes) {
            Some((n, es)) => {
                let data_end = es.iter().map(|e| e.3.1).max().unwrap_or(0);
                let want = 8 + n + data_end;
                if want > len {
                    format!(
                        "truncated: the header describes {want} bytes, but the file holds only {len} (an interrupted copy or capture?)"
                    )
                } else {
                    format!(
                        "header offsets don't match the file: {} bytes after the last tensor's data",
                        len - want
                    )
                }
            }
            None => "header offsets don't match the file size".into(),
        },
        E::ValidationOverflow => "a tensor's shape is too large (its size overflows)".to_string(),
        other => format!("not a valid safetensors file: {other}"),
    }
}
