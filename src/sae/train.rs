//! The training loop, engine-agnostic: data stream -> engine steps -> metrics at log
//! intervals (the only readback) -> evaluation, checkpoints, export, plots.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

mod files;
mod member;
mod paired;
pub mod profile;

pub use files::{export, log10_sparsity, plot_run};
pub use member::{EvalRows, Member};

use super::checkpoint::{self, Checkpoint, ShardPrint};
use super::cpu::CpuEngine;
use super::engine::{StepEngine, TrainState};
use super::gpu::GpuEngine;
use super::infer::Encoder;
use super::{SaeParams, TrainArgs, TrainConfig};
use crate::data::{BatchStream, Prefetcher, Shard, discover, open_shards};
use crate::gpu::Engine;
use crate::reference::reduce::slot;
use crate::report::jsonl::Record;
use crate::report::progress::Progress;
use crate::report::startup::phase;
use crate::stop::StopToken;
use crate::{Error, Result};
pub use files::{holds_run, prepare_out};

/// How a training run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub out: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    /// Tokens trained by this invocation (0 when a resumed run was already finished).
    pub run_tokens: u64,
    pub tokens_per_s: f64,
    pub engine: String,
    pub interrupted: bool,
    /// The run's budget (steps) when it stopped.
    pub total_steps: u64,
    /// Rows dropped for holding NaN / Inf (with --skip-nonfinite).
    pub skipped_rows: u64,
    pub last: Option<Record>,
}

/// Row ranges [start, end) of every shard.
type Ranges = Vec<(u64, u64)>;

/// Rows of every shard used for training and for evaluation.
pub fn split(shards: &[Shard], eval_fraction: f64) -> (Ranges, Ranges) {
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for s in shards {
        let rows = s.rows as u64;
        let held = ((rows as f64) * eval_fraction).floor() as u64;
        train.push((0, rows - held));
        eval.push((rows - held, rows));
    }
    (train, eval)
}

/// Summaries of a metric vector over `rows` rows.
pub struct Summary {
    pub mse: f64,
    pub ev: f64,
    pub l0: f64,
    pub l1: f64,
    pub aux: f64,
    pub dead_fraction: f64,
}

pub fn summarize(m: &[f32], rows: u64, n: usize) -> Summary {
    let r = rows.max(1) as f64;
    let sse = m[slot::SSE as usize] as f64;
    let sst = m[slot::SST as usize] as f64;
    Summary {
        mse: sse / r,
        ev: if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
        l0: m[slot::L0 as usize] as f64 / r,
        l1: m[slot::L1 as usize] as f64 / r,
        aux: m[slot::AUX as usize] as f64 / r,
        dead_fraction: m[slot::DEAD as usize] as f64 / n as f64,
    }
}

/// Held-out evaluation of an exported model (raw units) by its encoder on the engine the
/// encoder runs on: (mse, explained variance, l0), the sums over every row of `x` (rows, d)
/// in f64, batch by batch.
pub fn evaluate(encoder: &Encoder, x: &[f32], rows: usize) -> Result<(f64, f64, f64)> {
    let d = encoder.model().d;
    let mut mean = vec![0.0f64; d];
    for r in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64 / rows as f64;
        }
    }
    let (mut sse, mut sst, mut l0) = (0.0f64, 0.0f64, 0.0f64);
    for part in x.chunks(encoder.batch * d) {
        let out = encoder.run(part, part.len() / d, false)?;
        for (r, h) in part.chunks_exact(d).zip(out.x_hat.chunks_exact(d)) {
            for j in 0..d {
                sse += (r[j] as f64 - h[j] as f64).powi(2);
                sst += (r[j] as f64 - mean[j]).powi(2);
            }
        }
        l0 += out.l0_sum;
    }
    Ok((
        sse / rows as f64,
        if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
        l0 / rows as f64,
    ))
}

/// The scale of a side's activations (an SAE's inputs, a transcoder's inputs or targets):
/// sqrt(d) / the mean row norm of the sample `x` (rows x d) with --normalize, else 1.
fn scale_of(cfg: &TrainConfig, x: &[f32], d: usize) -> f32 {
    let rows = x.len() / d;
    // The rows' norms in parallel (each a sequential f64 sum), added in row order.
    let norms: Vec<f64> = x
        .par_chunks_exact(d)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mn = norms.iter().sum::<f64>() / rows.max(1) as f64;
    if cfg.normalize && mn > 0.0 {
        ((d as f64).sqrt() / mn) as f32
    } else {
        1.0
    }
}

