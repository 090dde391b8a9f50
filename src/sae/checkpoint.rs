//! Checkpoints: everything needed to continue a run exactly (parameters, Adam moments, step,
//! dead-latent counters, BatchTopK threshold, activation scale, how many batches the data
//! stream has handed out, and the resolved config), in ONE safetensors file whose metadata
//! holds the scalars. One file, written atomically, so a crash leaves either the previous
//! checkpoint or the new one, never a mix. Its metadata carries a digest of every tensor
//! and of the header (`crate::digest`), checked on every load, and a fingerprint of every
//! shard the run reads ([`ShardPrint`]), checked on `--resume`.

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

/// What identifies a shard for a resume: path, tensor, dtype, shape, file size, and
/// digests of its header and of every byte of its activation tensor (xxh3-64; empty in
/// checkpoints written before digests were recorded, and then not compared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardPrint {
    pub path: PathBuf,
    pub tensor: String,
    pub dtype: crate::data::FloatType,
    pub shape: Vec<usize>,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub header: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
}

impl ShardPrint {
    /// The print of a shard opened by `open_shards` (which hashed its contents).
    pub fn of(s: &crate::data::Shard) -> ShardPrint {
        ShardPrint {
            path: s.path.clone(),
            tensor: s.tensor.clone(),
            dtype: s.dtype,
            shape: s.shape.clone(),
            bytes: s.file_len,
            header: s.header_digest.clone(),
            content: s.content_digest.clone().unwrap_or_default(),
        }
    }

    /// How `now` differs from `self` (the same shard as the checkpoint saw it), if it does.
    fn difference(&self, now: &ShardPrint) -> Option<String> {
        let p = self.path.display();
        if self.path != now.path {
            return Some(format!("shard {p} is now {}", now.path.display()));
        }
        if (&self.tensor, self.dtype, &self.shape, self.bytes)
            != (&now.tensor, now.dtype, &now.shape, now.bytes)
        {
            return Some(format!(
                "{p} was {:?} {:?} {:?} ({} bytes), now {p} is {:?} {:?} {:?} ({} bytes)",
                self.tensor,
                self.dtype,
                self.shape,
                self.bytes,
                now.tensor,
                now.dtype,
                now.shape,
                now.bytes
            ));
        }
        let known = |a: &str, b: &str| !a.is_empty() && !b.is_empty() && a != b;
        if known(&self.content, &now.content) {
            return Some(format!(
                "{p}: same tensor, shape and size, but other contents (xxh3_64 of its data {} -> {})",
                self.content, now.content
            ));
        }
        if known(&self.header, &now.header) {
            return Some(format!(
                "{p}: same tensor, shape and size, but its header changed (xxh3_64 {} -> {})",
                self.header, now.header
            ));
        }
        None
    }

    /// Err naming the first difference between the shards a checkpoint was trained on and
    /// the shards found now. With `allow_change`, a difference is not an error: one line on
    /// stderr says that the run is no longer an exact resume.
    pub fn check_same(
        was: &[ShardPrint],
        now: &[ShardPrint],
        dir: &Path,
        allow_change: bool,
    ) -> Result<()> {
        if was.is_empty() {
            return Ok(());
        }
        let why = if was.len() != now.len() {
            format!("it had {} shards, now {}", was.len(), now.len())
        } else {
            match was.iter().zip(now).find_map(|(a, b)| a.difference(b)) {
                Some(w) => w,
                None => return Ok(()),
            }
        };
        if allow_change {
            eprintln!(
                "saeforge: --allow-data-change: the data changed since the checkpoint ({why}); training goes on, but this run is no longer an exact resume of {}",
                dir.display()
            );
            return Ok(());
        }
        Err(Error::input(format!(
            "--resume {}: the data changed since the checkpoint ({why}); a resumed run must read the same shards (restore them, or go on anyway with --allow-data-change, or start a new run)",
            dir.display()
        )))
    }
}

/// What `info` says about a run folder's integrity: whether its exported files carry
/// digests (they were checked when the SAE was loaded), and its checkpoint, loaded (which
/// checks its digests) if there is one. Errors are the loaders' one-line refusals.
pub fn integrity_lines(dir: &Path) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let cfg: Option<serde_json::Value> = std::fs::read_to_string(dir.join(super::export::CFG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let recorded = cfg
        .as_ref()
        .and_then(|c| c.get("saeforge"))
        .and_then(|s| s.get(super::export::DIGESTS))
        .is_some();
    lines.push(if recorded {
        "digests: cfg.json, sae_weights.safetensors and their tensors verified (xxh3_64)".into()
    } else {
        "digests: none (written by another tool or an older saeforge; loaded without them)".into()
    });
    if path(dir).exists() {
        let ck = Checkpoint::load(dir)?;
        lines.push(format!(
            "checkpoint: step {} of {}, digests verified; {} shard(s) fingerprinted{}",
            ck.state.step,
            ck.config.steps,
            ck.data.len(),
            if ck.data.iter().all(|p| !p.content.is_empty()) {
                " (size, header and contents)"
            } else {
                " (size and shape only: an older checkpoint)"
            }
        ));
    }
    Ok(lines)
}

/// The line a run ends with when a shard changed under it (after the checkpoint at `step`
/// was written): what changed, where the run stands, how to go on.
pub fn data_changed_note(e: Error, step: u64, out: &Path) -> Error {
    let out = out.display();
    e.with_hint(format!(
        "stopped before step {} with a checkpoint at step {step}; restore the file and continue with: saeforge train --resume {out} (or, to go on with the changed data, no longer an exact resume: saeforge train --resume {out} --allow-data-change)",
        step + 1
    ))
}

/// `--allow-data-change` applies to `--resume` only.
pub fn check_allow_data_change(allow: bool, resuming: bool) -> Result<()> {
    if allow && !resuming {
        return Err(Error::input(
            "--allow-data-change: only applies with --resume (a new run records the data it starts on)",
        ));
    }
    Ok(())
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
    /// Write a checkpoint of `st` into `out` (its fields, borrowed: a checkpoint's 1.6 GB at
    /// 2048 -> 32768 is written where it lies).
    pub fn save(
        out: &Path,
        st: &TrainState,
        batches: u64,
        scale: f32,
        config: &TrainConfig,
        data: &[ShardPrint],
    ) -> Result<()> {
        let dir = out.join(CHECKPOINT_DIR);
        crate::io::create_dir(&dir)?;
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
            batches,
            scale,
            threshold: st.threshold,
            grad_norm: st.grad_norm,
            config: config.clone(),
            data: data.to_vec(),
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
        // Also checks the digests: a damaged checkpoint is named as such, tensor by tensor,
        // before anything is read from it.
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
        // A transcoder's decoder is (n, d_out).
        let d_out = cfg.d_out.unwrap_or(d);
        let lens = ParamSet {
            d,
            n,
            w_enc: dn,
            w_dec: n.saturating_mul(d_out),
            b_enc: n,
            b_dec: d_out,
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
            metrics: {
                // Checkpoints written before the matryoshka level slots hold 8 metrics.
                use crate::reference::reduce::{METRIC_SLOTS, slot};
                let old = st
                    .tensor("metrics")
                    .map(|v| v.shape().iter().product::<usize>());
                let mut m = if old.ok() == Some(slot::LEVEL_SSE as usize) {
                    f32s("metrics", slot::LEVEL_SSE as usize)?
                } else {
                    f32s("metrics", METRIC_SLOTS)?
                };
                m.resize(METRIC_SLOTS, 0.0);
                m
            },
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
