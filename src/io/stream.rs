//! [`StreamWriter`]: a safetensors file written tensor by tensor, for outputs too large to
//! hold in memory at once; atomic like the rest of [`crate::io`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::{sync_parent, temp_name, write_all_at};
use crate::{Error, Result};

/// A safetensors file written tensor by tensor without holding the data in memory: the
/// header (names, dtypes, shapes, offsets) is fixed at creation, then the tensors' bytes are
/// appended in the declared order, and `finish` renames the temporary file into place. A
/// writer dropped before `finish` (an error, a panic) removes its temporary file.
///
/// Each tensor's digest is computed as its bytes go by; the header is written with
/// fixed-width placeholders for them, which `finish` overwrites in place before the rename.
pub struct StreamWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    total: u64,
    written: u64,
    /// (byte size, header offset of the digest's 16 hex digits) per tensor, in data order.
    sizes: Vec<(u64, u64)>,
    /// Tensor being written, and its bytes so far.
    current: usize,
    in_current: u64,
    hasher: crate::digest::Stream,
    digests: Vec<String>,
}

/// A tensor declared to [`StreamWriter::create`]: name, dtype, shape.
pub type TensorDecl = (String, Dtype, Vec<usize>);

/// The placeholder a streamed digest takes in the header until `finish` writes it.
const PLACEHOLDER: &str = "0000000000000000";

impl StreamWriter {
    /// Declare the tensors (data laid out in this order) and write the header.
    pub fn create(
        path: &Path,
        tensors: &[TensorDecl],
        metadata: Option<HashMap<String, String>>,
    ) -> Result<StreamWriter> {
        use safetensors::tensor::{Metadata, TensorInfo};
        let mut infos = Vec::with_capacity(tensors.len());
        let mut offset = 0usize;
        let mut sizes = Vec::with_capacity(tensors.len());
        for (name, dtype, shape) in tensors {
            let bits = shape.iter().product::<usize>() * dtype.bitsize();
            if bits % 8 != 0 {
                return Err(Error::Internal(format!(
                    "{}: tensor {name}: {bits} bits is not a whole number of bytes",
                    path.display()
                )));
            }
            let info = TensorInfo {
                dtype: *dtype,
                shape: shape.clone(),
                data_offsets: (offset, offset + bits / 8),
            };
            offset += bits / 8;
            sizes.push(((bits / 8) as u64, 0u64));
            infos.push((name.clone(), info));
        }
        let sealed: Vec<(&str, Dtype, &[usize], String)> = tensors
            .iter()
            .map(|(n, d, s)| (n.as_str(), *d, s.as_slice(), PLACEHOLDER.to_string()))
            .collect();
        let metadata = Some(crate::digest::seal(metadata, &sealed));
        // The header is built as a JSON object with sorted keys (not through safetensors'
        // HashMap-backed Metadata), so the same tensors and metadata give the same bytes.
        let mut obj = serde_json::Map::new();
        if let Some(m) = &metadata {
            let sorted: serde_json::Map<String, serde_json::Value> = m
                .iter()
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            obj.insert("__metadata__".into(), serde_json::Value::Object(sorted));
        }
        for (name, info) in &infos {
            let v = serde_json::to_value(info)
                .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
            obj.insert(name.clone(), v);
        }
        Metadata::new(metadata, infos)
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        let mut header = serde_json::to_string(&obj)
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        // Where each placeholder sits: right after `"xxh3_64:NAME":"` in the metadata.
        let meta_at = header.find("\"__metadata__\":").unwrap_or(0);
        for (i, (name, _, _)) in tensors.iter().enumerate() {
            let k = serde_json::to_string(&crate::digest::key(name)).expect("a string");
            let pat = format!("{k}:\"");
            let at = header[meta_at..]
                .find(&pat)
                .map(|p| meta_at + p + pat.len())
                .filter(|&p| header.get(p..p + PLACEHOLDER.len()) == Some(PLACEHOLDER))
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "{}: tensor {name}: digest placeholder not found in the header",
                        path.display()
                    ))
                })?;
            sizes[i].1 = 8 + at as u64;
        }
        let padded = header.len().next_multiple_of(8);
        while header.len() < padded {
            header.push(' ');
        }
        let header = header.into_bytes();
        let tmp = temp_name(path);
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
        let mut w = StreamWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            total: offset as u64,
            written: 0,
            sizes,
            current: 0,
            in_current: 0,
            hasher: crate::digest::Stream::new(),
            digests: Vec::with_capacity(tensors.len()),
        };
        w.raw(&(header.len() as u64).to_le_bytes())?;
        w.raw(&header)?;
        w.skip_empty();
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("open until finish");
        f.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    /// Close the digests of tensors whose bytes are all written (empty ones included).
    fn skip_empty(&mut self) {
        while self.current < self.sizes.len() && self.in_current == self.sizes[self.current].0 {
            self.digests.push(self.hasher.finish());
            self.hasher = crate::digest::Stream::new();
            self.current += 1;
            self.in_current = 0;
        }
    }

    /// Append tensor data (the declared tensors' bytes, in order, in any chunking).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.written + bytes.len() as u64 > self.total {
            return Err(Error::Internal(format!(
                "{}: {} data bytes written, but the header declares {}",
                self.path.display(),
                self.written + bytes.len() as u64,
                self.total
            )));
        }
        self.raw(bytes)?;
        self.written += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let left = (self.sizes[self.current].0 - self.in_current) as usize;
            let take = left.min(rest.len());
            self.hasher.update(&rest[..take]);
            self.in_current += take as u64;
            rest = &rest[take..];
            self.skip_empty();
        }
        Ok(())
    }

    /// Copy `len` bytes from `r` into the file.
    pub fn copy_from(&mut self, r: &mut impl std::io::Read, len: u64) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..want]).map_err(|e| {
                Error::Internal(format!("{}: copying data: {e}", self.path.display()))
            })?;
            self.write(&buf[..want])?;
            left -= want as u64;
        }
        Ok(())
    }

    /// Check that every declared byte was written, write the digests into the header,
    /// flush, fsync and rename into place.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.total {
            return Err(Error::Internal(format!(
                "{}: {} data bytes written, but the header declares {}",
                self.path.display(),
                self.written,
                self.total
            )));
        }
        let w = self.file.take().expect("open until finish");
        let result = (|| {
            let f = w.into_inner().map_err(|e| e.into_error())?;
            for ((_, at), digest) in self.sizes.iter().zip(&self.digests) {
                write_all_at(&f, digest.as_bytes(), *at)?;
            }
            f.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)?;
            sync_parent(&self.path);
            Ok(())
        })();
        result.map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        // Still open: not finished (or finish failed before the rename).
        if self.file.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