/// The data of a run, validated: its shards (with their fingerprints) and the rows of each
/// used for training.
pub struct RunData {
    pub shards: Arc<Vec<Shard>>,
    /// Transcoders: the target shards, paired with `shards` (`super::transcoder`).
    pub targets: Option<Arc<Vec<Shard>>>,
    /// The fingerprints of `shards`, then of `targets`.
    pub prints: Arc<Vec<ShardPrint>>,
    pub train_ranges: Ranges,
    pub eval_ranges: Ranges,
}

impl RunData {
    /// Open and check every shard of `cfg.data` (against the checkpoint's fingerprints when
    /// resuming).
    pub fn open(
        cfg: &TrainConfig,
        resume_from: Option<&Checkpoint>,
        allow_change: bool,
    ) -> Result<RunData> {
        let resuming = resume_from.is_some();
        let paths = discover(&cfg.data).map_err(|e| {
            if resuming {
                e.with_hint("the resumed run reads the data named in its config.json")
            } else {
                e
            }
        })?;
        let shards = Arc::new(open_shards(&paths, cfg.tensor.as_deref())?);
        RunData::from_shards(cfg, shards, resume_from, allow_change)
    }

    /// [`RunData::open`] on shards opened already (a sweep opens them once; a
    /// transcoder's target shards are opened and paired here).
    pub fn from_shards(
        cfg: &TrainConfig,
        shards: Arc<Vec<Shard>>,
        resume_from: Option<&Checkpoint>,
        allow_change: bool,
    ) -> Result<RunData> {
        let targets = super::transcoder::open_targets(cfg, &shards)?;
        RunData::with_targets(cfg, shards, targets, resume_from, allow_change)
    }

    /// [`RunData::from_shards`] with a transcoder's target shards (paired already).
    pub fn with_targets(
        cfg: &TrainConfig,
        shards: Arc<Vec<Shard>>,
        targets: Option<Arc<Vec<Shard>>>,
        resume_from: Option<&Checkpoint>,
        allow_change: bool,
    ) -> Result<RunData> {
        let resuming = resume_from.is_some();
        if cfg.d_out.is_some() != targets.is_some() {
            return Err(Error::input(
                "--target-data: a transcoder needs its target shards (and an SAE has none)",
            ));
        }
        let prints: Vec<ShardPrint> = shards
            .iter()
            .chain(targets.iter().flat_map(|t| t.iter()))
            .map(ShardPrint::of)
            .collect();
        checkpoint::check_allow_data_change(allow_change, resuming)?; // reliability
        if let Some(ck) = resume_from {
            ShardPrint::check_same(&ck.data, &prints, &cfg.out, allow_change)?;
        }
        if shards[0].d != cfg.d_in {
            return Err(Error::input(format!(
                "{}: d = {}, but the run was configured for d = {}",
                shards[0].path.display(),
                shards[0].d,
                cfg.d_in
            )));
        }
        let (train_ranges, eval_ranges) = split(&shards, cfg.eval_fraction);
        if train_ranges.iter().all(|(a, b)| a == b) {
            return Err(Error::input(format!(
                "--eval-fraction {}: leaves no training rows",
                cfg.eval_fraction
            )));
        }
        Ok(RunData {
            shards,
            targets,
            prints: Arc::new(prints),
            train_ranges,
            eval_ranges,
        })
    }

    /// Training rows available.
    pub fn train_rows(&self) -> u64 {
        self.train_ranges.iter().map(|(a, b)| b - a).sum()
    }

    /// The held-out rows of `cfg` (--eval-data, or the --eval-fraction tail), if any.
    pub fn eval_rows(&self, cfg: &TrainConfig) -> Result<Option<EvalRows>> {
        let x = if !cfg.eval_data.is_empty() {
            let ep = discover(&cfg.eval_data)?;
            let es = Arc::new(open_shards(&ep, cfg.tensor.as_deref())?);
            if es[0].d != cfg.d_in {
                return Err(Error::input(format!(
                    "--eval-data {}: d = {}, training data has d = {}",
                    es[0].path.display(),
                    es[0].d,
                    cfg.d_in
                )));
            }
            let total: usize = es.iter().map(|s| s.rows).sum();
            let ranges = es.iter().map(|s| (0, s.rows as u64)).collect();
            Some(first_rows(cfg, es, ranges, cfg.eval_rows.min(total))?)
        } else if cfg.eval_fraction > 0.0 {
            let total: u64 = self.eval_ranges.iter().map(|(a, b)| b - a).sum();
            if total == 0 {
                None
            } else {
                let rows = (cfg.eval_rows as u64).min(total) as usize;
                Some(first_rows(
                    cfg,
                    self.shards.clone(),
                    self.eval_ranges.clone(),
                    rows,
                )?)
            }
        } else {
            None
        };
        Ok(x.map(Arc::new))
    }

