//! The training loop, engine-agnostic: data stream -> engine steps -> metrics at log
//! intervals (the only readback) -> evaluation, checkpoints, export, plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::json;

use super::checkpoint::{self, Checkpoint, ShardPrint};
use super::cpu::{self, TrainState};
use super::export::{CFG_FILE, SaeModel};
use super::{Arch, SaeParams, TrainArgs, TrainConfig};
use crate::data::{BatchStream, Prefetcher, Shard, discover, open_shards};
use crate::gpu::{Engine, select_engine};
use crate::reference::reduce::slot;
use crate::report::jsonl::{self, JsonlWriter, Record};
use crate::report::plots::{self, Series};
use crate::report::progress::Progress;
use crate::{Error, Result};

/// One training step on some engine, and the readbacks the loop needs.
pub trait StepEngine {
    /// Run one step on `x` (rows x d, scaled). Nothing is read back.
    fn step(&mut self, cfg: &TrainConfig, x: &[f32], rows: usize) -> Result<()>;
    /// Read the metric sums since the last call and reset them; also the last grad norm.
    fn take_metrics(&mut self) -> Result<(Vec<f32>, f32)>;
    /// The whole state, for checkpoints and the export.
    fn state(&mut self) -> Result<TrainState>;
}

/// The CPU engine: the reference step on a host-side state.
pub struct CpuEngine {
    pub st: TrainState,
}

impl StepEngine for CpuEngine {
    fn step(&mut self, cfg: &TrainConfig, x: &[f32], rows: usize) -> Result<()> {
        cpu::step(cfg, &mut self.st, x, rows);
        Ok(())
    }
    fn take_metrics(&mut self) -> Result<(Vec<f32>, f32)> {
        let m = self.st.metrics.clone();
        for (i, v) in self.st.metrics.iter_mut().enumerate() {
            if i != slot::DEAD as usize {
                *v = 0.0;
            }
        }
        Ok((m, self.st.grad_norm))
    }
    fn state(&mut self) -> Result<TrainState> {
        Ok(self.st.clone())
    }
}

/// Set by SIGINT / SIGTERM; the loop checkpoints and stops at the next step boundary.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_signal_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // Second signal: the user insists.
                std::process::exit(130);
            }
        }) {
            tracing::warn!("could not install the Ctrl-C handler: {e}");
        }
    });
}

/// Ask a running training loop to stop at the next step (as Ctrl-C does).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// How a training run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub out: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub engine: String,
    pub interrupted: bool,
    /// The run's budget (steps) when it stopped.
    pub total_steps: u64,
    /// Rows dropped for holding NaN / Inf (with --skip-nonfinite).
    pub skipped_rows: u64,
    pub last: Option<Record>,
}

/// Rows of every shard used for training and for evaluation.
fn split(shards: &[Shard], eval_fraction: f64) -> (Vec<(u64, u64)>, Vec<(u64, u64)>) {
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

/// Held-out evaluation with the exported model (raw units): (mse, explained variance, l0).
pub fn evaluate(model: &SaeModel, x: &[f32], rows: usize) -> (f64, f64, f64) {
    let d = model.d;
    let codes = model.encode(x, rows);
    let x_hat = model.decode(&codes);
    let mut mean = vec![0.0f64; d];
    for r in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64 / rows as f64;
        }
    }
    let (mut sse, mut sst) = (0.0f64, 0.0f64);
    for (r, h) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
        for j in 0..d {
            sse += (r[j] as f64 - h[j] as f64).powi(2);
            sst += (r[j] as f64 - mean[j]).powi(2);
        }
    }
    let l0 = codes.idx.len() as f64 / rows as f64;
    (
        sse / rows as f64,
        if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
        l0,
    )
}

/// Is `dir` already holding a run?
fn holds_run(dir: &Path) -> bool {
    dir.join(CFG_FILE).exists()
        || checkpoint::path(dir).exists()
        || dir.join("config.json").exists()
}

/// Mean row norm of `x` (rows x d).
fn mean_norm(x: &[f32], d: usize) -> f64 {
    let rows = x.len() / d;
    x.chunks_exact(d)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / rows.max(1) as f64
}

