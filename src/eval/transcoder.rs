//! `saeforge eval` of a transcoder: its input rows (`--data`) coded and decoded, held
//! against the paired target rows (`--target-data`, checked as training checks them:
//! `crate::data::paired`). The metrics are those of an SAE's evaluation
//! (`super::metrics::Accumulator`) with the target in the place of the input: MSE,
//! explained variance of the target, cosine, L0, dead and dense latents. The rows are the
//! first `--rows` in shard order; the transcoder runs on the engine `--device` picks, as an
//! SAE's evaluation does (`crate::sae::infer::Encoder` carries d_out on both engines).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::metrics::{Accumulator, ReconMetrics};
use crate::data::paired::check_pairs;
use crate::data::{discover, open_shards};
use crate::gpu::Engine;
use crate::sae::export::SaeModel;
use crate::sae::infer::Encoder;
use crate::{Error, Result};

/// What `eval` needs for a transcoder.
pub struct TranscoderEval<'a> {
    pub sae: &'a Path,
    pub data: &'a [PathBuf],
    pub target_data: &'a [PathBuf],
    pub tensor: Option<&'a str>,
    pub rows: usize,
    pub batch: usize,
}

/// The metrics of `model` (a transcoder) on the paired rows of `e`.
pub fn evaluate(model: &SaeModel, engine: &Engine, e: &TranscoderEval) -> Result<ReconMetrics> {
    let d_out = model.d_out.expect("a transcoder");
    if e.target_data.is_empty() {
        return Err(Error::input(format!(
            "--target-data: missing; {} is a transcoder (d_in {}, d_out {d_out}), evaluated against the target rows paired with --data",
            e.sae.display(),
            model.d
        )));
    }
    if e.data.is_empty() {
        return Err(Error::input(
            "--data: missing (the transcoder's input rows, paired with --target-data)",
        ));
    }
    let inputs = open_shards(&discover(e.data)?, e.tensor)?;
    let targets = open_shards(&discover(e.target_data)?, e.tensor)?;
    check_pairs(&inputs, &targets)?;
    for (s, want, what) in [(&inputs[0], model.d, "d_in"), (&targets[0], d_out, "d_out")] {
        if s.d != want {
            return Err(Error::input(format!(
                "{}: d = {}, but the transcoder in {} has {what} = {want}",
                s.path.display(),
                s.d,
                e.sae.display()
            )));
        }
    }
    let batch = e.batch.max(1);
    let encoder = Encoder::new(model, engine, batch)?;
    let mut acc = Accumulator::new(d_out);
    let mut left = e.rows;
    for (x_shard, y_shard) in inputs.iter().zip(&targets) {
        let mut start = 0;
        while start < x_shard.rows && left > 0 {
            let rows = batch.min(x_shard.rows - start).min(left);
            let mut x = vec![0.0f32; rows * model.d];
            let mut y = vec![0.0f32; rows * d_out];
            x_shard.read_rows(start, rows, &mut x)?;
            y_shard.read_rows(start, rows, &mut y)?;
            for (s, v) in [(x_shard, &x), (y_shard, &y)] {
                if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                    let w = v.len() / rows;
                    return Err(s.nonfinite_error(start + i / w, i % w, v[i]));
                }
            }
            let out = encoder.run(&x, rows, false)?;
            acc.add(&y, &out.x_hat, rows, out.l0_sum, out.l1_sum, None);
            start += rows;
            left -= rows;
        }
    }
    Ok(acc.finish(&encoder.fire_counts()?))
}

/// The report's text table.
pub fn table(model: &SaeModel, m: &ReconMetrics) -> String {
    format!(
        "transcoder {} (d_in {}, d_out {}, d_sae {}) on {} paired rows\n  mse {:.6}  explained variance {:.4}  cosine {:.4}  L0 {:.2}  dead {:.3}  dense {:.3}\n",
        model.architecture(),
        model.d,
        model.out_dim(),
        model.n,
        m.rows,
        m.mse,
        m.explained_variance,
        m.cosine,
        m.l0,
        m.dead_fraction,
        m.dense_fraction
    )
}

/// The report as JSON.
pub fn to_json(model: &SaeModel, m: &ReconMetrics) -> serde_json::Value {
    json!({
        "architecture": model.architecture(),
        "d_in": model.d,
        "d_out": model.out_dim(),
        "d_sae": model.n,
        "target": m,
    })
}
