//! What the two training engines share: the [`StepEngine`] trait the loop drives, the
//! training state a checkpoint holds, the per-step scalars the host computes, and the
//! capacity both engines give a step's codes. `cpu.rs` and `gpu.rs` implement the trait
//! with the same stages in the same order; `train.rs` alone picks which one runs.

use std::borrow::Cow;

use super::params::ParamSet;
use super::{Arch, SaeParams, TrainConfig};
use crate::Result;
use crate::reference::optim::AdamHyper;
use crate::reference::reduce::METRIC_SLOTS;

/// One training step on some engine, and the readbacks the loop needs.
pub trait StepEngine {
    /// Run one step on `x` (rows x d, scaled). Nothing is read back.
    fn step(&mut self, cfg: &TrainConfig, x: &[f32], rows: usize) -> Result<()>;
    /// Read the metric sums since the last call and reset them; also the last grad norm.
    fn take_metrics(&mut self) -> Result<(Vec<f32>, f32)>;
    /// The whole state, for checkpoints and the export: borrowed where the engine keeps it
    /// in host memory (the CPU engine: a checkpoint at 2048 -> 32768 does not copy its 1.6
    /// GB first), read back otherwise.
    fn state(&mut self) -> Result<Cow<'_, TrainState>>;
    /// The engine itself, for the callers that need one kind: `as_gpu` (a sweep records
    /// several steps into one submission) and `as_cpu` (`train --profile` times its
    /// stages), defined beside each engine so that this trait names neither.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// Adam's first and second moments of every parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub m: SaeParams,
    pub v: SaeParams,
}

impl Moments {
    pub fn zeros(p: &SaeParams) -> Moments {
        Moments {
            m: p.zeros_like(),
            v: p.zeros_like(),
        }
    }
}

/// The slot of each tensor's squared gradient norm in the clipping sums; `clip_scale` adds
/// the slots in this order on both engines.
pub const GRAD_NORM_SLOTS: ParamSet<u32> = ParamSet {
    d: 0,
    n: 0,
    w_enc: 0,
    w_dec: 1,
    b_enc: 2,
    b_dec: 3,
    log_threshold: 4,
};

/// Number of [`GRAD_NORM_SLOTS`].
pub const GRAD_NORM_SLOT_COUNT: usize = 5;

/// Everything a step changes, besides the parameters: what a checkpoint must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub params: SaeParams,
    pub moments: Moments,
    /// Steps taken.
    pub step: u64,
    /// Per latent: tokens since it last fired.
    pub since_fired: Vec<u32>,
    /// Per latent: times fired over the run.
    pub fire_total: Vec<u32>,
    /// BatchTopK inference threshold (EMA of the smallest kept activation).
    pub threshold: f32,
    /// Metric sums since the last read (slots of `reference::reduce::slot`).
    pub metrics: Vec<f32>,
    /// Gradient norm before clipping, of the last step.
    pub grad_norm: f32,
}

impl TrainState {
    pub fn new(params: SaeParams) -> TrainState {
        let n = params.n;
        TrainState {
            moments: Moments::zeros(&params),
            params,
            step: 0,
            since_fired: vec![0; n],
            fire_total: vec![0; n],
            threshold: 0.0,
            metrics: vec![0.0; METRIC_SLOTS],
            grad_norm: 0.0,
        }
    }

    /// Whether the Adam moments are still `new`'s zeros: before the first optimizer step
    /// (only the optimizer changes them, and it counts the step). The engines then neither
    /// read them before writing (the CPU engine) nor upload them (the GPU engine).
    pub fn moments_are_zero(&self) -> bool {
        self.step == 0
    }
}

/// Per-step scalars the host computes: the learning rate and the sparsity penalty's
/// coefficient (`TrainConfig::sparsity_coef_at`, the one schedule both engines read).
#[derive(Clone, Copy, Debug)]
pub struct StepScalars {
    pub lr: f32,
    /// The L1 (relu) or L0 (jumprelu) coefficient of this step, warm-up included; 0 for
    /// topk / batchtopk.
    pub sparsity_coef: f32,
}

impl StepScalars {
    pub fn at(cfg: &TrainConfig, step: u64) -> StepScalars {
        StepScalars {
            lr: cfg.lr_at(step),
            sparsity_coef: cfg.sparsity_coef_at(step),
        }
    }

    pub fn adam(&self, cfg: &TrainConfig, step: u64) -> AdamHyper {
        let t = (step + 1) as i32;
        AdamHyper {
            lr: self.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            bias1: 1.0 - cfg.beta1.powi(t),
            bias2: 1.0 - cfg.beta2.powi(t),
            weight_decay: cfg.weight_decay,
            _pad: 0.0,
        }
    }
}

/// Slots of a ReLU / JumpReLU step's codes, the same on both engines: rows * max(64, n / 16)
/// (at most rows * n). A step whose activation keeps more entries than this (L0 above
/// n / 16, e.g. a fresh ReLU SAE, which fires on half its latents) takes the dense path:
/// past that the gathers cost more than the dense products they replace (on lavapipe the
/// break-even measured near L0 = 600 of 16384).
pub fn code_capacity(rows: usize, n: usize) -> usize {
    rows * (n / 16).max(64).min(n)
}

/// Tokens without firing after which a latent counts as dead, as the counters hold it.
pub fn dead_after(cfg: &TrainConfig) -> u32 {
    cfg.dead_tokens.min(u32::MAX as u64) as u32
}

/// Whether the architecture's codes are a top-k selection (with AuxK), rather than the
/// entries a ReLU / JumpReLU keeps.
pub fn selects_topk(arch: Arch) -> bool {
    matches!(arch, Arch::Topk | Arch::Batchtopk | Arch::Matryoshka)
}

/// Whether the codes are one top-k selection over the whole batch (batchtopk and
/// matryoshka, which share the selection, the threshold and the export).
pub fn selects_batch_topk(arch: Arch) -> bool {
    matches!(arch, Arch::Batchtopk | Arch::Matryoshka)
}