/// Bytes an engine holds for a run, roughly: parameters, gradients and two Adam moments,
/// plus the per-batch buffers (pre-activations and their gradients, rows x d_sae, dominate).
pub fn estimate_bytes(cfg: &TrainConfig) -> u128 {
    let (d, n, b) = (cfg.d_in as u128, cfg.d_sae as u128, cfg.batch as u128);
    let params = 2 * d * n + 3 * n + d;
    4 * (4 * params + 3 * b * n + 4 * b * d)
}

/// What the user can do next, given the checkpoint on disk (its step, if any).
fn checkpoint_note(cfg: &TrainConfig, last: Option<u64>) -> String {
    match last {
        Some(s) => format!(
            "the last checkpoint (step {s}) in {} is intact; continue with: saeforge train --resume {}",
            cfg.out.join(checkpoint::CHECKPOINT_DIR).display(),
            cfg.out.display()
        ),
        None => "no checkpoint had been written yet".to_string(),
    }
}

/// Files a run writes into its folder (besides checkpoint/ and plots/).
const RUN_FILES: [&str; 5] = [
    CFG_FILE,
    super::export::WEIGHTS_FILE,
    super::export::SPARSITY_FILE,
    "training.jsonl",
    "config.json",
];
const PLOT_NAMES: [&str; 5] = [
    "loss",
    "l0",
    "explained_variance",
    "dead_fraction",
    "feature_density",
];

/// Create the output folder and clear what a killed process left (temporary files); with
/// --overwrite, remove the previous run's files (only the ones saeforge writes) so that a
/// new run stopped early never sits beside a stale dictionary. Failing here is a bad --out.
fn prepare_out(cfg: &TrainConfig, overwrite: bool) -> Result<()> {
    let out = &cfg.out;
    let bad = |e: std::io::Error| {
        Error::input(format!(
            "--out {}: cannot write the output folder ({e})",
            out.display()
        ))
    };
    std::fs::create_dir_all(out).map_err(bad)?;
    let ck = out.join(checkpoint::CHECKPOINT_DIR);
    let plots = out.join("plots");
    for dir in [out, &ck, &plots] {
        let n = crate::io::remove_stale_temps(dir);
        if n > 0 {
            tracing::info!("removed {n} temporary file(s) left in {}", dir.display());
        }
    }
    if overwrite {
        for f in RUN_FILES {
            let p = out.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(bad)?;
            }
        }
        let state = checkpoint::path(out);
        if state.exists() {
            std::fs::remove_file(&state).map_err(bad)?;
        }
        let _ = std::fs::remove_dir(&ck);
        for name in PLOT_NAMES {
            for ext in ["png", "svg"] {
                let _ = std::fs::remove_file(plots.join(format!("{name}.{ext}")));
            }
        }
        let _ = std::fs::remove_dir(&plots);
    }
    crate::io::write_json(&out.join("config.json"), cfg).map_err(|e| match e {
        Error::Io { source, .. } => bad(source),
        e => e,
    })
}

