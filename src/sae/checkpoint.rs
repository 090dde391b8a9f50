//! Checkpoints: everything needed to continue a run exactly (parameters, Adam moments, step,
//! dead-latent counters, BatchTopK threshold, activation scale, how many batches the data
//! stream has handed out, and the resolved config), in ONE safetensors file whose metadata
//! holds the scalars. One file, written atomically, so a crash leaves either the previous
//! checkpoint or the new one, never a mix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use super::engine::{Moments, TrainState};
use super::params::ParamSet;
use crate::io::{OutTensor, write_safetensors};
use crate::{Error, Result};

pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const CHECKPOINT_FILE: &str = "state.safetensors";

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub state: TrainState,
    /// Row ids drawn from the data stream (see `BatchStream::skip_ids`).
    pub batches: u64,
    /// Input scale (mean ||x|| = sqrt(d) after scaling).
    pub scale: f32,
    pub config: TrainConfig,
    /// The shards the run reads, as they were: a resume refuses data that changed since
    /// (it would silently train on something else). Empty in older checkpoints.
    pub data: Vec<ShardPrint>,
}

/// What identifies a shard for a resume: path, tensor, dtype, shape and file size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardPrint {
    pub path: PathBuf,
    pub tensor: String,
    pub dtype: crate::data::FloatType,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

impl ShardPrint {
    pub fn of(s: &crate::data::Shard) -> ShardPrint {
        ShardPrint {
            path: s.path.clone(),
            tensor: s.tensor.clone(),
            dtype: s.dtype,
            shape: s.shape.clone(),
            bytes: std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0),
        }
    }

    /// Err naming the first difference between the shards a checkpoint was trained on and
    /// the shards found now.
    pub fn check_same(was: &[ShardPrint], now: &[ShardPrint], dir: &Path) -> Result<()> {
        if was.is_empty() || was == now {
            return Ok(());
        }
        let why = if was.len() != now.len() {
            format!("it had {} shards, now {}", was.len(), now.len())
        } else {
            let (a, b) = was
                .iter()
                .zip(now)
                .find(|(a, b)| a != b)
                .expect("the lists differ");
            format!(
                "{} was {:?} {:?} {:?} ({} bytes), now {} is {:?} {:?} {:?} ({} bytes)",
                a.path.display(),
                a.tensor,
                a.dtype,
                a.shape,
                a.bytes,
                b.path.display(),
                b.tensor,
                b.dtype,
                b.shape,
                b.bytes
            )
        };
        Err(Error::input(format!(
            "--resume {}: the data changed since the checkpoint ({why}); a resumed run must read the same shards (restore them, or start a new run)",
            dir.display()
        )))
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    step: u64,
    batches: u64,
    scale: f32,
    threshold: f32,
    grad_norm: f32,
    config: TrainConfig,
    #[serde(default)]
    data: Vec<ShardPrint>,
}

pub fn path(out: &Path) -> PathBuf {
    out.join(CHECKPOINT_DIR).join(CHECKPOINT_FILE)
}

impl Checkpoint {
    pub fn save(&self, out: &Path) -> Result<()> {
        let dir = out.join(CHECKPOINT_DIR);
        crate::io::create_dir(&dir)?;
        let st = &self.state;
        let p = &st.params;
        let shapes = p.shapes();
        let mut tensors = Vec::new();
        for (prefix, set) in [
            ("", p),
            ("adam_m.", &st.moments.m),
            ("adam_v.", &st.moments.v),
        ] {
            for (name, t, shape) in set.zip(&shapes) {
                tensors.push(OutTensor::f32(&format!("{prefix}{name}"), shape, t));
            }
        }
        tensors.push(OutTensor::u32("since_fired", &[p.n], &st.since_fired));
        tensors.push(OutTensor::u32("fire_total", &[p.n], &st.fire_total));
        tensors.push(OutTensor::f32("metrics", &[st.metrics.len()], &st.metrics));
        let meta = Meta {
            step: st.step,
            batches: self.batches,
            scale: self.scale,
            threshold: st.threshold,
            grad_norm: st.grad_norm,
            config: self.config.clone(),
            data: self.data.clone(),
        };
        let mut md = HashMap::new();
        md.insert(
            "saeforge".to_string(),
            serde_json::to_string(&meta).expect("plain data"),
        );
        write_safetensors(&dir.join(CHECKPOINT_FILE), &tensors, Some(md))
    }

    /// Load and check a checkpoint: every tensor present with the dtype and length the
    /// config implies, so a damaged file is refused here rather than crashing a step.
    pub fn load(out: &Path) -> Result<Checkpoint> {
        let file = path(out);
        let bytes = crate::data::read_input(&file)?;
        let bad = |m: String| Error::input(format!("{}: {m}", file.display()));
        let st = crate::data::parse_safetensors(&file, &bytes)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a checkpoint: {e}")))?;
        let meta_text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("saeforge"))
            .ok_or_else(|| bad("no saeforge metadata (not a saeforge checkpoint)".into()))?;
        let meta: Meta =
            serde_json::from_str(meta_text).map_err(|e| bad(format!("bad metadata: {e}")))?;
        let cfg = meta.config.clone();
        let (d, n) = (cfg.d_in, cfg.d_sae);
        if d == 0 || n == 0 {
            return Err(bad(format!("config has d_in {d}, d_sae {n}")));
        }
        let tensor = |name: &str, dtype: safetensors::Dtype, len: usize| {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name:?}")))?;
            let count: usize = v.shape().iter().product();
            if v.dtype() != dtype || count != len {
                return Err(bad(format!(
                    "tensor {name:?} is {:?} {:?}; the run's config (d_in {d}, d_sae {n}) needs {dtype:?} with {len} values",
                    v.dtype(),
                    v.shape()
                )));
            }
            Ok(v)
        };
        let f32s = |name: &str, len: usize| -> Result<Vec<f32>> {
            let v = tensor(name, safetensors::Dtype::F32, len)?;
            Ok(bytemuck::pod_collect_to_vec::<u8, f32>(v.data()))
        };
        let u32s = |name: &str, len: usize| -> Result<Vec<u32>> {
            let v = tensor(name, safetensors::Dtype::U32, len)?;
            Ok(bytemuck::pod_collect_to_vec::<u8, u32>(v.data()))
        };
        let thr_len = if cfg.arch == super::Arch::Jumprelu {
            n
        } else {
            0
        };
        let dn = d
            .checked_mul(n)
            .ok_or_else(|| bad(format!("config has d_in {d} x d_sae {n}: too large")))?;
        let lens = ParamSet {
            d,
            n,
            w_enc: dn,
            w_dec: dn,
            b_enc: n,
            b_dec: d,
            log_threshold: thr_len,
        };
        let set = |prefix: &str| lens.try_map(|name, &len| f32s(&format!("{prefix}{name}"), len));
        let (params, m, v) = (set("")?, set("adam_m.")?, set("adam_v.")?);
        let state = TrainState {
            params,
            moments: Moments { m, v },
            step: meta.step,
            since_fired: u32s("since_fired", n)?,
            fire_total: u32s("fire_total", n)?,
            threshold: meta.threshold,
            metrics: f32s("metrics", crate::reference::reduce::METRIC_SLOTS)?,
            grad_norm: meta.grad_norm,
        };
        if !state.params.all_finite() {
            return Err(bad(
                "parameters hold NaN or Inf (a damaged checkpoint)".into()
            ));
        }
        Ok(Checkpoint {
            state,
            batches: meta.batches,
            scale: meta.scale,
            config: cfg,
            data: meta.data,
        })
    }
}
