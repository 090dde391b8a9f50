//! One safetensors shard, with its activation tensor located and checked.
//!
//! Shards are read with positioned reads (pread) into buffers, except the loader's
//! one-row gathers, which copy from a memory map inside `guard::guarded`: a file truncated
//! under a plain mapped reader kills it with SIGBUS, while a short positioned read or a
//! guarded fault becomes an error naming the file. A shard's identity (size,
//! modification time, inode) is taken when it is opened, and readers check it after each
//! batch, so a shard truncated, rewritten, replaced or removed mid-run is an error too
//! ([`Error::DataChanged`]) rather than rows of two different files.

use std::path::{Path, PathBuf};

use half::slice::HalfFloatSliceExt;
use safetensors::Dtype;
use safetensors::tensor::Metadata;

use super::file::{open_input, read_header};
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
    /// File size in bytes when opened.
    pub file_len: u64,
    /// xxh3-64 of the header bytes (length prefix and JSON).
    pub header_digest: String,
    /// xxh3-64 of the activation tensor's bytes: set by [`Shard::fingerprint`] (which
    /// `open_shards` runs), None after a bare [`Shard::open`].
    pub content_digest: Option<String>,
    file: std::fs::File,
    /// Absolute byte offset of the tensor's first byte.
    start: u64,
    /// Length of the header (the 8-byte prefix included): tensors' data starts here.
    data_start: u64,
    meta: Metadata,
    ident: Ident,
    /// A read-only map of the file for the loader's row gathers, read only inside
    /// `guard::guarded` (Linux; None elsewhere or when mapping fails: positioned reads).
    map: Option<memmap2::Mmap>,
}

/// What a file was when opened, to notice it changing under a reader.
#[derive(Clone, Debug, PartialEq)]
struct Ident {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    dev_ino: (u64, u64),
}

impl Ident {
    fn of(m: &std::fs::Metadata) -> Ident {
        Ident {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            dev_ino: {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            },
        }
    }
}

/// Files saeforge itself writes that are never activation shards, skipped when a folder or
/// a glob is given (a `synth` folder holds its shards and truth.safetensors side by side).
pub const NOT_SHARDS: [&str; 4] = [
    "truth.safetensors",
    "sae_weights.safetensors",
    "sparsity.safetensors",
    "state.safetensors",
];

/// Whether `p` is named as one of [`NOT_SHARDS`].
fn not_shard(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|f| NOT_SHARDS.iter().any(|n| f == *n))
}