/// `saeforge train`. Every input is checked before anything is written: the shards, the
/// flags, the output folder, the device (and whether the dictionary fits it); then the
/// loop runs, checkpointing atomically, and stops cleanly on SIGINT / SIGTERM, on bad data
/// (before the bad batch reaches the parameters), on divergence and on device faults,
/// always leaving the last good checkpoint in place.
pub fn run(args: &TrainArgs) -> Result<TrainOutcome> {
    install_signal_handler();
    INTERRUPTED.store(false, Ordering::SeqCst);

    // Resolve the configuration (a resumed run keeps its own; see `RESUME_FLAGS`).
    let run_lock; // reliability: one writer per folder (crate::lock)
    let (cfg, resume_from) = if let Some(dir) = &args.resume {
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
        let file = match &args.config {
            Some(p) => TrainArgs::from_toml(p)?,
            None => TrainArgs::default(),
        };
        let merged = args.merged_over(&file)?;
        let data = merged.data.clone().unwrap_or_default();
        if data.is_empty() {
            return Err(Error::input(
                "--data: missing (activation shards: files, folders or globs)",
            ));
        }
        let paths = discover(&data)?;
        let shards = open_shards(&paths, merged.tensor.as_deref())?;
        let d = shards[0].d;
        let frac = merged.eval_fraction.unwrap_or(0.0).clamp(0.0, 0.99);
        let rows: u64 = split(&shards, frac).0.iter().map(|(a, b)| b - a).sum();
        let cfg = TrainConfig::resolve(&merged, d, rows)?;
        run_lock = crate::lock::acquire_existing(&cfg.out, "--out")?; // reliability
        if holds_run(&cfg.out) && !merged.overwrite.unwrap_or(false) {
            return Err(Error::input(format!(
                "--out {}: already holds a run (use --overwrite to replace it, or --resume {} to continue it)",
                cfg.out.display(),
                cfg.out.display()
            )));
        }
        if cfg.out.exists() && !cfg.out.is_dir() {
            return Err(Error::input(format!(
                "--out {}: is a file, expected a folder",
                cfg.out.display()
            )));
        }
        (cfg, None)
    };
    let resuming = resume_from.is_some();
    let overwrite = !resuming && args.overwrite.unwrap_or(false);

    // Data: validate every shard before any work.
    let paths = discover(&cfg.data).map_err(|e| {
        if resuming {
            e.with_hint("the resumed run reads the data named in its config.json")
        } else {
            e
        }
    })?;
    let shards = Arc::new(open_shards(&paths, cfg.tensor.as_deref())?);
    let prints: Vec<ShardPrint> = shards.iter().map(ShardPrint::of).collect();
    let allow_change = args.allow_data_change.unwrap_or(false); // reliability
    checkpoint::check_allow_data_change(allow_change, resuming)?; // reliability
    if let Some(ck) = &resume_from {
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

    // Engine, and whether the run fits it, before anything large is allocated.
    let (engine_kind, why) = select_engine(cfg.device, cfg.adapter.as_deref())?;
    match &engine_kind {
        Engine::Gpu(gpu) => super::gpu::GpuEngine::check_capacity(gpu, &cfg)?,
        Engine::Cpu => crate::io::check_host_memory(
            &format!(
                "--d-sae {} with --batch {} on the CPU engine",
                cfg.d_sae, cfg.batch
            ),
            estimate_bytes(&cfg),
            "lower --d-sae or --batch",
        )?,
    }
    let engine_name = engine_kind.name();

    let eval_x: Option<(Vec<f32>, usize)> = if !cfg.eval_data.is_empty() {
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
        let rows = cfg.eval_rows.min(total);
        let mut st = BatchStream::new(es, ranges, 0, rows, 0)?;
        st.skip_nonfinite = cfg.skip_nonfinite;
        let b = st.next_batch()?;
        Some((b.data, b.rows))
    } else if cfg.eval_fraction > 0.0 {
        let total: u64 = eval_ranges.iter().map(|(a, b)| b - a).sum();
        if total == 0 {
            None
        } else {
            let rows = (cfg.eval_rows as u64).min(total) as usize;
            let mut st = BatchStream::new(shards.clone(), eval_ranges.clone(), 0, rows, 0)?;
            st.skip_nonfinite = cfg.skip_nonfinite;
            let b = st.next_batch()?;
            Some((b.data, b.rows))
        }
    } else {
        None
    };

    // Initial state: scale and b_dec from a sample of the training stream (which also
    // meets the first NaN / Inf rows, if any, before anything is written).
    let mut skipped_rows = 0u64;
    let (state, scale, batches) = match resume_from {
        Some(ck) => (ck.state, ck.scale, ck.batches),
        None => {
            let mut st = BatchStream::new(
                shards.clone(),
                train_ranges.clone(),
                cfg.seed ^ 0x1717,
                cfg.init_rows,
                cfg.shuffle_rows,
            )?;
            st.skip_nonfinite = cfg.skip_nonfinite;
            let sample = st.next_batch()?;
            skipped_rows += sample.skipped as u64;
            let mn = mean_norm(&sample.data, cfg.d_in);
            let scale = if cfg.normalize && mn > 0.0 {
                ((cfg.d_in as f64).sqrt() / mn) as f32
            } else {
                1.0
            };
            let scaled: Vec<f32> = sample.data.iter().map(|v| v * scale).collect();
            let params = SaeParams::init(&cfg, &scaled);
            (TrainState::new(params), scale, 0)
        }
    };

    let start_step = state.step;
    let mut engine: Box<dyn StepEngine> = match &engine_kind {
        Engine::Cpu => Box::new(CpuEngine { st: state }),
        Engine::Gpu(gpu) => Box::new(super::gpu::GpuEngine::new(gpu.clone(), &cfg, &state)?),
    };
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Error::Interrupted(format!(
            "interrupted before training started; nothing was written to {}",
            cfg.out.display()
        )));
    }

    // Only now touch the output folder.
    let _run_lock = (run_lock, crate::lock::acquire(&cfg.out, "--out")?); // reliability
    prepare_out(&cfg, overwrite)?;
    eprintln!("saeforge: {why}");

    let mut stream = BatchStream::new(
        shards.clone(),
        train_ranges,
        cfg.seed,
        cfg.batch,
        cfg.shuffle_rows,
    )?;
    stream.scale = scale;
    stream.skip_nonfinite = cfg.skip_nonfinite;
    stream.skip_ids(batches);
    let mut prefetch = Prefetcher::new(stream, cfg.prefetch);

    let jsonl_path = cfg.out.join("training.jsonl");
    jsonl::truncate_after(&jsonl_path, start_step)?;
    let mut log = JsonlWriter::open(&jsonl_path)?;
    let progress = Progress::new(cfg.steps, start_step);

    let mut step = start_step;
    let mut consumed = batches;
    // Metric sums in the state cover the steps since the last log, also after a resume.
    let mut tokens_since_log = (start_step % cfg.log_every) * cfg.batch as u64;
    let mut tokens_total = start_step * cfg.batch as u64;
    let mut log_clock = Instant::now();
    let run_clock = Instant::now();
    let mut run_tokens = 0u64;
    let mut last: Option<Record> = None;
    let mut interrupted = false;
    // The step of the checkpoint on disk, if any.
    let mut last_checkpoint: Option<u64> = resuming.then_some(start_step);
    let mut last_log_step = start_step;

    while step < cfg.steps {
        let batch = match prefetch.next() {
            Ok(b) => b,
            Err(e @ Error::Input(_)) => {
                // Bad data met while streaming: the bad batch never reached the parameters.
                // Keep everything trained so far, then say how to go on.
                progress.finish();
                if last_checkpoint != Some(step) {
                    save_checkpoint(
                        engine.as_mut(),
                        &cfg,
                        consumed,
                        scale,
                        last_checkpoint,
                        &prints,
                    )?;
                }
                let how = if cfg.skip_nonfinite {
                    String::new()
                } else {
                    " --skip-nonfinite".to_string()
                };
                return Err(e.with_hint(format!(
                    "stopped before step {} with a checkpoint at step {step}; fix the data, or drop such rows with: saeforge train --resume {}{how}",
                    step + 1,
                    cfg.out.display()
                )));
            }
            // reliability: a shard changed under the run: keep what was trained, exit 1.
            Err(e @ Error::DataChanged(_)) => {
                progress.finish();
                if last_checkpoint != Some(step) {
                    save_checkpoint(
                        engine.as_mut(),
                        &cfg,
                        consumed,
                        scale,
                        last_checkpoint,
                        &prints,
                    )?;
                }
                return Err(checkpoint::data_changed_note(e, step, &cfg.out));
            }
            Err(e) => return Err(e.with_hint(checkpoint_note(&cfg, last_checkpoint))),
        };
        consumed = batch.drawn;
        skipped_rows += batch.skipped as u64;
        if batch.rows == 0 {
            continue;
        }
        engine
            .step(&cfg, &batch.data, batch.rows)
            .map_err(|e| e.with_hint(checkpoint_note(&cfg, last_checkpoint)))?;
        step += 1;
        tokens_since_log += batch.rows as u64;
        tokens_total += batch.rows as u64;
        run_tokens += batch.rows as u64;

        let is_last = step == cfg.steps;
        if step % cfg.log_every == 0 || is_last {
            let (m, grad_norm) = engine
                .take_metrics()
                .map_err(|e| e.with_hint(checkpoint_note(&cfg, last_checkpoint)))?;
            let s = summarize(&m, tokens_since_log, cfg.d_sae);
            let sparsity = cfg.sparsity_scale_at(step - 1);
            let aux_loss = if matches!(cfg.arch, Arch::Topk | Arch::Batchtopk) {
                cfg.aux_coef as f64 * s.aux
            } else {
                0.0
            };
            let l1_loss = if cfg.arch == Arch::Relu {
                (cfg.l1 * sparsity) as f64 * s.l1
            } else {
                0.0
            };
            let l0_loss = if cfg.arch == Arch::Jumprelu {
                (cfg.l0 * sparsity) as f64 * s.l0
            } else {
                0.0
            };
            let secs = log_clock.elapsed().as_secs_f64();
            let mut r = Record {
                step,
                tokens: tokens_total,
                lr: cfg.lr_at(step - 1),
                loss: s.mse + aux_loss + l1_loss + l0_loss,
                mse: s.mse,
                aux_loss,
                l1_loss,
                l0_loss,
                l0: s.l0,
                explained_variance: s.ev,
                dead_fraction: s.dead_fraction,
                grad_norm,
                tokens_per_s: tokens_since_log as f64 / secs.max(1e-9),
                eval_mse: None,
                eval_explained_variance: None,
                eval_l0: None,
            };
            if !r.loss.is_finite() || !grad_norm.is_finite() {
                progress.finish();
                let at = if last_log_step + 1 == step {
                    format!("at step {step}")
                } else {
                    format!("at a step in {}..={step}", last_log_step + 1)
                };
                return Err(Error::Diverged(format!(
                    "training diverged: non-finite loss ({}) or gradient norm ({grad_norm}) {at}; stopped. {}",
                    r.loss,
                    diverged_note(&cfg, last_checkpoint),
                )));
            }
            let eval_due = cfg.eval_every > 0 && (step % cfg.eval_every == 0) || is_last;
            if let (true, Some((ex, erows))) = (eval_due, &eval_x) {
                let st = engine.state()?;
                let model = SaeModel::from_training(&st.params, &cfg, scale, st.threshold);
                let (mse, ev, l0) = evaluate(&model, ex, *erows);
                r.eval_mse = Some(mse);
                r.eval_explained_variance = Some(ev);
                r.eval_l0 = Some(l0);
            }
            log.write(&r)
                .map_err(|e| e.with_hint(checkpoint_note(&cfg, last_checkpoint)))?;
            progress.update(&r);
            last = Some(r);
            tokens_since_log = 0;
            last_log_step = step;
            log_clock = Instant::now();
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0 && !is_last {
            save_checkpoint(
                engine.as_mut(),
                &cfg,
                consumed,
                scale,
                last_checkpoint,
                &prints,
            )?;
            last_checkpoint = Some(step);
        }
    }
    drop(prefetch);
    progress.finish();
    let secs = run_clock.elapsed().as_secs_f64();

    let st = engine
        .state()
        .map_err(|e| e.with_hint(checkpoint_note(&cfg, last_checkpoint)))?;
    if last_checkpoint != Some(step) {
        write_checkpoint(st.clone(), &cfg, consumed, scale, last_checkpoint, &prints)?;
    }
    if !interrupted {
        export(&cfg, &st, scale).map_err(|e| {
            e.with_hint(format!(
                "the final checkpoint (step {step}) was written; export again with: saeforge train --resume {}",
                cfg.out.display()
            ))
        })?;
    }
    Ok(TrainOutcome {
        out: cfg.out.clone(),
        steps: step,
        total_steps: cfg.steps,
        tokens: tokens_total,
        tokens_per_s: run_tokens as f64 / secs.max(1e-9),
        engine: engine_name,
        interrupted,
        skipped_rows,
        last,
    })
}

