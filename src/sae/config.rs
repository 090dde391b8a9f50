//! Training configuration. Every option exists on the command line and in a TOML file
//! (`--config run.toml`); command-line values override the file. `TrainArgs` is the raw,
//! all-optional form shared by clap and serde; `TrainConfig` is the resolved form with every
//! default filled in, saved with the run so it can be reproduced and resumed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod sources;
pub use sources::{ARCH_ONLY, EXCLUSIVE, RESUME_FLAGS};

pub use super::storage::BatchDtype;
use crate::gpu::DeviceChoice;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// ReLU with an L1 penalty weighted by decoder row norms (SAELens "standard").
    Relu,
    /// Per-row top-k with AuxK on dead latents (Gao et al. 2024).
    Topk,
    /// Top k*batch over the whole batch; exported as JumpReLU with the learned threshold.
    Batchtopk,
    /// JumpReLU with a trainable threshold and an L0 penalty (Rajamanoharan et al. 2024).
    Jumprelu,
    /// Matryoshka BatchTopK (Bussmann et al. 2025): BatchTopK whose reconstruction loss is
    /// summed over nested prefixes of the dictionary (`--matryoshka-widths`); exported as
    /// JumpReLU like batchtopk.
    Matryoshka,
}

impl Arch {
    /// The flag's value (`--arch relu`, ...), as serde writes it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Relu => "relu",
            Arch::Topk => "topk",
            Arch::Batchtopk => "batchtopk",
            Arch::Jumprelu => "jumprelu",
            Arch::Matryoshka => "matryoshka",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderNorm {
    /// Decoder rows kept at unit norm, gradient parallel to each row removed.
    Unit,
    /// Decoder rows free (the L1 penalty of relu SAEs weights by their norms).
    Free,
    /// Decoder rows free, but the codes see unit rows: pre-activations are multiplied by
    /// each row's norm and the decode divides by it (SAELens's TopK
    /// `rescale_acts_by_decoder_norm`). The norms are folded into the exported weights.
    Rescale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BDecInit {
    /// Geometric median of the sampled rows (Weiszfeld).
    Median,
    /// Mean of the sampled rows.
    Mean,
    /// Zeros (SAELens's default).
    Zeros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    Constant,
    Linear,
    Cosine,
}

/// `saeforge train` options, all optional so that the file and the command line can merge.
#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainArgs {
    /// TOML file with any of these options (command-line values win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Activation shards: files, folders or glob patterns (repeatable).
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    /// Tensor name inside the shards (default: the only floating rank-2/3 tensor).
    #[arg(long)]
    pub tensor: Option<String>,
    /// Transcoder: target shards, one per --data shard in the same order, row i of each the
    /// target of row i of its input shard (see `crate::data::paired`).
    #[arg(long, num_args = 1..)]
    pub target_data: Option<Vec<PathBuf>>,
    /// Held-out shards for periodic evaluation.
    #[arg(long, num_args = 1..)]
    pub eval_data: Option<Vec<PathBuf>>,
    /// Fraction of every shard (its last rows) held out for evaluation instead.
    #[arg(long, allow_negative_numbers = true)]
    pub eval_fraction: Option<f64>,
    /// Output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Architecture.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Number of latents (default expansion x d).
    #[arg(long)]
    pub d_sae: Option<usize>,
    /// d_sae = expansion x d when --d-sae is not given (default 32).
    #[arg(long)]
    pub expansion: Option<usize>,
    /// Active latents per row for topk / batchtopk (default 32).
    #[arg(long)]
    pub k: Option<usize>,
    /// Dead latents used by AuxK (default d/2).
    #[arg(long)]
    pub k_aux: Option<usize>,
    /// matryoshka: the nested prefix widths, strictly increasing, the last = d_sae
    /// (e.g. 128,512,2048).
    #[arg(long, value_delimiter = ',')]
    pub matryoshka_widths: Option<Vec<usize>>,
    /// topk / batchtopk: k falls linearly from --k-anneal-start to --k over the first N
    /// steps (EleutherAI sparsify's k decay; default 0 = off).
    #[arg(long)]
    pub k_anneal_steps: Option<u64>,
    /// The k the annealing starts from (default min(10 x d, d_sae), sparsify's).
    #[arg(long)]
    pub k_anneal_start: Option<usize>,
    /// AuxK loss coefficient (default 1/32).
    #[arg(long, allow_negative_numbers = true)]
    pub aux_coef: Option<f32>,
    /// L1 coefficient for relu (default 5).
    #[arg(long, allow_negative_numbers = true)]
    pub l1: Option<f32>,
    /// L0 coefficient for jumprelu (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub l0: Option<f32>,
    /// Initial JumpReLU threshold (default 0.001).
    #[arg(long, allow_negative_numbers = true)]
    pub threshold_init: Option<f32>,
    /// JumpReLU straight-through bandwidth (default 0.001).
    #[arg(long, allow_negative_numbers = true)]
    pub bandwidth: Option<f32>,
    /// Rows per step (default 4096).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Training steps (default: one pass over the data, or from --tokens).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Training tokens (rows); steps = tokens / batch.
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Learning rate (default 8e-4 / sqrt(d_sae / 16384) for topk / batchtopk, 2e-4 /
    /// sqrt(d_sae / 16384) for relu / jumprelu).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Adam beta1 (default 0.9).
    #[arg(long, allow_negative_numbers = true)]
    pub beta1: Option<f32>,
    /// Adam beta2 (default 0.999).
    #[arg(long, allow_negative_numbers = true)]
    pub beta2: Option<f32>,
    /// Adam epsilon (default 1e-8).
    #[arg(long, allow_negative_numbers = true)]
    pub adam_eps: Option<f32>,
    /// Decoupled weight decay (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Learning-rate warm-up steps (default 0 for topk / batchtopk, else 5% of the steps, at
    /// most 1000).
    #[arg(long)]
    pub lr_warmup: Option<u64>,
    /// Decay after warm-up (default constant).
    #[arg(long, value_enum)]
    pub lr_decay: Option<LrDecay>,
    /// The decay runs over the last this many steps (default: every step after warm-up).
    #[arg(long)]
    pub lr_decay_steps: Option<u64>,
    /// Learning rate at the end of the decay, as a fraction of --lr (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub lr_end: Option<f32>,
    /// Sparsity-coefficient warm-up steps for relu / jumprelu (default 5% of the steps).
    #[arg(long)]
    pub sparsity_warmup: Option<u64>,
    /// Global gradient-norm clip (default 1; 0 disables).
    #[arg(long, allow_negative_numbers = true)]
    pub grad_clip: Option<f32>,
    /// Decoder row norms (default unit for topk / batchtopk / jumprelu, free for relu).
    #[arg(long, value_enum)]
    pub decoder_norm: Option<DecoderNorm>,
    /// Initial norm of the W_dec rows, W_enc = W_dec^T (default 1; 0.1 for relu). With
    /// --decoder-norm unit the rows are back at norm 1 after the first step and the value
    /// only sets the encoder's initial scale.
    #[arg(long, allow_negative_numbers = true)]
    pub init_norm: Option<f32>,
    /// b_dec at initialisation (default median).
    #[arg(long, value_enum)]
    pub b_dec_init: Option<BDecInit>,
    /// Scale inputs so that the mean ||x|| = sqrt(d), folded into the export (default true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub normalize: Option<bool>,
    /// A latent is dead after this many tokens without firing (default: the run's tokens / 5,
    /// at most 10M).
    #[arg(long)]
    pub dead_tokens: Option<u64>,
    /// BatchTopK threshold EMA decay (default 0.99).
    #[arg(long, allow_negative_numbers = true)]
    pub threshold_ema: Option<f32>,
    /// Seed for initialisation and data order (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the data order and the initialisation sample alone (default: --seed). A
    /// sweep whose members differ in --seed gives them one --data-seed, so that they share
    /// one pass over the data.
    #[arg(long)]
    pub data_seed: Option<u64>,
    /// Engine: auto (hardware GPU if any, else CPU), gpu (any wgpu adapter), cpu.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Pick the adapter whose name contains this.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Steps between log lines / training.jsonl records (default: about 100 per run).
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Steps between evaluations on held-out data (default: 10 per run; 0 = only at the end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Held-out rows per evaluation (default 8192).
    #[arg(long)]
    pub eval_rows: Option<usize>,
    /// Steps between checkpoints (default: 10 per run; 0 = only at the end and on Ctrl-C).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Shuffle buffer size in rows (ids only; default 1048576; 0 or 1 disables shuffling).
    #[arg(long)]
    pub shuffle_rows: Option<usize>,
    /// Batches the prefetch thread keeps ready (default 4).
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Rows sampled to estimate the input scale and the b_dec geometric median (default 8192).
    #[arg(long)]
    pub init_rows: Option<usize>,
    /// Drop rows with NaN/Inf instead of stopping.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub skip_nonfinite: Option<bool>,
    /// The dtype training batches are stored in (default f32): f16 rounds each scaled value
    /// to the nearest half and halves the upload to the GPU; f32 math after it.
    #[arg(long, value_enum)]
    pub batch_dtype: Option<BatchDtype>,
    /// Replace an existing run in --out.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub overwrite: Option<bool>,
    /// Continue the run in this folder from its checkpoint.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// With --resume: go on even if the shards changed since the checkpoint (the run is
    /// then no longer an exact resume).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip)]
    pub allow_data_change: Option<bool>,
    /// Time the run's third step kernel by kernel on the GPU engine (GPU time from timestamp
    /// queries where the adapter has them): a table on stderr and OUT/profile.json.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip)]
    pub profile: Option<bool>,
}

/// Resolved configuration: every default filled in, every value checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub data: Vec<PathBuf>,
    pub tensor: Option<String>,
    /// Transcoder: the target shards (empty for an SAE).
    #[serde(default)]
    pub target_data: Vec<PathBuf>,
    /// Transcoder: the target's width (None for an SAE, whose output is its input).
    #[serde(default)]
    pub d_out: Option<usize>,
    /// Transcoder: the target's scale, from the initialisation sample (1 for an SAE).
    #[serde(default = "default_init_norm")]
    pub target_scale: f32,
    pub eval_data: Vec<PathBuf>,
    pub eval_fraction: f64,
    pub out: PathBuf,
    pub arch: Arch,
    pub d_in: usize,
    pub d_sae: usize,
    pub k: usize,
    pub k_aux: usize,
    /// matryoshka: the nested prefix widths (the last = d_sae); empty for other archs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matryoshka_widths: Vec<usize>,
    /// k annealing (`schedule.rs`): steps (0 = off) and the k it starts from (k when off).
    #[serde(default)]
    pub k_anneal_steps: u64,
    #[serde(default)]
    pub k_anneal_start: usize,
    pub aux_coef: f32,
    pub l1: f32,
    pub l0: f32,
    pub threshold_init: f32,
    pub bandwidth: f32,
    pub batch: usize,
    pub steps: u64,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    pub weight_decay: f32,
    pub lr_warmup: u64,
    pub lr_decay: LrDecay,
    #[serde(default)]
    pub lr_decay_steps: Option<u64>,
    #[serde(default)]
    pub lr_end: f32,
    pub sparsity_warmup: u64,
    pub grad_clip: f32,
    pub decoder_norm: DecoderNorm,
    #[serde(default = "default_init_norm")]
    pub init_norm: f32,
    #[serde(default = "default_b_dec_init")]
    pub b_dec_init: BDecInit,
    pub normalize: bool,
    pub dead_tokens: u64,
    pub threshold_ema: f32,
    pub seed: u64,
    /// The data order's and the initialisation sample's seed when it is not `seed`
    /// (`TrainConfig::data_seed`).
    #[serde(default)]
    pub data_seed: Option<u64>,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
    pub log_every: u64,
    pub eval_every: u64,
    pub eval_rows: usize,
    pub checkpoint_every: u64,
    pub shuffle_rows: usize,
    pub prefetch: usize,
    pub init_rows: usize,
    pub skip_nonfinite: bool,
    #[serde(default)]
    pub batch_dtype: BatchDtype,
}

impl TrainArgs {
    /// The first float option that is NaN or infinite (JSON, used to merge, has no such
    /// numbers, so they would silently become "unset").
    fn nonfinite(&self) -> Option<(&'static str, f64)> {
        let f32s = [
            ("aux-coef", self.aux_coef),
            ("l1", self.l1),
            ("l0", self.l0),
            ("threshold-init", self.threshold_init),
            ("bandwidth", self.bandwidth),
            ("lr", self.lr),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("adam-eps", self.adam_eps),
            ("weight-decay", self.weight_decay),
            ("grad-clip", self.grad_clip),
            ("threshold-ema", self.threshold_ema),
            ("lr-end", self.lr_end),
            ("init-norm", self.init_norm),
        ];
        f32s.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v as f64)))
            .chain(self.eval_fraction.map(|v| ("eval-fraction", v)))
            .find(|(_, v)| !v.is_finite())
    }
}

