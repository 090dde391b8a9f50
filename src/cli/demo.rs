//! `saeforge demo`: the whole story on an embedded default, with no arguments.
//!
//! 1. synthesise activations with a planted dictionary in superposition (more true features
//!    than dimensions, a few active per row), as f16 shards plus a held-out shard;
//! 2. train a TopK SAE on them (engine chosen like `train`), exported in the SAELens layout;
//! 3. evaluate reconstruction on the held-out rows and recovery of the planted dictionary;
//! 4. encode the held-out rows (CSR), and steer one recovered feature: unlearn it by
//!    ablation and clamp it "Golden Gate" style, measured against the ground truth;
//! 5. write plots, report.md and summary.json, and print a summary table.
//!
//! Everything goes into one folder (default ./saeforge-demo) marked by demo.json; the demo
//! refuses to write into a non-empty folder without that marker.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

mod data;
mod measure;
mod report;

pub use report::text_table;

use data::{prepare_out, synthesise};
use measure::{binned, choose_feature, fire_rate, mean_proj, projections, read_all};

use crate::cli::EngineArgs;
use crate::data::{FloatType, discover};
use crate::eval::recovery::{Recovery, recovery};
use crate::eval::steer::{Edit, EditOp, SteerOutput, SteerReport, check_edits, steer_file};
use crate::gpu::DeviceChoice;
use crate::io::write_json;
use crate::sae::export::SaeModel;
use crate::sae::infer::{Encoder, default_batch, encode_shards};
use crate::sae::train::{self, evaluate};
use crate::sae::{Arch, TrainArgs};
use crate::stop::StopToken;
use crate::synth::SynthConfig;
use crate::{Error, Result};

/// The marker file of a demo folder.
pub const MARKER: &str = "demo.json";

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Output folder (created; refused if it exists, is not empty and is not a demo folder).
    #[arg(long, default_value = "saeforge-demo")]
    pub out: PathBuf,
    /// The 512 -> 16384 scale (d_in 512, 16384 latents, k 32): for GPU machines.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Number of true features (default 512; --full 8192).
    #[arg(long)]
    pub features: Option<usize>,
    /// Dimension of the activations (default 64; --full 512).
    #[arg(long)]
    pub d_in: Option<usize>,
    /// Mean active true features per row (default 3; --full 16).
    #[arg(long)]
    pub active: Option<f64>,
    /// SAE latents (default 1024; --full 16384).
    #[arg(long)]
    pub d_sae: Option<usize>,
    /// TopK k (default 4; --full 32).
    #[arg(long)]
    pub k: Option<usize>,
    /// Training rows written (default 262144; --full 1048576).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Held-out rows (default 16384; --full 65536).
    #[arg(long)]
    pub heldout: Option<usize>,
    /// Training steps (default 640 of 512 rows; --full 2000 of 4096).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Rows per training step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of the data and the training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl DemoArgs {
    /// The defaults of `saeforge demo` with no arguments, writing into `out`.
    pub fn new(out: &Path) -> DemoArgs {
        DemoArgs {
            out: out.to_path_buf(),
            full: false,
            engine: EngineArgs {
                device: DeviceChoice::Auto,
                adapter: None,
            },
            features: None,
            d_in: None,
            active: None,
            d_sae: None,
            k: None,
            tokens: None,
            heldout: None,
            steps: None,
            batch: None,
            seed: 0,
        }
    }
}

/// The resolved sizes of a demo run.
#[derive(Clone, Debug, Serialize)]
pub struct DemoConfig {
    pub features: usize,
    pub d_in: usize,
    pub active: f64,
    pub d_sae: usize,
    pub k: usize,
    pub tokens: usize,
    pub heldout: usize,
    pub shard_tokens: usize,
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    pub eval_rows: usize,
    /// Seed of the data; the SAE's initialisation uses `train_seed` = seed + 1 (with equal
    /// seeds, the random initial decoder would be the planted dictionary itself, since both
    /// draw normalised Gaussian rows from the same generator).
    pub seed: u64,
    pub train_seed: u64,
    pub full: bool,
}