/// Where a diverged run stands and what to try: a lower learning rate from the last good
/// checkpoint, or from the start when there is none.
fn diverged_note(cfg: &TrainConfig, last: Option<u64>) -> String {
    let lower = format!("{:.0e}", cfg.lr / 10.0);
    match last {
        Some(s) => format!(
            "The last good checkpoint (step {s}) in {} is kept. Lower the learning rate (now {:e}) or check the data, e.g.: saeforge train --resume {} --lr {lower}",
            cfg.out.join(checkpoint::CHECKPOINT_DIR).display(),
            cfg.lr,
            cfg.out.display()
        ),
        None => format!(
            "It diverged before its first checkpoint. Lower the learning rate (now {:e}) or check the data, and start again with --lr {lower} --overwrite",
            cfg.lr
        ),
    }
}

/// Write a checkpoint unless the parameters are no longer finite (then the one on disk, at
/// step `last`, stays and the run stops as diverged). A failed write (disk full) leaves the
/// previous checkpoint in place too.
fn save_checkpoint(
    engine: &mut dyn StepEngine,
    cfg: &TrainConfig,
    batches: u64,
    scale: f32,
    last: Option<u64>,
    data: &[ShardPrint],
) -> Result<()> {
    let st = engine
        .state()
        .map_err(|e| e.with_hint(checkpoint_note(cfg, last)))?;
    write_checkpoint(st, cfg, batches, scale, last, data)
}