/// Configs saved before `init_norm` / `b_dec_init` existed (read on --resume, which does
/// not initialise again).
fn default_init_norm() -> f32 {
    1.0
}

fn default_b_dec_init() -> BDecInit {
    BDecInit::Median
}

/// `v` > 0 (NaN is refused too: the negated comparison is the point).
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn positive<T: PartialOrd + Default + std::fmt::Display + Copy>(flag: &str, v: T) -> Result<T> {
    if !(v > T::default()) {
        return Err(Error::input(format!("--{flag} {v}: expected a value > 0")));
    }
    Ok(v)
}

/// `--prefetch`: at least one batch kept ready (its memory is checked with the run's).
fn prefetch(v: usize) -> Result<usize> {
    if v == 0 {
        return Err(Error::input(
            "--prefetch 0: expected at least 1 (batches the prefetch thread keeps ready)",
        ));
    }
    Ok(v)
}

/// A finite float > 0.
fn positive_f32(flag: &str, v: f32) -> Result<f32> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(Error::input(format!(
            "--{flag} {v}: expected a finite value > 0"
        )));
    }
    Ok(v)
}

/// A finite float >= 0.
pub(crate) fn nonneg(flag: &str, v: f32) -> Result<f32> {
    if v < 0.0 || !v.is_finite() {
        return Err(Error::input(format!(
            "--{flag} {v}: expected a finite value >= 0"
        )));
    }
    Ok(v)
}

