//! Reading safetensors files given as input (shards, SAE weights, checkpoints, truth files):
//! opening them with "no such file" as bad input, parsing a whole file or only its header
//! (positioned reads, no map), and explaining in one line why a file is not valid
//! safetensors. A module of its own because every reader uses it, not only [`Shard`](super::Shard).

use std::path::Path;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

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
///
/// A file saeforge wrote carries digests of its tensors and header (`crate::digest`): they
/// are checked here, so every whole-file reader (checkpoints, SAE weights, sparsity, truth)
/// refuses a damaged file with one line naming the file and the tensor.
pub fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        Error::input(format!(
            "{}: {}",
            path.display(),
            explain(bytes, bytes.len() as u64, &e)
        ))
    })?;
    crate::digest::verify_file(path, bytes, &st)?;
    Ok(st)
}

/// Largest header safetensors accepts.
const MAX_HEADER: u64 = 100_000_000;

/// Read and validate a safetensors file's header through positioned reads (no map, no
/// tensor data read): the header bytes (length prefix included) and the parsed layout,
/// checked against the file's length `len` as `parse_safetensors` checks a whole file.
pub fn read_header(path: &Path, file: &std::fs::File, len: u64) -> Result<(Vec<u8>, Metadata)> {
    let bad = |bytes: &[u8], e: &safetensors::SafeTensorError| {
        Error::input(format!("{}: {}", path.display(), explain(bytes, len, e)))
    };
    let read = |n: u64| -> Result<Vec<u8>> {
        let mut b = vec![0u8; n as usize];
        crate::io::read_exact_at(file, &mut b, 0).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::DataChanged(format!(
                "{}: was truncated while being read (its header needs {n} bytes)",
                path.display()
            )),
            _ => Error::io(path, e),
        })?;
        Ok(b)
    };
    if len < 8 {
        let b = read(len)?;
        return Err(bad(&b, &safetensors::SafeTensorError::HeaderTooSmall));
    }
    let prefix = read(8)?;
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    let want = if n > MAX_HEADER { 8 } else { (8 + n).min(len) };
    let header = read(want)?;
    let meta = match SafeTensors::read_metadata(&header) {
        Ok((_, meta)) => meta,
        Err(safetensors::SafeTensorError::MetadataIncompleteBuffer) => {
            // The header is valid and describes data beyond itself, as it should: parse it
            // for the layout, then check the data's extent against the file's length.
            let meta: Metadata = serde_json::from_slice(&header[8..])
                .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
            let end = meta
                .tensors()
                .values()
                .map(|t| t.data_offsets.1 as u64)
                .max()
                .unwrap_or(0);
            if 8 + n + end != len {
                return Err(bad(
                    &header,
                    &safetensors::SafeTensorError::MetadataIncompleteBuffer,
                ));
            }
            meta
        }
        Err(e) => return Err(bad(&header, &e)),
    };
    Ok((header, meta))
}

/// The xxh3 digest of the bytes `start .. end`, read through `read(offset, buf)` in blocks
/// of at most 8 MiB, each block also handed to `each` (blocks start at `start` + a multiple
/// of 8 MiB, so whole elements of any dtype): a tensor hashed and scanned without holding
/// it in memory (a shard's fingerprint, `info` on a codes file).
pub fn digest_blocks(
    start: u64,
    end: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<()>,
    mut each: impl FnMut(&[u8]),
) -> Result<String> {
    let mut h = crate::digest::Stream::new();
    let mut buf = vec![0u8; (8usize << 20).min(end.saturating_sub(start) as usize)];
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        read(at, &mut buf[..n])?;
        h.update(&buf[..n]);
        each(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finish())
}

/// A tensor's name, dtype and shape.
pub type TensorLayout = (String, Dtype, Vec<usize>);

/// The tensors of a safetensors file (name, dtype, shape, in file order) and its length,
/// from its header alone.
pub fn describe(path: &Path) -> Result<(u64, Vec<TensorLayout>)> {
    let file = open_input(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let (_, meta) = read_header(path, &file, len)?;
    let list = meta
        .offset_keys()
        .into_iter()
        .filter_map(|n| {
            let v = meta.info(&n)?;
            Some((n.clone(), v.dtype, v.shape.clone()))
        })
        .collect();
    Ok((len, list))
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

/// Why a safetensors file is not valid, in one line. `bytes` holds the file's first bytes
/// (at least its header, when the file has one), `len` is the file's length.
fn explain(bytes: &[u8], len: u64, e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
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