impl DemoConfig {
    pub fn resolve(a: &DemoArgs) -> Result<DemoConfig> {
        let full = a.full;
        let pick = |v: Option<usize>, small: usize, big: usize| {
            v.unwrap_or(if full { big } else { small })
        };
        let c = DemoConfig {
            features: pick(a.features, 512, 8192),
            d_in: pick(a.d_in, 64, 512),
            active: a.active.unwrap_or(if full { 16.0 } else { 3.0 }),
            d_sae: pick(a.d_sae, 1024, 16384),
            k: pick(a.k, 4, 32),
            tokens: pick(a.tokens, 262_144, 1_048_576),
            heldout: pick(a.heldout, 16_384, 65_536),
            shard_tokens: if full { 131_072 } else { 65_536 },
            steps: a.steps.unwrap_or(if full { 2000 } else { 640 }),
            batch: pick(a.batch, 512, 4096),
            lr: if full { 2e-4 } else { 4e-3 },
            eval_rows: if full { 8192 } else { 16_384 },
            seed: a.seed,
            train_seed: a.seed.wrapping_add(1),
            full,
        };
        for (flag, v) in [
            ("features", c.features),
            ("d-in", c.d_in),
            ("d-sae", c.d_sae),
            ("k", c.k),
            ("tokens", c.tokens),
            ("heldout", c.heldout),
            ("batch", c.batch),
        ] {
            if v == 0 {
                return Err(Error::input(format!("--{flag} 0: expected at least 1")));
            }
        }
        if c.steps == 0 {
            return Err(Error::input("--steps 0: expected at least 1"));
        }
        if c.k > c.d_sae {
            return Err(Error::input(format!(
                "--k {}: expected at most --d-sae ({})",
                c.k, c.d_sae
            )));
        }
        if !(c.active > 0.0 && c.active <= c.features as f64) {
            return Err(Error::input(format!(
                "--active {}: expected 0 < active <= features ({})",
                c.active, c.features
            )));
        }
        Ok(c)
    }

    fn synth(&self) -> SynthConfig {
        SynthConfig {
            features: self.features,
            d_in: self.d_in,
            active: self.active,
            density_decay: 0.0,
            magnitude: (0.0, 1.0),
            correlated_groups: 0,
            anticorrelated_groups: 0,
            group_size: 2,
            noise: 0.0,
            tokens: self.tokens,
            shard_tokens: self.shard_tokens,
            dtype: FloatType::F16,
            seed: self.seed,
        }
    }
}

/// The steering experiment on one recovered feature.
#[derive(Clone, Debug, Serialize)]
pub struct SteerSummary {
    /// The true feature and the SAE latent that recovers it, with their |cosine|.
    pub feature: usize,
    pub latent: usize,
    pub cosine: f32,
    /// Held-out rows where the true feature is active.
    pub active_rows: u64,
    /// The clamp value of the "Golden Gate" edit.
    pub clamp: f32,
    /// Mean projection <x, f> on the rows where f is active / inactive:
    /// original, after ablation, after clamping.
    pub proj_active: [f64; 3],
    pub proj_inactive: [f64; 3],
    /// Mean true coefficient of f on the rows where it is active.
    pub true_coef_active: f64,
    /// Fraction of held-out rows on which the SAE fires the latent, re-encoding the
    /// original, ablated and clamped activations.
    pub fires: [f64; 3],
    pub ablate: SteerReport,
    pub clamped: SteerReport,
}

/// Everything the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    pub config: DemoConfig,
    pub engine: String,
    pub train_steps: u64,
    pub train_tokens_per_s: f64,
    pub heldout_mse: f64,
    pub heldout_explained_variance: f64,
    pub heldout_l0: f64,
    pub recovery: Recovery,
    pub encode_nnz: u64,
    pub steer: SteerSummary,
    /// Seconds per stage.
    pub seconds: Vec<(String, f64)>,
    /// Rows of the summary table (label, value), in order; section titles have no value.
    pub table: Vec<(String, String)>,
}

/// The phases of `saeforge demo`, in order; [`run_until`] says when each starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Synthesise,
    Train,
    Evaluate,
    Encode,
    Steer,
    /// Plots, report.md, summary.json (a second or less; runs to its end once started).
    Report,
}

/// `saeforge demo`: [`run_until`] with one token for every phase, which Ctrl-C (SIGINT /
/// SIGTERM) stops: the phase ends at its next safe point and the demo with exit 130; a
/// second Ctrl-C exits at once.
pub fn run(a: DemoArgs) -> Result<DemoSummary> {
    let stop = StopToken::new();
    let _signals = stop.on_signals();
    run_until(a, &stop, &mut |_| {})
}

