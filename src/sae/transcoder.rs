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
//! flags a transcoder does not take yet) and the target shards; the paired stream is
//! `train::paired`'s, the initialisation `params::init_transcoder`.

use std::sync::Arc;

use super::{DecoderNorm, TrainConfig};
use crate::data::paired::check_pairs;
use crate::data::{Shard, discover, open_shards};
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
