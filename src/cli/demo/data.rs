//! The demo's folder and data: refusing a folder that is not a demo's, and synthesising
//! the training shards, the held-out shard and the planted dictionary (phase 1).

use std::path::{Path, PathBuf};

use super::measure::TrueCodes;
use super::{DemoConfig, MARKER};
use crate::io::{OutTensor, write_json, write_safetensors};
use crate::stop::StopToken;
use crate::synth::{Generator, write_truth};
use crate::{Error, Result};

/// Refuse a non-empty folder that is not a demo folder; clear the demo's own outputs.
pub(super) fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        if !out.is_dir() {
            return Err(Error::input(format!(
                "--out {}: exists and is not a folder",
                out.display()
            )));
        }
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .flatten()
            .all(|e| e.file_name() == crate::lock::LOCK_FILE); // reliability
        if !empty && !out.join(MARKER).is_file() {
            return Err(Error::input(format!(
                "--out {}: exists, is not empty and is not a saeforge demo folder (no {MARKER}); pick another folder",
                out.display()
            )));
        }
        for sub in ["data", "heldout", "sae", "steer", "plots"] {
            let p = out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    crate::io::create_dir(out)
}

/// data/: training shards, truth.safetensors, synth.json; heldout/: one shard. Returns the
/// training shard paths and the held-out rows' true coefficients.
pub(super) fn synthesise(
    c: &DemoConfig,
    out: &Path,
    stop: &StopToken,
) -> Result<(Vec<PathBuf>, TrueCodes, Generator)> {
    let sc = c.synth();
    let mut g = Generator::new(sc.clone())?;
    let data = out.join("data");
    let held = out.join("heldout");
    crate::io::create_dir(&data)?;
    crate::io::create_dir(&held)?;
    let chunk = 4096usize;
    let mut paths = Vec::new();
    let mut done = 0usize;
    while done < c.tokens {
        let rows = c.shard_tokens.min(c.tokens - done);
        let mut x = Vec::with_capacity(rows * c.d_in);
        let mut r = 0;
        while r < rows {
            let m = chunk.min(rows - r);
            x.extend(g.rows(m).0);
            r += m;
        }
        let p = data.join(format!("shard-{:05}.safetensors", paths.len()));
        write_shard(&p, rows, c.d_in, &x)?;
        paths.push(p);
        done += rows;
        stop.check(|| {
            "interrupted while synthesising the data; run `saeforge demo` again to start over"
                .to_string()
        })?;
    }
    let mut truth = TrueCodes {
        row_ptr: vec![0],
        idx: Vec::new(),
        val: Vec::new(),
    };
    let mut x = Vec::with_capacity(c.heldout * c.d_in);
    let mut r = 0;
    while r < c.heldout {
        let m = chunk.min(c.heldout - r);
        let (xs, coef) = g.rows(m);
        x.extend(xs);
        for row in coef.chunks_exact(c.features) {
            for (i, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    truth.idx.push(i as u32);
                    truth.val.push(v);
                }
            }
            truth.row_ptr.push(truth.idx.len());
        }
        r += m;
    }
    write_shard(&held.join("shard-00000.safetensors"), c.heldout, c.d_in, &x)?;
    write_truth(&data.join("truth.safetensors"), &g.truth)?;
    write_json(&data.join("synth.json"), &sc)?;
    Ok((paths, truth, g))
}

/// One f16 activation shard of (rows, d).
fn write_shard(path: &Path, rows: usize, d: usize, x: &[f32]) -> Result<()> {
    write_safetensors(
        path,
        &[OutTensor::float(
            "activations",
            &[rows, d],
            x,
            safetensors::Dtype::F16,
        )],
        None,
    )
}
