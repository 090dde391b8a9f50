//! One SAE being trained from a stream of batches: its engine, its folder's log and
//! checkpoints, and the bookkeeping of the training loop (steps, tokens, log intervals,
//! evaluation, divergence). `saeforge train` drives one [`Member`] over its own stream;
//! `saeforge sweep` drives several over one shared stream. Either way a member given the
//! same batches does exactly the same work, so a sweep member equals its solo run bitwise.

use std::sync::Arc;
use std::time::Instant;

use super::files::{checkpoint_note, diverged_note, write_checkpoint};
use super::{TrainOutcome, evaluate, export, summarize};
use crate::data::Batch;
use crate::gpu::Engine;
use crate::report::jsonl::{self, JsonlWriter, Record};
use crate::report::progress::Progress;
use crate::sae::checkpoint::{self, ShardPrint};
use crate::sae::engine::{StepEngine, TrainState};
use crate::sae::export::SaeModel;
use crate::sae::infer::{Encoder, default_batch};
use crate::sae::{Arch, TrainConfig};
use crate::{Error, Result};

/// Held-out rows (rows x d, raw units) and their count, shared by the members of a sweep.
pub type EvalRows = Arc<(Vec<f32>, usize)>;

/// An SAE in training: see the module docs.
pub struct Member {
    pub cfg: TrainConfig,
    pub engine_kind: Engine,
    pub engine: Box<dyn StepEngine>,
    pub scale: f32,
    prints: Arc<Vec<ShardPrint>>,
    eval_x: Option<EvalRows>,
    log: JsonlWriter,
    /// A progress bar or line (solo runs and the sweep's first member).
    pub progress: Option<Progress>,
    /// Steps taken.
    pub step: u64,
    /// Row ids drawn from the stream by the last batch this member took.
    pub consumed: u64,
    tokens_since_log: u64,
    pub tokens_total: u64,
    log_clock: Instant,
    /// Tokens trained in this process, and the seconds spent stepping them.
    pub run_tokens: u64,
    pub busy_s: f64,
    pub last: Option<Record>,
    /// The step of the checkpoint on disk, if any.
    pub last_checkpoint: Option<u64>,
    last_log_step: u64,
    /// `train --profile`: the step to time kernel by kernel (`profile.rs`).
    pub profile_at: Option<u64>,
}