impl TrainConfig {
    /// The seed of the data order and of the initialisation sample: --data-seed, else
    /// --seed (which alone seeds the parameters).
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Fill defaults and check ranges. `d_in` and `total_rows` (training rows available)
    /// come from the validated shards.
    pub fn resolve(a: &TrainArgs, d_in: usize, total_rows: u64) -> Result<TrainConfig> {
        let data = a.data.clone().unwrap_or_default();
        let out = a
            .out
            .clone()
            .ok_or_else(|| Error::input("--out: missing (the folder for the run)"))?;
        let arch = a.arch.unwrap_or(Arch::Topk);
        let expansion = positive("expansion", a.expansion.unwrap_or(32))?;
        let d_sae = match a.d_sae {
            Some(n) => positive("d-sae", n)?,
            None => expansion.checked_mul(d_in).ok_or_else(|| {
                Error::input(format!(
                    "--expansion {expansion}: d_sae = {expansion} x d ({d_in}) is too large"
                ))
            })?,
        };
        let k = positive("k", a.k.unwrap_or(32))?;
        if super::engine::selects_topk(arch) && k > d_sae {
            return Err(Error::input(format!(
                "--k {k}: expected at most d_sae = {d_sae}"
            )));
        }
        // The default, d / 2, is held to d_sae; a --k-aux past it is refused (AuxK picks
        // at most d_sae latents), as --k is, for the architectures that read it.
        let k_aux = match a.k_aux {
            Some(v) if super::engine::selects_topk(arch) && v > d_sae => {
                return Err(Error::input(format!(
                    "--k-aux {v}: expected 1 ..= d_sae ({d_sae})"
                )));
            }
            Some(v) => positive("k-aux", v)?.min(d_sae),
            None => (d_in / 2).max(1).min(d_sae),
        };
        let batch = positive("batch", a.batch.unwrap_or(4096))?;
        let steps = match (a.steps, a.tokens) {
            (Some(s), _) => positive("steps", s)?,
            (None, Some(t)) => positive("tokens", t)?.div_ceil(batch as u64),
            (None, None) => total_rows.div_ceil(batch as u64).max(1),
        };
        // TopK / BatchTopK: 4x the L1 SAEs' base rate and no warm-up (README "Quality":
        // on unit-norm rows the old 2e-4 left the dictionary under-trained at the budgets
        // where SAELens, whose 0.1-norm rescaled decoder moves its directions ~1/0.1 faster,
        // was ahead; 4x beat it on MCC, F1 and explained variance).
        let topk_like = super::engine::selects_topk(arch);
        let matryoshka_widths =
            super::matryoshka::resolve_widths(arch, a.matryoshka_widths.as_deref(), d_sae)?;
        let base_lr = if topk_like { 8e-4 } else { 2e-4 };
        let lr = a.lr.unwrap_or(base_lr / (d_sae as f32 / 16384.0).sqrt());
        positive_f32("lr", lr)?;
        let eval_fraction = a.eval_fraction.unwrap_or(0.0);
        if !(0.0..1.0).contains(&eval_fraction) {
            return Err(Error::input(format!(
                "--eval-fraction {eval_fraction}: expected 0 <= f < 1"
            )));
        }
        let beta1 = a.beta1.unwrap_or(0.9);
        let beta2 = a.beta2.unwrap_or(0.999);
        for (flag, b) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::input(format!(
                    "--{flag} {b}: expected 0 <= beta < 1"
                )));
            }
        }
        let tokens = steps.saturating_mul(batch as u64);
        let (k_anneal_steps, k_anneal_start) =
            super::schedule::resolve_k_anneal(a, arch, k, d_in, d_sae)?;
        let cfg = TrainConfig {
            data,
            tensor: a.tensor.clone(),
            target_data: a.target_data.clone().unwrap_or_default(),
            d_out: None,
            target_scale: 1.0,
            eval_data: a.eval_data.clone().unwrap_or_default(),
            eval_fraction,
            out,
            arch,
            d_in,
            d_sae,
            k,
            k_aux,
            matryoshka_widths,
            k_anneal_steps,
            k_anneal_start,
            aux_coef: nonneg("aux-coef", a.aux_coef.unwrap_or(1.0 / 32.0))?,
            l1: nonneg("l1", a.l1.unwrap_or(5.0))?,
            l0: nonneg("l0", a.l0.unwrap_or(1.0))?,
            threshold_init: positive_f32("threshold-init", a.threshold_init.unwrap_or(0.001))?,
            bandwidth: positive_f32("bandwidth", a.bandwidth.unwrap_or(0.001))?,
            batch,
            steps,
            lr,
            beta1,
            beta2,
            adam_eps: positive_f32("adam-eps", a.adam_eps.unwrap_or(1e-8))?,
            weight_decay: nonneg("weight-decay", a.weight_decay.unwrap_or(0.0))?,
            lr_warmup: a
                .lr_warmup
                .unwrap_or(if topk_like { 0 } else { (steps / 20).min(1000) }),
            lr_decay: a.lr_decay.unwrap_or(LrDecay::Constant),
            lr_decay_steps: a
                .lr_decay_steps
                .map(|v| positive("lr-decay-steps", v))
                .transpose()?,
            lr_end: {
                let v = a.lr_end.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&v) {
                    return Err(Error::input(format!(
                        "--lr-end {v}: expected a fraction 0 <= f <= 1 of --lr"
                    )));
                }
                v
            },
            sparsity_warmup: a.sparsity_warmup.unwrap_or(steps / 20),
            grad_clip: nonneg("grad-clip", a.grad_clip.unwrap_or(1.0))?,
            decoder_norm: a.decoder_norm.unwrap_or(if arch == Arch::Relu {
                DecoderNorm::Free
            } else {
                DecoderNorm::Unit
            }),
            init_norm: positive_f32(
                "init-norm",
                a.init_norm
                    .unwrap_or(if arch == Arch::Relu { 0.1 } else { 1.0 }),
            )?,
            b_dec_init: a.b_dec_init.unwrap_or(BDecInit::Median),
            normalize: a.normalize.unwrap_or(true),
            dead_tokens: positive(
                "dead-tokens",
                a.dead_tokens
                    .unwrap_or((tokens / 5).clamp(batch as u64, 10_000_000)),
            )?,
            threshold_ema: a.threshold_ema.unwrap_or(0.99),
            seed: a.seed.unwrap_or(0),
            data_seed: a.data_seed.filter(|&s| Some(s) != a.seed.or(Some(0))),
            device: a.device.unwrap_or(DeviceChoice::Auto),
            adapter: a.adapter.clone(),
            log_every: positive("log-every", a.log_every.unwrap_or((steps / 100).max(1)))?,
            eval_every: a.eval_every.unwrap_or((steps / 10).max(1)),
            eval_rows: positive("eval-rows", a.eval_rows.unwrap_or(8192))?,
            checkpoint_every: a.checkpoint_every.unwrap_or((steps / 10).max(1)),
            shuffle_rows: a.shuffle_rows.unwrap_or(1 << 20),
            prefetch: prefetch(a.prefetch.unwrap_or(4))?,
            init_rows: positive("init-rows", a.init_rows.unwrap_or(8192))?,
            skip_nonfinite: a.skip_nonfinite.unwrap_or(false),
            batch_dtype: a.batch_dtype.unwrap_or_default(),
        };
        if !(0.0..1.0).contains(&cfg.threshold_ema) {
            return Err(Error::input(format!(
                "--threshold-ema {}: expected 0 <= decay < 1",
                cfg.threshold_ema
            )));
        }
        Ok(cfg)
    }

    /// Apply the flags --resume accepts (see `RESUME_FLAGS`) to a checkpoint's config.
    /// `at_step` is the checkpoint's step: a budget below it is refused.
    pub fn apply_resume_overrides(&mut self, a: &TrainArgs, at_step: u64) -> Result<()> {
        if let Some(s) = a.steps {
            self.steps = positive("steps", s)?;
        } else if let Some(t) = a.tokens {
            self.steps = positive("tokens", t)?.div_ceil(self.batch as u64);
        }
        if self.steps < at_step {
            return Err(Error::input(format!(
                "--steps {}: the run in {} is already at step {at_step}; give at least that many",
                self.steps,
                self.out.display()
            )));
        }
        if let Some(lr) = a.lr {
            self.lr = positive_f32("lr", lr)?;
        }
        if let Some((flag, v)) = a.nonfinite() {
            return Err(Error::input(format!(
                "--{flag} {v}: expected a finite number"
            )));
        }
        if let Some(v) = a.skip_nonfinite {
            self.skip_nonfinite = v;
        }
        if let Some(v) = a.device {
            self.device = v;
        }
        if a.adapter.is_some() {
            self.adapter = a.adapter.clone();
        }
        if let Some(p) = a.prefetch {
            self.prefetch = prefetch(p)?;
        }
        Ok(())
    }

    /// Tokens the run trains on.
    pub fn tokens(&self) -> u64 {
        self.steps * self.batch as u64
    }

    /// Learning rate at `step` (0-based): linear warm-up, then constant / linear / cosine
    /// down to lr * lr_end, over the last `lr_decay_steps` steps (default: all the steps
    /// after warm-up).
    pub fn lr_at(&self, step: u64) -> f32 {
        let w = self.lr_warmup;
        if step < w {
            return self.lr * (step + 1) as f32 / w as f32;
        }
        let after = self.steps - w.min(self.steps);
        let span = self.lr_decay_steps.map_or(after, |s| s.min(after));
        let start = self.steps - span;
        if step < start {
            return self.lr;
        }
        let t = ((step - start) as f32 / span.max(1) as f32).clamp(0.0, 1.0);
        let f = match self.lr_decay {
            LrDecay::Constant => return self.lr,
            LrDecay::Linear => 1.0 - t,
            LrDecay::Cosine => 0.5 * (1.0 + (std::f32::consts::PI * t).cos()),
        };
        self.lr * (self.lr_end + (1.0 - self.lr_end) * f)
    }

    /// Sparsity-coefficient multiplier at `step` (linear warm-up from 0 to 1).
    pub fn sparsity_scale_at(&self, step: u64) -> f32 {
        if step >= self.sparsity_warmup {
            1.0
        } else {
            (step + 1) as f32 / self.sparsity_warmup as f32
        }
    }

    /// The sparsity penalty's coefficient at `step` (0-based), warm-up included: the L1
    /// coefficient for relu, the L0 one for jumprelu, 0 for topk / batchtopk (whose
    /// sparsity is the selection). The one schedule both engines and the log read.
    pub fn sparsity_coef_at(&self, step: u64) -> f32 {
        let coef = match self.arch {
            Arch::Relu => self.l1,
            Arch::Jumprelu => self.l0,
            Arch::Topk | Arch::Batchtopk | Arch::Matryoshka => 0.0,
        };
        coef * self.sparsity_scale_at(step)
    }

    /// Bytes an engine holds for this run, roughly: parameters, gradients and two Adam
    /// moments, plus the per-batch buffers (pre-activations and their gradients, rows x
    /// d_sae, dominate; the GPU's transpose scratch adds rows x d_sae / 16 and a row index
    /// per code slot).
    pub fn estimate_bytes(&self) -> u128 {
        let (d, n, b) = (self.d_in as u128, self.d_sae as u128, self.batch as u128);
        let params = 2 * d * n + 3 * n + d;
        // matryoshka: each level's reconstruction and each group's dy, (levels, b, d) each.
        let levels = self.matryoshka_widths.len() as u128;
        let packed = self
            .batch_dtype
            .packed_bytes(b * (d + self.d_out.unwrap_or(0) as u128));
        let marks = 2 * b.div_ceil(32) * n + b * self.k_max().max(self.k_aux) as u128;
        4 * (4 * params + 3 * b * n + marks + (4 + 2 * levels) * b * d) + packed
    }
}

#[cfg(test)]
pub(crate) mod tests;