    /// The initialisation sample of the training stream (which also meets the first NaN /
    /// Inf rows, if any, before anything is written): the input scale, the sample scaled
    /// by it (for `SaeParams::init`), and the rows skipped.
    pub fn init_sample(&self, cfg: &TrainConfig) -> Result<(f32, Vec<f32>, u64)> {
        let sample = self.init_stream(cfg, self.shards.clone())?.next_batch()?;
        let scale = scale_of(cfg, &sample.data, cfg.d_in);
        let mut scaled = sample.data;
        scaled.iter_mut().for_each(|v| *v *= scale);
        Ok((scale, scaled, sample.skipped as u64))
    }

    /// A stream over the training ranges of `shards` (the inputs, or a transcoder's
    /// targets), NaN / Inf rows handled as `cfg` says: `rows` rows a batch in the order of
    /// `seed`.
    pub(super) fn stream_of(
        &self,
        cfg: &TrainConfig,
        shards: Arc<Vec<Shard>>,
        seed: u64,
        rows: usize,
    ) -> Result<BatchStream> {
        let mut s = BatchStream::new(
            shards,
            self.train_ranges.clone(),
            seed,
            rows,
            cfg.shuffle_rows,
        )?;
        s.skip_nonfinite = cfg.skip_nonfinite;
        Ok(s)
    }

    /// The stream the initialisation sample of `shards` is drawn from.
    pub(super) fn init_stream(
        &self,
        cfg: &TrainConfig,
        shards: Arc<Vec<Shard>>,
    ) -> Result<BatchStream> {
        self.stream_of(cfg, shards, cfg.data_seed() ^ 0x1717, cfg.init_rows)
    }

    /// The training stream of `cfg`, scaled, past the first `batches` row ids, on the
    /// prefetch thread.
    pub fn stream(&self, cfg: &TrainConfig, scale: f32, batches: u64) -> Result<Prefetcher> {
        let mut stream = self.stream_of(cfg, self.shards.clone(), cfg.data_seed(), cfg.batch)?;
        stream.scale = scale;
        stream.target = self.target_stream(cfg)?;
        stream.skip_ids(batches);
        Ok(Prefetcher::new(stream, cfg.prefetch))
    }
}

/// The first `rows` rows of `ranges` of `shards`, in order, NaN / Inf rows handled as
/// `cfg` says: (rows, their count).
fn first_rows(
    cfg: &TrainConfig,
    shards: Arc<Vec<Shard>>,
    ranges: Ranges,
    rows: usize,
) -> Result<(Vec<f32>, usize)> {
    let mut st = BatchStream::new(shards, ranges, 0, rows, 0)?;
    st.skip_nonfinite = cfg.skip_nonfinite;
    let b = st.next_batch()?;
    Ok((b.data, b.rows))
}

/// The engine `cfg` trains on and why (`--device`, as `engine_choice` decides), after
/// refusing what the run cannot do.
pub fn choose_engine(cfg: &TrainConfig) -> Result<(Engine, String)> {
    super::transcoder::check_supported(cfg)?;
    super::engine_choice::select_training_engine(cfg.device, cfg.adapter.as_deref(), cfg)
}

