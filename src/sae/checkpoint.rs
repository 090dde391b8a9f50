//! Checkpoints: everything needed to continue a run exactly (parameters, Adam moments, step,
//! dead-latent counters, BatchTopK threshold, activation scale, how many batches the data
//! stream has handed out, and the resolved config), in ONE safetensors file whose metadata
//! holds the scalars. One file, written atomically, so a crash leaves either the previous
//! checkpoint or the new one, never a mix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::cpu::{Moments, TrainState};
use super::params::PARAM_NAMES;
use super::{SaeParams, TrainConfig};
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
}

#[derive(Serialize, Deserialize)]
struct Meta {
    step: u64,
    batches: u64,
    scale: f32,
    threshold: f32,
    grad_norm: f32,
    config: TrainConfig,
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
        for (i, name) in PARAM_NAMES.iter().enumerate() {
            tensors.push(OutTensor::f32(name, &shapes[i], p.tensors()[i]));
            tensors.push(OutTensor::f32(
                &format!("adam_m.{name}"),
                &shapes[i],
                &st.moments.m[i],
            ));
            tensors.push(OutTensor::f32(
                &format!("adam_v.{name}"),
                &shapes[i],
                &st.moments.v[i],
            ));
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
        };
        let mut md = HashMap::new();
        md.insert(
            "saeforge".to_string(),
            serde_json::to_string(&meta).expect("plain data"),
        );
        write_safetensors(&dir.join(CHECKPOINT_FILE), &tensors, Some(md))
    }

    pub fn load(out: &Path) -> Result<Checkpoint> {
        let file = path(out);
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let bad = |m: String| Error::input(format!("{}: {m}", file.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a checkpoint: {e}")))?;
        let meta_text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("saeforge"))
            .ok_or_else(|| bad("no saeforge metadata (not a saeforge checkpoint)".into()))?;
        let meta: Meta =
            serde_json::from_str(meta_text).map_err(|e| bad(format!("bad metadata: {e}")))?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
        let f32s = |name: &str| -> Result<Vec<f32>> {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name:?}")))?;
            Ok(bytemuck::pod_collect_to_vec::<u8, f32>(v.data()))
        };
        let u32s = |name: &str| -> Result<Vec<u32>> {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name:?}")))?;
            Ok(bytemuck::pod_collect_to_vec::<u8, u32>(v.data()))
        };
        let cfg = meta.config.clone();
        let params = SaeParams {
            d: cfg.d_in,
            n: cfg.d_sae,
            w_enc: f32s("W_enc")?,
            w_dec: f32s("W_dec")?,
            b_enc: f32s("b_enc")?,
            b_dec: f32s("b_dec")?,
            log_threshold: f32s("log_threshold")?,
        };
        let expect = [
            cfg.d_in * cfg.d_sae,
            cfg.d_sae * cfg.d_in,
            cfg.d_sae,
            cfg.d_in,
        ];
        for (i, &len) in expect.iter().enumerate() {
            if params.tensors()[i].len() != len {
                return Err(bad(format!(
                    "tensor {} has {} values, config needs {len}",
                    PARAM_NAMES[i],
                    params.tensors()[i].len()
                )));
            }
        }
        let mut m: [Vec<f32>; 5] = Default::default();
        let mut v: [Vec<f32>; 5] = Default::default();
        for (i, name) in PARAM_NAMES.iter().enumerate() {
            m[i] = f32s(&format!("adam_m.{name}"))?;
            v[i] = f32s(&format!("adam_v.{name}"))?;
        }
        let state = TrainState {
            params,
            moments: Moments { m, v },
            step: meta.step,
            since_fired: u32s("since_fired")?,
            fire_total: u32s("fire_total")?,
            threshold: meta.threshold,
            metrics: f32s("metrics")?,
            grad_norm: meta.grad_norm,
        };
        Ok(Checkpoint {
            state,
            batches: meta.batches,
            scale: meta.scale,
            config: cfg,
        })
    }
}
