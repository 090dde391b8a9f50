//! The true codes of every row `synth` writes, stored sparse beside the shards so that
//! `eval --truth` can score each latent's firing against the feature it matches.
//!
//! Layout: for a shard `DIR/shard-NNNNN.safetensors`, the file
//! `DIR/codes/shard-NNNNN.safetensors` (a sub-folder, so that a folder given to `--data`
//! never reads it as a shard) holds the shard's codes as CSR (compressed sparse rows):
//!
//! - `indptr` I64 [rows + 1]: row r's entries are `indptr[r] .. indptr[r + 1]`;
//! - `indices` I64 [nnz]: the true feature of each entry, ascending within a row;
//! - `values` F32 [nnz]: its coefficient (> 0; features that did not fire are absent).
//!
//! No metadata (so that the same world gives the same bytes); n is the truth's.
//!
//! `torch.sparse_csr_tensor(f["indptr"], f["indices"], f["values"], (rows, n))` and
//! `scipy.sparse.csr_matrix((values, indices, indptr), (rows, n))` read it as it is.

use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::io::{OutTensor, write_safetensors};
use crate::{Error, Result};

/// Codes of some rows over `n` features, CSR, values > 0, ascending feature within a row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseCodes {
    pub n: usize,
    /// rows + 1 offsets.
    pub row_ptr: Vec<usize>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl SparseCodes {
    pub fn new(n: usize) -> SparseCodes {
        SparseCodes {
            n,
            row_ptr: vec![0],
            idx: Vec::new(),
            val: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.row_ptr.len() - 1
    }

    /// Append one dense row of n codes (entries > 0 kept).
    pub fn push_dense(&mut self, row: &[f32]) {
        for (i, &v) in row.iter().enumerate() {
            if v > 0.0 {
                self.idx.push(i as u32);
                self.val.push(v);
            }
        }
        self.row_ptr.push(self.idx.len());
    }

    /// Dense codes (rows, n) as CSR.
    pub fn from_dense(z: &[f32], rows: usize, n: usize) -> SparseCodes {
        let mut c = SparseCodes::new(n);
        for r in 0..rows {
            c.push_dense(&z[r * n..(r + 1) * n]);
        }
        c
    }

    /// Row r's (features, values).
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[r], self.row_ptr[r + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }

    /// Rows a..b as a new CSR.
    pub fn slice(&self, a: usize, b: usize) -> SparseCodes {
        let (s, e) = (self.row_ptr[a], self.row_ptr[b]);
        SparseCodes {
            n: self.n,
            row_ptr: self.row_ptr[a..=b].iter().map(|p| p - s).collect(),
            idx: self.idx[s..e].to_vec(),
            val: self.val[s..e].to_vec(),
        }
    }
}

/// Where the codes of `shard` live: `<shard's folder>/codes/<shard's file name>`.
pub fn codes_path(shard: &Path) -> PathBuf {
    let dir = shard.parent().unwrap_or(Path::new("."));
    match shard.file_name() {
        Some(name) => dir.join("codes").join(name),
        None => dir.join("codes"),
    }
}

/// Write the codes of `shard` (see the module doc).
pub fn write_codes(shard: &Path, codes: &SparseCodes) -> Result<PathBuf> {
    let path = codes_path(shard);
    if let Some(dir) = path.parent() {
        crate::io::create_dir(dir)?;
    }
    let indptr: Vec<i64> = codes.row_ptr.iter().map(|&p| p as i64).collect();
    let indices: Vec<i64> = codes.idx.iter().map(|&i| i as i64).collect();
    write_safetensors(
        &path,
        &[
            OutTensor::i64("indptr", &[indptr.len()], &indptr),
            OutTensor::i64("indices", &[indices.len()], &indices),
            OutTensor::f32("values", &[codes.val.len()], &codes.val),
        ],
        None,
    )?;
    Ok(path)
}

/// Read a codes file, checking its layout: `n` features, `rows` rows.
pub fn read_codes(path: &Path, n: usize, rows: usize) -> Result<SparseCodes> {
    let bytes = crate::data::read_input(path)?;
    let st = crate::data::parse_safetensors(path, &bytes)?;
    let bad = |m: String| Error::input(format!("{}: {m}", path.display()));
    let get = |name: &str, dtype: Dtype| {
        let t = st.tensor(name).map_err(|_| {
            bad(format!(
                "missing tensor {name:?} (a synth codes file holds indptr, indices, values)"
            ))
        })?;
        if t.dtype() != dtype || t.shape().len() != 1 {
            return Err(bad(format!(
                "tensor {name:?} is {:?} {:?}; expected {dtype:?} of rank 1",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t)
    };
    let indptr: Vec<i64> = bytemuck::pod_collect_to_vec(get("indptr", Dtype::I64)?.data());
    let indices: Vec<i64> = bytemuck::pod_collect_to_vec(get("indices", Dtype::I64)?.data());
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(get("values", Dtype::F32)?.data());
    if indptr.len() != rows + 1 {
        return Err(bad(format!(
            "codes of {} rows, but the shard has {rows}",
            indptr.len().saturating_sub(1)
        )));
    }
    if indices.len() != values.len()
        || indptr[0] != 0
        || indptr[rows] != indices.len() as i64
        || indptr.windows(2).any(|w| w[1] < w[0])
    {
        return Err(bad(
            "indptr, indices and values do not form a CSR matrix (indptr must rise from 0 to the number of entries)".into(),
        ));
    }
    if let Some(&i) = indices.iter().find(|&&i| i < 0 || i as usize >= n) {
        return Err(bad(format!(
            "feature index {i} is out of range for a truth of {n} features"
        )));
    }
    if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(bad(format!("code value {v}: expected finite values > 0")));
    }
    Ok(SparseCodes {
        n,
        row_ptr: indptr.iter().map(|&p| p as usize).collect(),
        idx: indices.iter().map(|&i| i as u32).collect(),
        val: values,
    })
}
