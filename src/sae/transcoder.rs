//! Transcoders: an SAE whose decoder writes another activation than the one it reads
//! (`--target-data`, one target row per input row; d_out may differ from d_in), as
//! SAELens's `Transcoder` defines it:
//!
//!   pre = x W_enc + b_enc        (no input bias: SAELens's b_dec is in the output space,
//!                                 so its transcoders require apply_b_dec_to_input false)
//!   z = act(pre)                 relu / topk / batchtopk / jumprelu, as for an SAE
//!   y_hat = z W_dec + b_dec      W_dec (n, d_out), b_dec (d_out)
//!   loss = |y - y_hat|^2 + the architecture's penalty (AuxK: the dead latents
//!          reconstruct the target's residual y - y_hat)
//!
//! Normalisation: each side has its own scale, sqrt(d) / mean row norm of the
//! initialisation sample (inputs by `scale`, targets by `TrainConfig::target_scale`); the
//! export folds both back (W_enc * s_in, W_dec / s_out, b_dec / s_out), so the saved
//! transcoder works on raw activations. What is here: the run's resolution (d_out, the
//! flags a transcoder does not take yet), the paired data, the initialisation.

use std::sync::Arc;

use super::train::RunData;
use super::{DecoderNorm, SaeParams, TrainConfig, params};
use crate::data::paired::check_pairs;
use crate::data::{BatchStream, Shard, discover, open_shards};
use crate::{Error, Result};

/// Open the target shards of `cfg` (None for an SAE) and check them against `inputs`.
pub fn open_targets(cfg: &TrainConfig, inputs: &[Shard]) -> Result<Option<Arc<Vec<Shard>>>> {
    if cfg.target_data.is_empty() {
        return Ok(None);
    }
    let paths = discover(&cfg.target_data)?;
    let targets = open_shards(&paths, cfg.tensor.as_deref())?;
    check_pairs(inputs, &targets)?;
    if let Some(d_out) = cfg.d_out
        && targets[0].d != d_out
    {
        return Err(Error::input(format!(
            "{}: d = {}, but the run was configured for d_out = {d_out}",
            targets[0].path.display(),
            targets[0].d
        )));
    }
    Ok(Some(Arc::new(targets)))
}

/// A new run's transcoder settings: d_out from the target shards (opened and paired with
/// `inputs`), and the flags transcoders do not take yet refused, each in one line.
pub fn resolve(cfg: &mut TrainConfig, inputs: &[Shard]) -> Result<()> {
    let Some(targets) = open_targets(cfg, inputs)? else {
        return Ok(());
    };
    cfg.d_out = Some(targets[0].d);
    check_supported(cfg)
}

/// Err for what a transcoder run cannot do yet.
pub fn check_supported(cfg: &TrainConfig) -> Result<()> {
    if cfg.d_out.is_none() {
        return Ok(());
    }
    let refuse = |what: &str| {
        Err(Error::input(format!(
            "--target-data with {what}: not supported for transcoders yet"
        )))
    };
    if !cfg.eval_data.is_empty() || cfg.eval_fraction > 0.0 {
        return refuse(
            "--eval-data / --eval-fraction (evaluate with `saeforge eval --target-data`)",
        );
    }
    if cfg.decoder_norm == DecoderNorm::Rescale {
        return refuse("--decoder-norm rescale");
    }
    Ok(())
}

impl RunData {
    /// The initialisation sample of a transcoder's paired stream: the input scale, the
    /// target scale, the target rows scaled (for b_dec), and the pairs skipped (with
    /// --skip-nonfinite, a pair with NaN / Inf on either side is dropped whole).
    pub fn init_sample_paired(&self, cfg: &TrainConfig) -> Result<(f32, f32, Vec<f32>, u64)> {
        let targets = self.targets.clone().expect("a transcoder's run data");
        let mut st = self.init_stream(cfg, self.shards.clone())?;
        st.target = Some(Box::new(self.init_stream(cfg, targets)?));
        let sample = st.next_batch()?;
        let (x, y) = sample.data.split_at(sample.rows * cfg.d_in);
        let d_out = cfg.d_out.expect("a transcoder");
        let s_in = scale_of(cfg, x, cfg.d_in);
        let s_out = scale_of(cfg, y, d_out);
        let scaled = y.iter().map(|v| v * s_out).collect();
        Ok((s_in, s_out, scaled, sample.skipped as u64))
    }

    /// The target stream to attach to the training stream (same ranges, seed and batch:
    /// only its `fill` is used, at the input stream's ids), or None for an SAE.
    pub fn target_stream(&self, cfg: &TrainConfig) -> Result<Option<Box<BatchStream>>> {
        let Some(targets) = self.targets.clone() else {
            return Ok(None);
        };
        let mut t = self.stream_of(cfg, targets, cfg.data_seed(), cfg.batch)?;
        t.scale = cfg.target_scale;
        Ok(Some(Box::new(t)))
    }
}

/// sqrt(d) / mean row norm of `x` (rows, d) with --normalize, else 1.
fn scale_of(cfg: &TrainConfig, x: &[f32], d: usize) -> f32 {
    let rows = x.len() / d;
    let mn = x
        .chunks_exact(d)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / rows.max(1) as f64;
    if cfg.normalize && mn > 0.0 {
        ((d as f64).sqrt() / mn) as f32
    } else {
        1.0
    }
}

/// A transcoder's initial parameters: W_dec rows random directions in the output space
/// (unit norm for unit-norm decoders, else `init_norm`), W_enc columns independent random
/// directions in the input space at `init_norm` (there is no transpose to tie to when
/// d_in != d_out), b_enc = 0, b_dec = geometric median / mean of the scaled target sample
/// (`sample`, rows x d_out) or zeros, jumprelu's log threshold at ln(threshold_init).
pub fn init_params(cfg: &TrainConfig, sample: &[f32]) -> SaeParams {
    let (d, n) = (cfg.d_in, cfg.d_sae);
    let d_out = cfg.d_out.expect("a transcoder");
    let dec_norm = if cfg.decoder_norm == DecoderNorm::Unit {
        1.0
    } else {
        cfg.init_norm
    };
    // Streams 0..n for W_dec's rows, n..2n for W_enc's columns (see `params::random_rows`).
    let w_dec = params::random_rows(cfg.seed, 0, n, d_out, dec_norm);
    let w_enc_t = params::random_rows(cfg.seed, n as u64, n, d, cfg.init_norm);
    SaeParams {
        d,
        n,
        w_enc: params::transpose(&w_enc_t, n, d),
        b_enc: vec![0.0; n],
        w_dec,
        b_dec: params::b_dec_at_start(cfg, sample, d_out),
        log_threshold: params::log_threshold_at_start(cfg, n),
    }
}
