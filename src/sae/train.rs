//! The training loop, engine-agnostic: data stream -> engine steps -> metrics at log
//! intervals (the only readback) -> evaluation, checkpoints, export, plots.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

mod files;

pub use files::{export, log10_sparsity, plot_run};

use super::checkpoint::{self, Checkpoint, ShardPrint};
use super::cpu::CpuEngine;
use super::engine::{StepEngine, TrainState};
use super::export::SaeModel;
use super::gpu::GpuEngine;
use super::infer::{Encoder, default_batch};
use super::{Arch, SaeParams, TrainArgs, TrainConfig};
use crate::data::{BatchStream, Prefetcher, Shard, discover, open_shards};
use crate::gpu::Engine;
use crate::reference::reduce::slot;
use crate::report::jsonl::{self, JsonlWriter, Record};
use crate::report::progress::Progress;
use crate::stop::StopToken;
use crate::{Error, Result};
use files::{
    checkpoint_note, diverged_note, holds_run, prepare_out, save_checkpoint, write_checkpoint,
};

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

/// Row ranges [start, end) of every shard.
type Ranges = Vec<(u64, u64)>;

/// Rows of every shard used for training and for evaluation.
fn split(shards: &[Shard], eval_fraction: f64) -> (Ranges, Ranges) {
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

/// Mean row norm of `x` (rows x d).
fn mean_norm(x: &[f32], d: usize) -> f64 {
    let rows = x.len() / d;
    x.chunks_exact(d)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / rows.max(1) as f64
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
    let (engine_kind, why) =
        crate::engine_choice::select_training_engine(cfg.device, cfg.adapter.as_deref(), &cfg)?;
    match &engine_kind {
        Engine::Gpu(gpu) => GpuEngine::check_capacity(gpu, &cfg)?,
        Engine::Cpu => crate::io::check_host_memory(
            &format!(
                "--d-sae {} with --batch {} on the CPU engine",
                cfg.d_sae, cfg.batch
            ),
            cfg.estimate_bytes(),
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
        Engine::Gpu(gpu) => Box::new(GpuEngine::new(gpu.clone(), &cfg, &state)?),
    };
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
            let sparsity = cfg.sparsity_coef_at(step - 1) as f64;
            let aux_loss = if matches!(cfg.arch, Arch::Topk | Arch::Batchtopk) {
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
                k: cfg.anneals_k().then(|| cfg.k_at(step - 1)),
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
                // On the training engine: the GPU's encoder kernels, or the CPU twins.
                let batch = default_batch(model.n).min(*erows);
                let encoder = Encoder::new(&model, &engine_kind, batch)?;
                let (mse, ev, l0) = evaluate(&encoder, ex, *erows)?;
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
        if stop.is_stopped() {
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