/// Whether `cfg` fits the engine (device memory and bindings, or host memory), before
/// anything large is allocated.
pub fn check_fits(engine: &Engine, cfg: &TrainConfig) -> Result<()> {
    // The initialisation sample is drawn on the host whatever the engine: the rows and
    // their scaled copy (and a transcoder's targets).
    let width = (cfg.d_in + cfg.d_out.unwrap_or(0)) as u128;
    crate::io::check_host_memory(
        &format!("--init-rows {} (d = {})", cfg.init_rows, cfg.d_in),
        2 * 4 * cfg.init_rows as u128 * width,
        "lower --init-rows (default 8192)",
    )?;
    // The prefetch queue: its batches (f32 rows) and a slot each, plus the one in use.
    crate::io::check_host_memory(
        &format!("--prefetch {} with --batch {}", cfg.prefetch, cfg.batch),
        (cfg.prefetch as u128 + 1).saturating_mul(4 * cfg.batch as u128 * width + 128),
        "lower --prefetch (default 4)",
    )?;
    match engine {
        Engine::Gpu(gpu) => GpuEngine::check_capacity(gpu, cfg),
        Engine::Cpu => crate::io::check_host_memory(
            &format!(
                "--d-sae {} with --batch {} on the CPU engine",
                cfg.d_sae, cfg.batch
            ),
            cfg.estimate_bytes(),
            "lower --d-sae or --batch",
        ),
    }
}

/// The step engine of `cfg` at `state`.
pub fn make_engine(
    engine: &Engine,
    cfg: &TrainConfig,
    state: TrainState,
) -> Result<Box<dyn StepEngine>> {
    Ok(match engine {
        Engine::Cpu => Box::new(CpuEngine::new(state)),
        Engine::Gpu(gpu) => Box::new(GpuEngine::new(gpu.clone(), cfg, &state)?),
    })
}

/// The fresh state of `cfg`: parameters initialised from the scaled sample.
pub fn fresh_state(cfg: &TrainConfig, scaled_sample: &[f32]) -> TrainState {
    TrainState::new(SaeParams::init(cfg, scaled_sample))
}

/// `saeforge train`. Every input is checked before anything is written: the shards, the
/// flags, the output folder, the device (and whether the dictionary fits it); then the
/// loop runs, checkpointing atomically, and stops cleanly on SIGINT / SIGTERM, on bad data
/// (before the bad batch reaches the parameters), on divergence and on device faults,
/// always leaving the last good checkpoint in place.
pub fn run(args: &TrainArgs) -> Result<TrainOutcome> {
    run_until(args, &StopToken::new())
}

/// [`run`], stopping at the next step boundary once `stop` is stopped (by Ctrl-C under the
/// caller's `SignalGuard`): the checkpoint is written and the outcome says `interrupted`.
pub fn run_until(args: &TrainArgs, stop: &StopToken) -> Result<TrainOutcome> {
    run_until_with(args, None, stop)
}