fn write_checkpoint(
    st: TrainState,
    cfg: &TrainConfig,
    batches: u64,
    scale: f32,
    last: Option<u64>,
    data: &[ShardPrint],
) -> Result<()> {
    if !st.params.all_finite() {
        return Err(Error::Diverged(format!(
            "training diverged: parameters became non-finite by step {}; stopped. {}",
            st.step,
            diverged_note(cfg, last),
        )));
    }
    let step = st.step;
    Checkpoint {
        state: st,
        batches,
        scale,
        config: cfg.clone(),
        data: data.to_vec(),
    }
    .save(&cfg.out)
    .map_err(|e| {
        e.with_hint(format!(
            "could not write the checkpoint at step {step}; {}",
            checkpoint_note(cfg, last)
        ))
    })
}

/// log10 firing frequency per latent (SAELens sparsity.safetensors), -10 for never.
pub fn log10_sparsity(fire_total: &[u32], tokens: u64) -> Vec<f32> {
    fire_total
        .iter()
        .map(|&c| ((c as f64 / tokens.max(1) as f64) + 1e-10).log10() as f32)
        .collect()
}

/// Export the dictionary, sparsity and plots into cfg.out.
pub fn export(cfg: &TrainConfig, st: &TrainState, scale: f32) -> Result<()> {
    let model = SaeModel::from_training(&st.params, cfg, scale, st.threshold);
    let tokens = st.step * cfg.batch as u64;
    let sparsity = log10_sparsity(&st.fire_total, tokens);
    let saeforge = json!({
        "train": cfg,
        "activation_scale": scale,
        "steps": st.step,
        "tokens": tokens,
        "trained_arch": cfg.arch,
    });
    model.save(&cfg.out, Some(&sparsity), saeforge)?;
    plot_run(&cfg.out, &sparsity)
}

