//! Digests that let saeforge prove a file it wrote is the file it reads back.
//!
//! Every safetensors file saeforge writes (checkpoints, exported weights, sparsity, synth
//! shards and truth, encode and steer outputs) carries, in its `__metadata__`, one xxh3-64
//! digest per tensor (`"xxh3_64:NAME"`, over the tensor's data bytes) and one over the rest
//! of the header (`"xxh3_64:__header__"`: every other metadata entry and every tensor's
//! name, dtype and shape). Other readers (SAELens, `safetensors.torch`) ignore metadata, so
//! the files stay what they were. A reader that finds digests checks them, and a mismatch
//! is one line naming the file and the tensor; a file with no digest (another tool's) is
//! read as before. xxh3 is not cryptographic: it catches damage (bit flips, truncations
//! padded back, a tensor taken from another file), not forgery.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::Dtype;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::{Error, Result};

/// Metadata keys holding digests start with this.
pub const PREFIX: &str = "xxh3_64:";
/// The digest of the header (metadata and tensor layout, digests excluded).
pub const HEADER: &str = "xxh3_64:__header__";

/// A digest as stored: 16 lowercase hex digits.
pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}

/// The digest of some bytes.
pub fn of(bytes: &[u8]) -> String {
    hex(xxh3_64(bytes))
}

/// A digest computed piece by piece (same value as [`of`] over the concatenation).
#[derive(Clone, Default)]
pub struct Stream(Xxh3);

impl Stream {
    pub fn new() -> Self {
        Stream(Xxh3::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(&self) -> String {
        hex(self.0.digest())
    }
}

/// The metadata key of tensor `name`'s digest.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Digest of the header's content apart from the digests: metadata entries and tensor
/// (name, dtype, shape), each sorted by name, so it does not depend on how the JSON was laid out.
pub fn header_digest(
    metadata: &HashMap<String, String>,
    tensors: &[(&str, Dtype, &[usize])],
) -> String {
    let mut s = String::new();
    let meta: BTreeMap<&String, &String> = metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(PREFIX))
        .collect();
    for (k, v) in meta {
        s.push_str(&format!("m {k:?}={v:?}\n"));
    }
    let mut t: Vec<&(&str, Dtype, &[usize])> = tensors.iter().collect();
    t.sort_by_key(|x| x.0);
    for (name, dtype, shape) in t {
        s.push_str(&format!("t {name:?} {dtype:?} {shape:?}\n"));
    }
    of(s.as_bytes())
}

/// Metadata with digests added: `user` (digest keys it holds are replaced), a digest per
/// tensor and the header digest.
pub fn seal(
    user: Option<HashMap<String, String>>,
    tensors: &[(&str, Dtype, &[usize], String)],
) -> HashMap<String, String> {
    let mut md: HashMap<String, String> = user
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(PREFIX))
        .collect();
    let layout: Vec<(&str, Dtype, &[usize])> =
        tensors.iter().map(|(n, d, s, _)| (*n, *d, *s)).collect();
    let h = header_digest(&md, &layout);
    for (name, _, _, digest) in tensors {
        md.insert(key(name), digest.clone());
    }
    md.insert(HEADER.to_string(), h);
    md
}

/// Whether a file carries digests, and whether they held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// Every tensor and the header matched its digest (count of tensors).
    Verified(usize),
    /// No digests: written by another tool (or an older saeforge); read as before.
    Absent,
}

/// The one-line refusal of a tensor whose bytes do not match its digest.
pub fn mismatch(path: &Path, what: &str, stored: &str, computed: &str) -> Error {
    Error::input(format!(
        "{}: {what} does not match its digest (xxh3_64 recorded {stored}, computed {computed}): the file is damaged or was changed after saeforge wrote it",
        path.display()
    ))
}

/// Check the digests of a parsed safetensors file against its bytes. `data(name)` gives a
/// tensor's digest as computed now (None: not computed, e.g. a shard's other tensors, which
/// are then only checked for having a digest). Returns Absent for a file with no digest.
pub fn verify(
    path: &Path,
    metadata: Option<&HashMap<String, String>>,
    tensors: &[(&str, Dtype, &[usize])],
    mut data: impl FnMut(&str) -> Option<String>,
) -> Result<Seal> {
    let Some(md) = metadata else {
        return Ok(Seal::Absent);
    };
    if !md.keys().any(|k| k.starts_with(PREFIX)) {
        return Ok(Seal::Absent);
    }
    let bad = |m: String| Error::input(format!("{}: {m}", path.display()));
    let Some(stored) = md.get(HEADER) else {
        return Err(bad(
            "tensor digests without a header digest (the file was edited after saeforge wrote it)"
                .into(),
        ));
    };
    let h = header_digest(md, tensors);
    if &h != stored {
        return Err(mismatch(
            path,
            "the header (metadata, tensor names, dtypes or shapes)",
            stored,
            &h,
        ));
    }
    let mut names: Vec<&(&str, Dtype, &[usize])> = tensors.iter().collect();
    names.sort_by_key(|t| t.0);
    for (name, _, _) in &names {
        let Some(stored) = md.get(&key(name)) else {
            return Err(bad(format!(
                "tensor {name:?} has no digest, though the file's other tensors do (the file was edited after saeforge wrote it)"
            )));
        };
        if let Some(now) = data(name)
            && &now != stored
        {
            return Err(mismatch(path, &format!("tensor {name:?}"), stored, &now));
        }
    }
    for k in md.keys() {
        if let Some(name) = k.strip_prefix(PREFIX)
            && k != HEADER
            && !tensors.iter().any(|t| t.0 == name)
        {
            return Err(bad(format!(
                "a digest for tensor {name:?}, which the file does not hold (a tensor was removed)"
            )));
        }
    }
    Ok(Seal::Verified(tensors.len()))
}

/// Verify a whole safetensors file held in memory (checkpoints, SAE weights, sparsity,
/// truth): every tensor's data is hashed.
pub fn verify_file(path: &Path, bytes: &[u8], st: &safetensors::SafeTensors) -> Result<Seal> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        st.iter().map(|(n, v)| (n.to_string(), v)).collect();
    let layout: Vec<(&str, Dtype, &[usize])> = views
        .iter()
        .map(|(n, v)| (n.as_str(), v.dtype(), v.shape()))
        .collect();
    verify(path, header.metadata().as_ref(), &layout, |name| {
        views
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| of(v.data()))
    })
}

/// JSON with object keys sorted at every level and no whitespace: the form cfg.json's own
/// digest is taken over, so reformatting the file (or reordering keys) keeps it valid.
pub fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).expect("a string"),
                        canonical_json(&m[k])
                    )
                })
                .collect();
            format!("{{{}}}", body.join(","))
        }
        serde_json::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}
