//! A transcoder's paired stream (`--target-data`, `super::super::transcoder`): the
//! initialisation sample of both sides and the target stream that rides along the
//! training stream, as methods of the run's data.

use super::{RunData, scale_of};
use crate::Result;
use crate::data::BatchStream;
use crate::sae::TrainConfig;

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