/// [`run_until`] with `args.config`'s file already read (`file`; None: read it here), so
/// that a caller who needed it first reads it once.
pub fn run_until_with(
    args: &TrainArgs,
    file: Option<TrainArgs>,
    stop: &StopToken,
) -> Result<TrainOutcome> {
    // Resolve the configuration (a resumed run keeps its own; see `RESUME_FLAGS`).
    let run_lock; // reliability: one writer per folder (crate::lock)
    let (mut cfg, resume_from) = if let Some(dir) = &args.resume {
        args.check_resume()?;
        run_lock = crate::lock::acquire_existing(dir, "--resume")?; // reliability
        if !checkpoint::path(dir).exists() {
            return Err(Error::input(format!(
                "--resume {}: no checkpoint at {}",
                dir.display(),
                checkpoint::path(dir).display()
            )));
        }
        let ck = Checkpoint::load(dir)?;
        let mut cfg = ck.config.clone();
        cfg.out = dir.clone();
        cfg.apply_resume_overrides(args, ck.state.step)?;
        (cfg, Some(ck))
    } else {
        let file = match (file, &args.config) {
            (Some(f), _) => f,
            (None, Some(p)) => TrainArgs::from_toml(p)?,
            (None, None) => TrainArgs::default(),
        };
        let merged = args.merged_over(&file)?;
        let cfg = resolve_new(&merged)?;
        run_lock = crate::lock::acquire_existing(&cfg.out, "--out")?; // reliability
        check_new_out(&cfg, merged.overwrite.unwrap_or(false), "--out")?;
        (cfg, None)
    };
    phase("configuration resolved");
    let resuming = resume_from.is_some();
    let overwrite = !resuming && args.overwrite.unwrap_or(false);

    // Data: validate every shard before any work.
    let allow_change = args.allow_data_change.unwrap_or(false); // reliability
    let data = RunData::open(&cfg, resume_from.as_ref(), allow_change)?;
    phase("shards validated");

    // Engine, and whether the run fits it, before anything large is allocated.
    let (engine_kind, why) = choose_engine(&cfg)?;
    check_fits(&engine_kind, &cfg)?;
    phase("engine chosen");
    let eval_x = data.eval_rows(&cfg)?;
    phase("held-out rows read");

    // Initial state: scale and b_dec from a sample of the training stream.
    let mut skipped_rows = 0u64;
    let (state, scale, batches) = match resume_from {
        Some(ck) => (ck.state, ck.scale, ck.batches),
        None => {
            let (scale, scaled, skipped) = if cfg.d_out.is_some() {
                // A transcoder: each side its own scale; b_dec from the targets.
                let (s_in, s_out, y, skipped) = data.init_sample_paired(&cfg)?;
                cfg.target_scale = s_out;
                (s_in, y, skipped)
            } else {
                data.init_sample(&cfg)?
            };
            skipped_rows += skipped;
            (fresh_state(&cfg, &scaled), scale, 0)
        }
    };

    phase("parameters initialised");
    let start_step = state.step;
    let engine = make_engine(&engine_kind, &cfg, state)?;
    phase("step engine built");
    stop.check(|| {
        format!(
            "interrupted before training started; nothing was written to {}",
            cfg.out.display()
        )
    })?;

    // Only now touch the output folder.
    let _run_lock = (run_lock, crate::lock::acquire(&cfg.out, "--out")?); // reliability
    prepare_out(&cfg, overwrite)?;
    eprintln!("saeforge: {why}");

    let mut prefetch = data.stream(&cfg, scale, batches)?;
    let mut m = Member::new(
        cfg,
        engine_kind,
        engine,
        start_step,
        batches,
        scale,
        data.prints.clone(),
        eval_x,
        resuming,
    )?;
    m.progress = Some(Progress::new(m.cfg.steps, start_step));
    if args.profile.unwrap_or(false) {
        let last = m.cfg.steps.saturating_sub(1).max(start_step);
        m.profile_at = Some((start_step + profile::PROFILED_STEP).min(last));
    }
    let resume_cmd = format!("saeforge train --resume {}", m.cfg.out.display());
    let run_clock = Instant::now();
    let mut interrupted = false;
    phase("output prepared; first step");
    while !m.done() {
        let batch = match prefetch.next() {
            Ok(b) => b,
            Err(e) => return Err(m.stream_failed(e, &resume_cmd)),
        };
        skipped_rows += batch.skipped as u64;
        m.train(&batch)?;
        if stop.is_stopped() {
            interrupted = true;
            break;
        }
        m.checkpoint_if_due()?;
    }
    drop(prefetch);
    let secs = run_clock.elapsed().as_secs_f64();
    m.finish(interrupted, secs, skipped_rows)
}

/// The resolved config of a new run from its merged options: the shards are opened to
/// learn d and the training rows.
pub fn resolve_new(merged: &TrainArgs) -> Result<TrainConfig> {
    let data = merged.data.clone().unwrap_or_default();
    if data.is_empty() {
        return Err(Error::input(
            "--data: missing (activation shards: files, folders or globs)",
        ));
    }
    let paths = discover(&data)?;
    let shards = open_shards(&paths, merged.tensor.as_deref())?;
    resolve_on(merged, &shards)
}

/// [`resolve_new`] on shards already opened.
pub fn resolve_on(merged: &TrainArgs, shards: &[Shard]) -> Result<TrainConfig> {
    let d = shards[0].d;
    let frac = merged.eval_fraction.unwrap_or(0.0).clamp(0.0, 0.99);
    let rows: u64 = split(shards, frac).0.iter().map(|(a, b)| b - a).sum();
    let mut cfg = TrainConfig::resolve(merged, d, rows)?;
    super::transcoder::resolve(&mut cfg, shards)?;
    Ok(cfg)
}

/// A new run's folder must not hold a run already (unless `overwrite`), nor be a file.
pub fn check_new_out(cfg: &TrainConfig, overwrite: bool, flag: &str) -> Result<()> {
    crate::io::check_foreign_output(flag, &cfg.out, "a training run")?;
    if holds_run(&cfg.out) && !overwrite {
        return Err(Error::input(format!(
            "{flag} {}: already holds a run (use --overwrite to replace it, or --resume {} to continue it)",
            cfg.out.display(),
            cfg.out.display()
        )));
    }
    if cfg.out.exists() && !cfg.out.is_dir() {
        return Err(Error::input(format!(
            "{flag} {}: is a file, expected a folder",
            cfg.out.display()
        )));
    }
    Ok(())
}