impl Member {
    /// A member at `engine`'s state, whose stream position is `consumed`; its folder (with
    /// training.jsonl) is prepared already.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: TrainConfig,
        engine_kind: Engine,
        engine: Box<dyn StepEngine>,
        start_step: u64,
        consumed: u64,
        scale: f32,
        prints: Arc<Vec<ShardPrint>>,
        eval_x: Option<EvalRows>,
        resuming: bool,
    ) -> Result<Member> {
        let jsonl_path = cfg.out.join("training.jsonl");
        let last_log = jsonl::truncate_after(&jsonl_path, start_step)?;
        let log = JsonlWriter::open(&jsonl_path)?;
        // The metric sums in the state cover the steps since the last log record: usually
        // start_step % log_every of them, none after a run that finished (and logged) off the
        // log grid and is now resumed with more steps.
        let since_log = match last_log {
            Some(l) => start_step - l.min(start_step),
            None => start_step % cfg.log_every,
        };
        Ok(Member {
            tokens_since_log: since_log * cfg.batch as u64,
            tokens_total: start_step * cfg.batch as u64,
            last_checkpoint: resuming.then_some(start_step),
            last_log_step: start_step - since_log,
            profile_at: None,
            step: start_step,
            consumed,
            log_clock: Instant::now(),
            run_tokens: 0,
            busy_s: 0.0,
            last: None,
            progress: None,
            cfg,
            engine_kind,
            engine,
            scale,
            prints,
            eval_x,
            log,
        })
    }

    pub fn done(&self) -> bool {
        self.step >= self.cfg.steps
    }

    /// Whether `batch` is one this member still has to take: it is not done, and the batch
    /// comes after the one it took last (a sweep resumed from checkpoints written at
    /// different batches replays the stream from the earliest; the others wait).
    pub fn wants(&self, batch: &Batch) -> bool {
        !self.done() && batch.drawn > self.consumed
    }

    /// Take `batch`: one step, and at a log interval the metrics (and the held-out
    /// evaluation when due). A non-finite loss is `Error::Diverged`, naming what is kept.
    pub fn train(&mut self, batch: &Batch) -> Result<()> {
        if !self.begin(batch) {
            return Ok(());
        }
        let clock = Instant::now();
        let r = if self.profile_at == Some(self.step) {
            self.profiled_step(batch)
        } else {
            self.engine.step(&self.cfg, &batch.data, batch.rows)
        };
        r.map_err(|e| e.with_hint(self.note()))?;
        self.busy_s += clock.elapsed().as_secs_f64();
        self.stepped(batch)
    }

    /// `train --profile`'s step: timed by stage (and on the GPU by kernel), then reported.
    fn profiled_step(&mut self, batch: &Batch) -> Result<()> {
        use super::profile::{profile_cpu_step, profile_step};
        let (cfg, step) = (&self.cfg, self.step);
        let p = if let Some(e) = self.engine.as_gpu() {
            profile_step(e, cfg, batch, step)?
        } else if let Some(e) = self.engine.as_cpu() {
            profile_cpu_step(e, cfg, batch, step)
        } else {
            return self.engine.step(cfg, &batch.data, batch.rows);
        };
        p.report(&cfg.out)
    }

    /// The first part of [`Self::train`]: whether the batch holds rows to step on.
    pub fn begin(&mut self, batch: &Batch) -> bool {
        self.consumed = batch.drawn;
        batch.rows > 0
    }

    /// What is kept on disk, for error messages.
    pub fn note(&self) -> String {
        checkpoint_note(&self.cfg, self.last_checkpoint)
    }

    /// The last part of [`Self::train`], once the engine has stepped on `batch`.
    pub fn stepped(&mut self, batch: &Batch) -> Result<()> {
        let cfg = &self.cfg;
        self.step += 1;
        self.tokens_since_log += batch.rows as u64;
        self.tokens_total += batch.rows as u64;
        self.run_tokens += batch.rows as u64;
        let step = self.step;
        if step.is_multiple_of(cfg.log_every) || step == cfg.steps {
            self.log_step()?;
        }
        Ok(())
    }

    fn log_step(&mut self) -> Result<()> {
        let cfg = &self.cfg;
        let step = self.step;
        let last_ck = self.last_checkpoint;
        let (m, grad_norm) = self
            .engine
            .take_metrics()
            .map_err(|e| e.with_hint(checkpoint_note(cfg, last_ck)))?;
        let s = summarize(&m, self.tokens_since_log, cfg.d_sae);
        let sparsity = cfg.sparsity_coef_at(step - 1) as f64;
        let aux_loss = if crate::sae::engine::selects_topk(cfg.arch) {
            cfg.aux_coef as f64 * s.aux
        } else {
            0.0
        };
        let l1_loss = if cfg.arch == Arch::Relu {
            sparsity * s.l1
        } else {
            0.0
        };
        let l0_loss = if cfg.arch == Arch::Jumprelu {
            sparsity * s.l0
        } else {
            0.0
        };
        let levels = cfg.matryoshka_widths.len();
        let level_mse: Option<Vec<f64>> = (levels > 0).then(|| {
            let first = crate::reference::reduce::slot::LEVEL_SSE as usize;
            let r = self.tokens_since_log.max(1) as f64;
            m[first..first + levels]
                .iter()
                .map(|&v| v as f64 / r)
                .collect()
        });
        // The inner levels' MSE (all but the full one, which is `mse`).
        let inner: f64 = level_mse
            .as_ref()
            .map_or(0.0, |l| l[..l.len() - 1].iter().sum());
        let secs = self.log_clock.elapsed().as_secs_f64();
        let mut r = Record {
            step,
            tokens: self.tokens_total,
            lr: cfg.lr_at(step - 1),
            loss: s.mse + inner + aux_loss + l1_loss + l0_loss,
            mse: s.mse,
            aux_loss,
            l1_loss,
            l0_loss,
            l0: s.l0,
            explained_variance: s.ev,
            dead_fraction: s.dead_fraction,
            grad_norm,
            tokens_per_s: self.tokens_since_log as f64 / secs.max(1e-9),
            k: cfg.anneals_k().then(|| cfg.k_at(step - 1)),
            level_mse,
            eval_mse: None,
            eval_explained_variance: None,
            eval_l0: None,
        };
        if !r.loss.is_finite() || !grad_norm.is_finite() {
            self.finish_progress();
            let at = if self.last_log_step + 1 == step {
                format!("at step {step}")
            } else {
                format!("at a step in {}..={step}", self.last_log_step + 1)
            };
            return Err(Error::Diverged(format!(
                "training diverged: non-finite loss ({}) or gradient norm ({grad_norm}) {at}; stopped. {}",
                r.loss,
                diverged_note(cfg, last_ck),
            )));
        }
        let is_last = step == cfg.steps;
        let eval_due = cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every) || is_last;
        if let (true, Some(ev)) = (eval_due, &self.eval_x) {
            let (ex, erows) = (&ev.0, ev.1);
            let st = self.engine.state()?;
            let model = SaeModel::from_training(&st.params, cfg, self.scale, st.threshold);
            // On the training engine: the GPU's encoder kernels, or the CPU twins.
            let batch = default_batch(model.n).min(erows);
            let encoder = Encoder::new(&model, &self.engine_kind, batch)?;
            let (mse, ev, l0) = evaluate(&encoder, ex, erows)?;
            r.eval_mse = Some(mse);
            r.eval_explained_variance = Some(ev);
            r.eval_l0 = Some(l0);
        }
        self.log
            .write(&r)
            .map_err(|e| e.with_hint(checkpoint_note(cfg, last_ck)))?;
        if let Some(p) = &self.progress {
            p.update(&r);
        }
        self.last = Some(r);
        self.tokens_since_log = 0;
        self.last_log_step = step;
        self.log_clock = Instant::now();
        Ok(())
    }

    /// Checkpoint if one is due at this step (not the last: `finish` writes that one).
    pub fn checkpoint_if_due(&mut self) -> Result<()> {
        let ce = self.cfg.checkpoint_every;
        if ce > 0
            && self.step.is_multiple_of(ce)
            && !self.done()
            && self.last_checkpoint != Some(self.step)
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Write a checkpoint at this step unless the one on disk is at it already.
    pub fn checkpoint(&mut self) -> Result<()> {
        if self.last_checkpoint == Some(self.step) {
            return Ok(());
        }
        self.checkpoint_and(|_, _, _| Ok(()))
    }

    /// The engine's state (borrowed from the CPU engine, read back from the GPU engine),
    /// written as this member's checkpoint (see `write_checkpoint`) unless the one on disk
    /// is at this step, then handed to `and` with the config and the input scale (the
    /// export at the end of a run): one readback for both.
    fn checkpoint_and(
        &mut self,
        and: impl FnOnce(&TrainConfig, &TrainState, f32) -> Result<()>,
    ) -> Result<()> {
        let (cfg, last) = (&self.cfg, self.last_checkpoint);
        let st = self
            .engine
            .state()
            .map_err(|e| e.with_hint(checkpoint_note(cfg, last)))?;
        if last != Some(self.step) {
            write_checkpoint(&st, cfg, self.consumed, self.scale, last, &self.prints)?;
        }
        and(cfg, &st, self.scale)?;
        self.last_checkpoint = Some(self.step);
        Ok(())
    }

    /// The stream failed before this member's next step: keep what was trained (a
    /// checkpoint), and return the error with a note on how to go on (`resume` is the
    /// command that continues).
    pub fn stream_failed(&mut self, e: Error, resume: &str) -> Error {
        self.finish_progress();
        let keep = |m: &mut Member| m.checkpoint();
        match e {
            // Bad data met while streaming: the bad batch never reached the parameters.
            e @ Error::Input(_) => {
                if let Err(ce) = keep(self) {
                    return ce;
                }
                let how = if self.cfg.skip_nonfinite {
                    String::new()
                } else {
                    " --skip-nonfinite".to_string()
                };
                e.with_hint(format!(
                    "stopped before step {} with a checkpoint at step {}; fix the data, or drop such rows with: {resume}{how}",
                    self.step + 1,
                    self.step,
                ))
            }
            // reliability: a shard changed under the run: keep what was trained, exit 1.
            e @ Error::DataChanged(_) => {
                if let Err(ce) = keep(self) {
                    return ce;
                }
                checkpoint::data_changed_note(e, self.step, &self.cfg.out)
            }
            e => e.with_hint(checkpoint_note(&self.cfg, self.last_checkpoint)),
        }
    }

    pub fn finish_progress(&self) {
        if let Some(p) = &self.progress {
            p.finish();
        }
    }

    /// The end of the run (or an interruption): the final checkpoint, and unless
    /// interrupted the SAELens export. `secs` is the run's wall time.
    pub fn finish(
        mut self,
        interrupted: bool,
        secs: f64,
        skipped_rows: u64,
    ) -> Result<TrainOutcome> {
        self.finish_progress();
        let step = self.step;
        self.checkpoint_and(|cfg, st, scale| {
            if interrupted {
                return Ok(());
            }
            export(cfg, st, scale).map_err(|e| {
                e.with_hint(format!(
                    "the final checkpoint (step {step}) was written; export again with: saeforge train --resume {}",
                    cfg.out.display()
                ))
            })
        })?;
        let cfg = &self.cfg;
        Ok(TrainOutcome {
            out: cfg.out.clone(),
            steps: step,
            total_steps: cfg.steps,
            tokens: self.tokens_total,
            run_tokens: self.run_tokens,
            tokens_per_s: self.run_tokens as f64 / secs.max(1e-9),
            engine: self.engine_kind.name(),
            interrupted,
            skipped_rows,
            last: self.last.clone(),
        })
    }
}