/// The demo, stopped by `stop` at the next safe point of the phase under way (synthesis:
/// after a shard; training: after a step, with a checkpoint; evaluate, encode, steer: at
/// their end), with `Error::Interrupted` naming where. `on_phase` is called as each phase
/// starts (tests stop the token there).
pub fn run_until(
    a: DemoArgs,
    stop: &StopToken,
    on_phase: &mut dyn FnMut(Phase),
) -> Result<DemoSummary> {
    let c = DemoConfig::resolve(&a)?;
    let out = a.out.clone();
    // Before any work: the data on disk (f16 rows, their codes, the held-out shard's
    // codes and steered copy) and the held-out rows read whole into memory.
    let rows = (c.tokens + c.heldout) as u128;
    let entry = 8 + 12 * (c.active.ceil() as u128).max(c.k as u128);
    crate::io::check_disk_space(
        &format!(
            "--tokens {} and --heldout {} (d {})",
            c.tokens, c.heldout, c.d_in
        ),
        &out,
        rows * (2 * c.d_in as u128 + entry) + c.heldout as u128 * (2 * c.d_in as u128 + entry),
        "lower --tokens / --heldout, or write elsewhere",
    )?;
    crate::io::check_host_memory(
        &format!("--heldout {} (d {})", c.heldout, c.d_in),
        c.heldout as u128 * c.d_in as u128 * 8,
        "lower --heldout",
    )?;
    let _lock = crate::lock::acquire(&out, "--out")?; // reliability: one writer per folder
    let stopped = |after: &str| {
        stop.check(|| format!("interrupted after {after}; run `saeforge demo` again to start over"))
    };
    prepare_out(&out)?;
    write_json(&out.join(MARKER), &json!({ "saeforge_demo": c }))?;
    let mut seconds: Vec<(String, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, clock: &mut Instant| {
        seconds.push((name.to_string(), clock.elapsed().as_secs_f64()));
        *clock = Instant::now();
    };
    eprintln!(
        "saeforge demo: {} true features in {} dims ({:.0}x superposition), ~{} active per row -> {}",
        c.features,
        c.d_in,
        c.features as f64 / c.d_in as f64,
        c.active,
        out.display()
    );

    // 1. Synthesise.
    on_phase(Phase::Synthesise);
    let (train_paths, truth_codes, generator) = synthesise(&c, &out, stop)?;
    let truth = generator.truth;
    lap("synthesise", &mut clock);
    stopped("synthesising the data")?;

    // 2. Train (the engine is chosen by `train` itself, from --device / --adapter).
    on_phase(Phase::Train);
    let sae_dir = out.join("sae");
    let heldout_path = out.join("heldout").join("shard-00000.safetensors");
    let targs = TrainArgs {
        data: Some(train_paths.clone()),
        out: Some(sae_dir.clone()),
        eval_data: Some(vec![heldout_path.clone()]),
        eval_rows: Some(c.eval_rows.min(c.heldout)),
        arch: Some(Arch::Topk),
        d_sae: Some(c.d_sae),
        k: Some(c.k),
        batch: Some(c.batch),
        steps: Some(c.steps),
        lr: Some(c.lr),
        seed: Some(c.train_seed),
        device: Some(a.engine.device),
        adapter: a.engine.adapter.clone(),
        log_every: Some((c.steps / 10).max(1)),
        eval_every: Some((c.steps / 4).max(1)),
        checkpoint_every: Some(0),
        overwrite: Some(true),
        ..Default::default()
    };
    let trained = train::run_until(&targs, stop)?;
    if trained.interrupted {
        return Err(Error::Interrupted(format!(
            "stopped at step {}; run `saeforge demo` again to start over",
            trained.steps
        )));
    }
    lap("train", &mut clock);

    // 3. Evaluate: reconstruction on held-out rows, recovery of the planted dictionary.
    on_phase(Phase::Evaluate);
    let model = SaeModel::load(&sae_dir)?;
    let (hx, hrows) = read_all(&heldout_path)?;
    let erows = c.eval_rows.min(hrows);
    // The encoder on the engine chosen like `train`'s, for evaluate, encode and steer.
    let (engine, why) = a.engine.select()?;
    let encoder = Encoder::new(&model, &engine, default_batch(model.n))?;
    let (mse, ev, l0) = evaluate(&encoder, &hx[..erows * c.d_in], erows)?;
    let rec = recovery(&truth.features, &model.w_dec, model.d);
    // Sparse inference on the same held-out rows: FISTA with the SAE's dictionary (the
    // amortisation gap against the encoder) and with the true dictionary (the oracle).
    let inference_rows = {
        let cfg = crate::eval::run::EvalConfig {
            sae: sae_dir.clone(),
            data: vec![out.join("heldout")],
            ood: Vec::new(),
            tensor: None,
            truth: Some(out.join("data").join("truth.safetensors")),
            rows: erows.min(1024),
            batch: 0,
            fista: Some(crate::eval::fista::FistaConfig {
                max_iters: 200,
                ..Default::default()
            }),
            plots: None,
        };
        let j = crate::eval::run::run_eval(&engine, &why, &cfg)?.to_json();
        let fmt = |o: &serde_json::Value| {
            format!(
                "explained variance {:.4}, L0 {:.2}",
                o["explained_variance"].as_f64().unwrap_or(f64::NAN),
                o["l0"].as_f64().unwrap_or(f64::NAN)
            )
        };
        vec![
            (
                format!("FISTA on the SAE dictionary ({} rows)", cfg.rows),
                fmt(&j["fista"]),
            ),
            (
                "FISTA on the true dictionary (oracle)".to_string(),
                fmt(&j["oracle"]),
            ),
        ]
    };
    lap("evaluate", &mut clock);
    stopped("evaluating")?;

    // 4a. Encode the held-out rows (CSR).
    on_phase(Phase::Encode);
    let held_shards = crate::data::open_shards(&discover(&[out.join("heldout")])?, None)?;
    let enc_report = encode_shards(
        &encoder,
        &held_shards,
        &out.join("heldout-codes.safetensors"),
        false,
        &sae_dir,
    )?;
    lap("encode", &mut clock);
    stopped("encoding")?;

    // 4b. Steer one recovered feature: ablate it, and clamp it on every row.
    on_phase(Phase::Steer);
    let mut counts = vec![0u64; c.features];
    for &i in &truth_codes.idx {
        counts[i as usize] += 1;
    }
    let f = choose_feature(&rec, &truth.features, &model.w_dec, c.d_in, &counts);
    let latent = rec.best[f].1 as usize;
    let d = c.d_in;
    let lat = latent as u32;
    // Golden Gate style: clamp to twice the largest activation seen on held-out rows (in the
    // SAE's units), rounded to two decimals so the CLI line in the report is exact.
    let (fires0, max_z) = fire_rate(&encoder, &hx, hrows, d, lat)?;
    let clamp = ((2.0 * max_z.max(0.5)) * 100.0).round() / 100.0;
    let steer_dir = out.join("steer");
    crate::io::create_dir(&steer_dir)?;
    let run_edit = |op: EditOp, name: &str| -> Result<(SteerReport, Vec<f32>)> {
        let edits = check_edits(&[Edit { latent, op }], model.n)?;
        let p = steer_dir.join(name);
        let r = steer_file(
            &encoder,
            &model,
            &edits,
            &heldout_path,
            None,
            &p,
            &SteerOutput::default(),
        )?;
        Ok((r, read_all(&p)?.0))
    };
    let (ablate_report, ax) = run_edit(EditOp::Ablate, "ablate.safetensors")?;
    let (clamp_report, cx) = run_edit(EditOp::Set(clamp), "clamp.safetensors")?;
    let fvec = &truth.features[f * c.d_in..(f + 1) * c.d_in];
    let coef: Vec<f32> = (0..hrows).map(|r| truth_codes.coef(r, f)).collect();
    let active = |r: usize| coef[r] != 0.0;
    let inactive = |r: usize| coef[r] == 0.0;
    let steer = SteerSummary {
        feature: f,
        latent,
        cosine: rec.best[f].0,
        active_rows: coef.iter().filter(|&&v| v != 0.0).count() as u64,
        clamp,
        proj_active: [
            mean_proj(&hx, d, fvec, active),
            mean_proj(&ax, d, fvec, active),
            mean_proj(&cx, d, fvec, active),
        ],
        proj_inactive: [
            mean_proj(&hx, d, fvec, inactive),
            mean_proj(&ax, d, fvec, inactive),
            mean_proj(&cx, d, fvec, inactive),
        ],
        true_coef_active: coef
            .iter()
            .filter(|&&v| v != 0.0)
            .map(|&v| v as f64)
            .sum::<f64>()
            / coef.iter().filter(|&&v| v != 0.0).count().max(1) as f64,
        fires: [
            fires0,
            fire_rate(&encoder, &ax, hrows, d, lat)?.0,
            fire_rate(&encoder, &cx, hrows, d, lat)?.0,
        ],
        ablate: ablate_report,
        clamped: clamp_report,
    };
    lap("steer", &mut clock);
    stopped("steering")?;

    // 5. Plots, report, summary.
    on_phase(Phase::Report);
    let plot_dir = out.join("plots");
    report::recovery_plot(&plot_dir, &rec, model.n)?;
    let projected = |x: &[f32]| binned(&coef, &projections(x, d, fvec), 10);
    let series = [
        ("original".to_string(), projected(&hx)),
        (format!("--ablate {latent}"), projected(&ax)),
        (format!("--set {latent}={clamp}"), projected(&cx)),
    ];
    report::steering_plot(&plot_dir, f, latent, series)?;

    let mut table: Vec<(String, String)> = Vec::new();
    let section = |t: &mut Vec<(String, String)>, s: &str| t.push((s.to_string(), String::new()));
    let row = |t: &mut Vec<(String, String)>, k: &str, v: String| t.push((k.to_string(), v));
    section(&mut table, "data");
    row(
        &mut table,
        "planted dictionary",
        format!(
            "{} unit features in {} dims ({:.0}x superposition)",
            c.features,
            c.d_in,
            c.features as f64 / c.d_in as f64
        ),
    );
    row(
        &mut table,
        "rows",
        format!(
            "{} training + {} held-out, f16; ~{} features active per row",
            c.tokens, c.heldout, c.active
        ),
    );
    section(&mut table, "SAE");
    row(
        &mut table,
        "architecture",
        format!("topk, k {}, {} latents", c.k, c.d_sae),
    );
    row(
        &mut table,
        "training",
        format!(
            "{} steps x {} rows on the {}, {:.0} tokens/s",
            trained.steps, c.batch, trained.engine, trained.tokens_per_s
        ),
    );
    section(
        &mut table,
        &format!("reconstruction ({erows} held-out rows)"),
    );
    row(&mut table, "explained variance", format!("{ev:.4}"));
    row(&mut table, "MSE", format!("{mse:.5}"));
    row(&mut table, "L0", format!("{l0:.2}"));
    section(&mut table, "recovery of the planted dictionary");
    row(&mut table, "MMCS", format!("{:.4}", rec.mmcs));
    row(
        &mut table,
        "features with |cos| >= 0.9",
        format!(
            "{:.1}% ({} of {})",
            100.0 * rec.recovered_0_9,
            (rec.recovered_0_9 * c.features as f64).round(),
            c.features
        ),
    );
    row(
        &mut table,
        "features with |cos| >= 0.7",
        format!("{:.1}%", 100.0 * rec.recovered_0_7),
    );
    row(
        &mut table,
        "distinct best-matching latents",
        format!("{} of {}", rec.uniqueness, c.features),
    );
    table.extend(inference_rows);
    let s = &steer;
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    section(
        &mut table,
        &format!(
            "steering feature {} = latent {} (|cos| {:.3}), active on {} held-out rows",
            s.feature, s.latent, s.cosine, s.active_rows
        ),
    );
    row(
        &mut table,
        "projection on the feature, active rows",
        format!(
            "{:.3} -> ablated {:.3}, clamped {:.3} (true mean {:.3})",
            s.proj_active[0], s.proj_active[1], s.proj_active[2], s.true_coef_active
        ),
    );
    row(
        &mut table,
        "projection on the feature, other rows",
        format!(
            "{:.3} -> ablated {:.3}, clamped {:.3}",
            s.proj_inactive[0], s.proj_inactive[1], s.proj_inactive[2]
        ),
    );
    row(
        &mut table,
        "rows changed",
        format!(
            "ablate {} / clamp {} of {}",
            s.ablate.rows_changed, s.clamped.rows_changed, s.ablate.rows
        ),
    );
    row(
        &mut table,
        "latent fires on (re-encoded)",
        format!(
            "{} -> ablated {}, clamped {}",
            pct(s.fires[0]),
            pct(s.fires[1]),
            pct(s.fires[2])
        ),
    );
    lap("report", &mut clock);

    let summary = DemoSummary {
        config: c.clone(),
        engine: why.clone(),
        train_steps: trained.steps,
        train_tokens_per_s: trained.tokens_per_s,
        heldout_mse: mse,
        heldout_explained_variance: ev,
        heldout_l0: l0,
        recovery: rec,
        encode_nnz: enc_report.nnz,
        steer,
        seconds: seconds.clone(),
        table,
    };
    write_json(&out.join("summary.json"), &summary)?;
    let report = report::report_md(&summary, &out);
    crate::io::write_atomic(&out.join("report.md"), report.as_bytes())?;
    print!("{}", text_table(&summary, &out));
    Ok(summary)
}
