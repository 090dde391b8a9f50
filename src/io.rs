//! Atomic output: every file is written to a temporary name in its final folder and renamed
//! into place, so a crash (or a full disk) never leaves a half-written file behind.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::{Error, Result};

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `bytes` to `path` atomically (temp file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform syncs folders).
        if let Some(Ok(d)) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(std::fs::File::open)
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Is `name` a temporary file of `write_atomic` (or of the plot writer)?
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Remove temporary files that a killed process left in `dir` (not recursive). Returns how
/// many were removed. Only names `write_atomic` makes are touched.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name)
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Memory this machine can still give (Linux: MemAvailable of /proc/meminfo), in bytes;
/// None where that is not known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuse work that needs more host memory than is available, naming what and how much
/// (an allocation failure would otherwise abort the process without a word).
pub fn check_host_memory(what: &str, bytes: u128, advice: &str) -> Result<()> {
    match available_memory() {
        Some(avail) if bytes > avail as u128 => {
            let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
            Err(Error::Device(format!(
                "{what} needs about {:.1} GiB of memory, but this machine has {:.1} GiB available; {advice}",
                gib(bytes),
                gib(avail as u128)
            )))
        }
        _ => Ok(()),
    }
}

/// Check, before any work, that `--flag path` names a file that can be written: its folder
/// exists and it is not itself a folder.
pub fn check_output_file(flag: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::input(format!(
            "--{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(Error::input(format!(
            "--{flag} {}: is a folder, expected a file name",
            path.display()
        )));
    }
    Ok(())
}

/// Create a folder (and parents), naming it in the error.
pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// A tensor to write: name, shape and its little-endian bytes in `dtype`.
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl OutTensor {
    pub fn f32(name: &str, shape: &[usize], data: &[f32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }
    pub fn u32(name: &str, shape: &[usize], data: &[u32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::U32,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }
    pub fn i64(name: &str, shape: &[usize], data: &[i64]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::I64,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }
    pub fn i32(name: &str, shape: &[usize], data: &[i32]) -> Self {
        OutTensor {
            name: name.into(),
            dtype: Dtype::I32,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }
    /// f32 data stored as f32, f16 or bf16.
    pub fn float(name: &str, shape: &[usize], data: &[f32], dtype: Dtype) -> Self {
        let bytes = match dtype {
            Dtype::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                bytemuck::cast_slice(&h).to_vec()
            }
            Dtype::BF16 => {
                let h: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
                bytemuck::cast_slice(&h).to_vec()
            }
            _ => bytemuck::cast_slice(data).to_vec(),
        };
        OutTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes,
        }
    }
}

/// Write a safetensors file atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[OutTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::Internal(format!("{}: tensor {}: {e}", path.display(), t.name)))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Write JSON atomically (pretty-printed, newline-terminated).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}