/// Expand files, folders (their *.safetensors, sorted, minus `NOT_SHARDS`) and glob
/// patterns (their matches, sorted, minus `NOT_SHARDS`) into shard paths. A file named
/// itself is read whatever its name.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let s = input.to_string_lossy();
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::io(input, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
                .filter(|p| !not_shard(p))
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
            let matched: Vec<PathBuf> = paths
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(Error::input(format!("{s}: glob matches no files")));
            }
            // As in a folder: `synth/*.safetensors` would take truth.safetensors as rows.
            let mut found: Vec<PathBuf> =
                matched.iter().filter(|p| !not_shard(p)).cloned().collect();
            if found.is_empty() {
                return Err(Error::input(format!(
                    "{s}: glob matches only {}, which saeforge writes and never reads as \
                     activation shards; name such a file itself to read it",
                    matched[0].display()
                )));
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
    // A shard listed twice (a folder and a glob of it, a file given twice) would be read
    // twice: its rows would count double in training and appear twice in outputs.
    let mut seen = std::collections::BTreeMap::new();
    for p in &out {
        let key = p.canonicalize().unwrap_or_else(|_| p.clone());
        if let Some(first) = seen.insert(key, p) {
            return Err(Error::input(format!(
                "{}: given twice (also as {}); each shard is read once, so list it once",
                p.display(),
                first.display()
            )));
        }
    }
    // Shard paths are recorded as JSON strings (checkpoint fingerprints, reports).
    if let Some(p) = out.iter().find(|p| p.to_str().is_none()) {
        return Err(Error::input(format!(
            "{}: the file name is not valid UTF-8; saeforge records shard paths in JSON files (checkpoints, reports), so rename it",
            p.display()
        )));
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
    /// Open and validate one shard (its header only: no tensor data is read); `tensor`
    /// picks the tensor when there are several.
    pub fn open(path: &Path, tensor: Option<&str>) -> Result<Shard> {
        let file = open_input(path)?;
        let fmeta = file.metadata().map_err(|e| Error::io(path, e))?;
        let ident = Ident::of(&fmeta);
        let (header, meta) = read_header(path, &file, fmeta.len())?;
        let bad = |msg: String| Error::input(format!("{}: {msg}", path.display()));
        let mut infos: Vec<(String, &safetensors::tensor::TensorInfo)> =
            meta.tensors().into_iter().collect();
        infos.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<String> = infos.iter().map(|(n, _)| n.clone()).collect();
        let mut floats: Vec<(String, &safetensors::tensor::TensorInfo)> = infos
            .iter()
            .filter(|(_, v)| {
                FloatType::from_safetensors(v.dtype).is_some() && matches!(v.shape.len(), 2 | 3)
            })
            .cloned()
            .collect();
        let (name, view) = match tensor {
            Some(t) => {
                let view = meta.info(t).ok_or_else(|| {
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
                    // The first tensor in file order, as the message names it.
                    let any = meta
                        .offset_keys()
                        .into_iter()
                        .next()
                        .and_then(|n| meta.info(&n).map(|v| (n, v)));
                    return Err(match any {
                        Some((n, v)) if FloatType::from_safetensors(v.dtype).is_none() => {
                            bad(format!(
                                "tensor {n:?} has dtype {:?}; expected F32, F16 or BF16",
                                v.dtype
                            ))
                        }
                        Some((n, v)) => bad(format!(
                            "tensor {n:?} has rank {} (shape {:?}); expected [tokens, d] or [batch, seq, d]",
                            v.shape.len(),
                            v.shape
                        )),
                        None => bad("holds no tensors".into()),
                    });
                }
                _ => {
                    let f: Vec<&str> = floats.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(bad(format!(
                        "{} floating tensors ({}); pick one with --tensor",
                        f.len(),
                        f.join(", ")
                    )));
                }
            },
        };
        let dtype = FloatType::from_safetensors(view.dtype).ok_or_else(|| {
            bad(format!(
                "tensor {name:?} has dtype {:?}; expected F32, F16 or BF16",
                view.dtype
            ))
        })?;
        let shape = view.shape.clone();
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
        let (a, b) = view.data_offsets;
        if b - a != rows * d * dtype.bytes() {
            return Err(bad(format!(
                "tensor {name:?}: {} data bytes for shape {shape:?} of {dtype:?}",
                b - a
            )));
        }
        let data_start = header.len() as u64;
        let start = data_start + a as u64;
        #[cfg(target_os = "linux")]
        // SAFETY: read-only map, read only through `mapped` inside `guard::guarded`, where a
        // page that vanished (the file truncated) reads as zeros and is reported as an error.
        let map = super::guard::install()
            .then(|| unsafe { memmap2::Mmap::map(&file) }.ok())
            .flatten()
            .filter(|m| m.len() as u64 == fmeta.len());
        #[cfg(not(target_os = "linux"))]
        let map = None;
        Ok(Shard {
            path: path.to_path_buf(),
            tensor: name,
            dtype,
            shape,
            rows,
            d,
            file_len: fmeta.len(),
            header_digest: crate::digest::of(&header),
            content_digest: None,
            file,
            start,
            data_start,
            meta,
            ident,
            map,
        })
    }

    /// The mapped bytes of rows `row .. row + count`, to be read only inside
    /// `guard::guarded` (None without a map: use [`Shard::read_run_raw`]).
    pub(crate) fn mapped(&self, row: usize, count: usize) -> Option<&[u8]> {
        let w = self.row_width();
        let a = self.start as usize + row * w;
        self.map.as_ref().map(|m| &m[a..a + count * w])
    }

    /// The error for a mapped read that met a vanished page: the file was truncated.
    pub(crate) fn truncated_error(&self) -> Error {
        let now = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Error::DataChanged(format!(
            "{}: was truncated while being read (it now holds {now} bytes; it had {} when opened)",
            self.path.display(),
            self.file_len
        ))
    }

    /// The file's header: tensor layout and metadata.
    pub fn header(&self) -> &Metadata {
        &self.meta
    }

    /// Bytes per row as stored.
    pub fn row_width(&self) -> usize {
        self.d * self.dtype.bytes()
    }

    /// Fill `buf` with the file's bytes at `offset` from the start of the data section
    /// (safetensors' `data_offsets`), naming the file if it ends early or the read fails.
    pub fn read_data_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.data_start + offset;
        crate::io::read_exact_at(&self.file, buf, at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                let now = self.file.metadata().map(|m| m.len()).unwrap_or(0);
                Error::DataChanged(format!(
                    "{}: was truncated while being read (bytes {at}..{} are needed, but the file now ends at byte {now}; it had {} bytes when opened)",
                    self.path.display(),
                    at + buf.len() as u64,
                    self.file_len
                ))
            } else {
                Error::io(&self.path, e)
            }
        })
    }

    /// The raw bytes of rows `start .. start + count` into `buf` (resized), then a check
    /// that the file did not change meanwhile.
    pub fn read_raw(&self, start: usize, count: usize, buf: &mut Vec<u8>) -> Result<()> {
        let w = self.row_width();
        buf.resize(count * w, 0);
        self.read_data_at(self.start - self.data_start + (start * w) as u64, buf)?;
        self.check_unchanged()
    }

    /// Convert rows `start .. start + count` into `out` (count * d f32), then check that
    /// the file did not change meanwhile.
    pub fn read_rows(&self, start: usize, count: usize, out: &mut [f32]) -> Result<()> {
        let mut raw = Vec::new();
        self.read_raw(start, count, &mut raw)?;
        convert(self.dtype, &raw, out);
        Ok(())
    }

    /// The raw bytes of rows `row .. row + count` into `raw` (resized), without the change
    /// check (the loader checks once per batch: [`Shard::check_unchanged`]).
    pub(crate) fn read_run_raw(&self, row: usize, count: usize, raw: &mut Vec<u8>) -> Result<()> {
        let w = self.row_width();
        raw.resize(count * w, 0);
        self.read_data_at(self.start - self.data_start + (row * w) as u64, raw)
    }

    /// Err if the file at `path` is no longer the one opened: removed, replaced by another
    /// file, truncated or grown, or modified in place (a new modification time).
    pub fn check_unchanged(&self) -> Result<()> {
        let p = self.path.display();
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => Ident::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::DataChanged(format!(
                    "{p}: was removed while being read"
                )));
            }
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        if now == self.ident {
            return Ok(());
        }
        #[cfg(unix)]
        if now.dev_ino != self.ident.dev_ino {
            return Err(Error::DataChanged(format!(
                "{p}: was replaced by another file while being read"
            )));
        }
        Err(Error::DataChanged(if now.len < self.ident.len {
            format!(
                "{p}: was truncated while being read (from {} to {} bytes)",
                self.ident.len, now.len
            )
        } else if now.len > self.ident.len {
            format!(
                "{p}: grew while being read (from {} to {} bytes)",
                self.ident.len, now.len
            )
        } else {
            format!("{p}: was modified while being read (same size, new modification time)")
        }))
    }

    /// Does the file carry saeforge's digests (in its metadata)?
    pub fn has_digests(&self) -> bool {
        self.meta
            .metadata()
            .as_ref()
            .is_some_and(|m| m.keys().any(|k| k.starts_with(crate::digest::PREFIX)))
    }

    /// The shard, its digests checked if it carries them (`info`: a file with none is
    /// not read further).
    pub fn verified(mut self) -> Result<Shard> {
        if self.has_digests() {
            self.fingerprint()?;
        }
        Ok(self)
    }

    /// Hash the activation tensor's bytes (the whole tensor, read in 8 MiB blocks), check
    /// them against the digest saeforge recorded in the file's metadata when it wrote it
    /// (synth shards, steer outputs), and keep the result in `content_digest`.
    pub fn fingerprint(&mut self) -> Result<()> {
        let len = (self.rows * self.row_width()) as u64;
        let start = self.start - self.data_start;
        let read = |at: u64, buf: &mut [u8]| self.read_data_at(at, buf);
        let digest = super::digest_blocks(start, start + len, read, |_| {})?;
        self.check_unchanged()?;
        let layout: Vec<(String, Dtype, Vec<usize>)> = self
            .meta
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype, v.shape.clone()))
            .collect();
        let layout: Vec<(&str, Dtype, &[usize])> = layout
            .iter()
            .map(|(n, d, s)| (n.as_str(), *d, s.as_slice()))
            .collect();
        crate::digest::verify(&self.path, self.meta.metadata().as_ref(), &layout, |name| {
            (name == self.tensor).then(|| digest.clone())
        })?;
        self.content_digest = Some(digest);
        Ok(())
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
        FloatType::F16 => convert_half(bytes, half::f16::from_le_bytes, out),
        FloatType::Bf16 => convert_half(bytes, half::bf16::from_le_bytes, out),
    }
}

/// Little-endian 2-byte floats -> f32: cast in place when `bytes` is aligned for `T`, else
/// through a copy.
fn convert_half<T: bytemuck::Pod>(bytes: &[u8], from_le: fn([u8; 2]) -> T, out: &mut [f32])
where
    [T]: HalfFloatSliceExt,
{
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(s) => s.convert_to_f32_slice(out),
        Err(_) => {
            let v: Vec<T> = bytes
                .chunks_exact(2)
                .map(|c| from_le([c[0], c[1]]))
                .collect();
            v.convert_to_f32_slice(out)
        }
    }
}

/// Open and validate every shard (all must share d), then fingerprint each one
/// ([`Shard::fingerprint`]: every byte of its activation tensor is read and hashed, shards
/// in parallel), so that a damaged saeforge-written shard is refused before any work and a
/// checkpoint can record exactly what it trained on.
pub fn open_shards(paths: &[PathBuf], tensor: Option<&str>) -> Result<Vec<Shard>> {
    let mut shards: Vec<Shard> = paths
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
    use rayon::prelude::*;
    shards
        .par_iter_mut()
        .map(Shard::fingerprint)
        .collect::<Result<Vec<()>>>()?;
    Ok(shards)
}