/// plots/: loss, L0, explained variance, dead fraction over tokens; feature density.
pub fn plot_run(out: &Path, log10_sparsity: &[f32]) -> Result<()> {
    let dir = out.join("plots");
    let recs = jsonl::read(&out.join("training.jsonl"))?;
    let pts = |f: &dyn Fn(&Record) -> f64| -> Vec<(f64, f64)> {
        recs.iter().map(|r| (r.tokens as f64, f(r))).collect()
    };
    let one = |name: &str, p: Vec<(f64, f64)>| {
        vec![Series {
            name: name.into(),
            points: p,
        }]
    };
    let mut loss = one("train loss", pts(&|r| r.loss));
    loss.push(Series {
        name: "train mse".into(),
        points: pts(&|r| r.mse),
    });
    plots::line_plot(&dir, "loss", "Loss", "tokens", "loss", &loss, true)?;
    plots::line_plot(
        &dir,
        "l0",
        "L0 (active latents per row)",
        "tokens",
        "L0",
        &one("L0", pts(&|r| r.l0)),
        false,
    )?;
    let mut ev = one("train", pts(&|r| r.explained_variance));
    let evals: Vec<(f64, f64)> = recs
        .iter()
        .filter_map(|r| r.eval_explained_variance.map(|v| (r.tokens as f64, v)))
        .collect();
    if !evals.is_empty() {
        ev.push(Series {
            name: "held-out".into(),
            points: evals,
        });
    }
    plots::line_plot(
        &dir,
        "explained_variance",
        "Explained variance",
        "tokens",
        "explained variance",
        &ev,
        false,
    )?;
    plots::line_plot(
        &dir,
        "dead_fraction",
        "Dead latents",
        "tokens",
        "fraction dead",
        &one("dead", pts(&|r| r.dead_fraction)),
        false,
    )?;
    let vals: Vec<f64> = log10_sparsity.iter().map(|&v| v as f64).collect();
    let never = vals.iter().filter(|&&v| v <= -9.99).count();
    let shown: Vec<f64> = vals.iter().cloned().filter(|&v| v > -9.99).collect();
    plots::histogram(
        &dir,
        "feature_density",
        "Feature density",
        "log10 firing frequency",
        &shown,
        50,
        &format!("{never} latents never fired (not shown)"),
    )
}
