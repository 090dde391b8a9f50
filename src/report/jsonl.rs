//! training.jsonl: one JSON object per log interval, appended and flushed as it happens so
//! that a crashed run keeps its history up to the last interval.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One record of training.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub step: u64,
    pub tokens: u64,
    pub lr: f32,
    pub loss: f64,
    pub mse: f64,
    pub aux_loss: f64,
    pub l1_loss: f64,
    pub l0_loss: f64,
    pub l0: f64,
    pub explained_variance: f64,
    pub dead_fraction: f64,
    pub grad_norm: f32,
    pub tokens_per_s: f64,
    /// topk / batchtopk with --k-anneal-steps: the k of the record's step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k: Option<usize>,
    /// matryoshka: each level's MSE (widths ascending; the last is `mse`). `loss` sums
    /// them all (SAELens's full MSE plus its `inner_mse_loss_{width}` terms).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub level_mse: Option<Vec<f64>>,
    /// Held-out figures when an evaluation ran at this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_mse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_explained_variance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_l0: Option<f64>,
}

pub struct JsonlWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonlWriter {
    /// Open for appending (a resumed run continues the same file).
    pub fn open(path: &Path) -> Result<JsonlWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut line = serde_json::to_string(r).expect("plain data");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Read every record of a training.jsonl (for plots); records after `max_step` are dropped
/// (a resumed run may have logged past its checkpoint before it died).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Rewrite the file keeping only records with step <= `max_step` (on resume).
/// Returns the step of the last record kept (None when none is).
pub fn truncate_after(path: &Path, max_step: u64) -> Result<Option<u64>> {
    if !path.exists() {
        return Ok(None);
    }
    let kept: Vec<Record> = read(path)?
        .into_iter()
        .filter(|r| r.step <= max_step)
        .collect();
    let mut s = String::new();
    for r in &kept {
        s.push_str(&serde_json::to_string(r).expect("plain data"));
        s.push('\n');
    }
    crate::io::write_atomic(path, s.as_bytes())?;
    Ok(kept.last().map(|r| r.step))
}
