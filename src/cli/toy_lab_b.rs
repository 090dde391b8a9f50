//! `saeforge toy --experiment privileged|abs|l1|intervene`: the superposition lab's
//! privileged-basis, computation-in-superposition, L1 / top-k and intervention experiments
//! (`crate::toy::lab`). They take the sweep's --features, --hidden, --importance-decay,
//! --density, --steps, --batch, --lr, --weight-decay, --seed, --out and --device, with
//! their own defaults where the sweep's do not fit, and their own (`toy::args::LabBArgs`).

use std::path::Path;
use std::time::Instant;

use crate::gpu::Engine;
use crate::toy::lab::abs;
use crate::toy::lab::privileged::{self, DensitySweep, DensitySweepResult};
use crate::toy::lab::{self, intervene, l1};
use crate::toy::{Progress, Schedule};
use crate::{Error, Result};

use crate::toy::args::{
    ToyArgs, check_decay, check_densities, check_max_hidden, check_toy_memory, open_engine,
    run_name,
};

/// The lab-B experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabB {
    Privileged,
    Abs,
    L1,
    Intervene,
}

/// `--steps`, `--batch`, `--lr`, `--weight-decay` and `--seed` (the notebook's 10,000 steps
/// of 1024 rows by default).
fn schedule(a: &ToyArgs) -> Schedule {
    Schedule::from_args(a, 10_000, 1024)
}

/// The flags each experiment reads (beyond the recipe's); any other model or lab flag is
/// refused with one line by `lab::check_flags`, which also runs the common checks.
fn allowed(exp: LabB) -> &'static [&'static str] {
    const MODEL: [&str; 3] = ["--features", "--hidden", "--importance-decay"];
    match exp {
        LabB::Privileged | LabB::Abs => {
            &[MODEL[0], MODEL[1], MODEL[2], "--density", "--density-range"]
        }
        LabB::L1 => &[
            MODEL[0],
            MODEL[1],
            MODEL[2],
            "--density",
            "--l1-values",
            "--topk-values",
        ],
        LabB::Intervene => &[
            MODEL[0],
            MODEL[1],
            "--density",
            "--sae-latents",
            "--sae-k",
            "--sae-steps",
            "--capture-rows",
        ],
    }
}

/// The model flags' values, checked.
fn model_flags(a: &ToyArgs) -> Result<()> {
    if a.features == Some(0) || a.hidden == Some(0) {
        return Err(Error::input("--features and --hidden must be at least 1"));
    }
    if let Some(d) = &a.density {
        check_densities(d)?;
    }
    if let Some(r) = a.importance_decay {
        check_decay(r)?;
    }
    Ok(())
}

/// `--density` (several values) or `--density-range`, else `default`.
fn densities(a: &ToyArgs, default: Vec<f32>) -> Result<Vec<f32>> {
    match (&a.density, &a.density_range) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(_)) => lab::density_range(a, (1.0, 1.0, 1)),
        (None, None) => Ok(default),
    }
}

/// The config of privileged or abs: the flags over the experiment's defaults `d`.
fn density_sweep(a: &ToyArgs, d: DensitySweep) -> Result<DensitySweep> {
    let density = densities(a, d.features.density.clone())?;
    Ok(DensitySweep {
        features: d.features.with_flags(a, density),
        schedule: schedule(a),
    })
}

/// What a density-sweep experiment (privileged, abs) provides: its run, its writer and
/// its printed table.
type DensityLab<I> = (
    fn(&Engine, &DensitySweep, u64, &mut dyn FnMut(&Progress)) -> Result<DensitySweepResult<I>>,
    fn(&Path, &DensitySweepResult<I>) -> Result<Vec<String>>,
    fn(&DensitySweepResult<I>) -> String,
);

/// Run privileged or abs with the flags over the experiment's defaults `d` (checked
/// before the engine opens), write and print it.
fn density_lab<I>(
    a: &ToyArgs,
    d: DensitySweep,
    (run, write, table): DensityLab<I>,
    log_every: u64,
    log: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let cfg = density_sweep(a, d)?;
    let f = &cfg.features;
    check_toy_memory(
        &format!("toy {}", run_name(a)),
        [f.density.len(), f.n, f.m, cfg.schedule.batch],
        "--features or the densities (--density, --density-range)",
    )?;
    let r = run(&open_engine(a)?, &cfg, log_every, log)?;
    let files = write(&a.out, &r)?;
    print!("{}", table(&r));
    println!("rule: {}", r.rule);
    wrote(&a.out, &files, r.run.train_seconds, &r.run.engine);
    Ok(())
}

fn wrote(out: &Path, files: &[String], seconds: f64, engine: &str) {
    println!(
        "{seconds:.1} s training on the {engine}; wrote {}: {}",
        out.display(),
        files.join(", ")
    );
}

pub fn run(exp: LabB, a: &ToyArgs) -> Result<()> {
    let name = match exp {
        LabB::Privileged => "privileged",
        LabB::Abs => "abs",
        LabB::L1 => "l1",
        LabB::Intervene => "intervene",
    };
    lab::check_flags(a, name, allowed(exp))?;
    model_flags(a)?;
    let log_every = (schedule(a).steps / 10).max(1);
    let start = Instant::now();
    let mut log = crate::toy::args::progress_line(name);
    // Each arm opens the engine after its flags are checked (a bad flag fails first).
    match exp {
        LabB::Privileged => {
            let lab: DensityLab<_> = (privileged::run, privileged::write, privileged::table);
            density_lab(a, privileged::paper(), lab, log_every, &mut log)?;
        }
        LabB::Abs => {
            let lab: DensityLab<_> = (abs::run, abs::write, abs::table);
            density_lab(a, abs::default_size(), lab, log_every, &mut log)?;
        }
        LabB::L1 => {
            let d = l1::L1Config::default_size();
            let m = a.hidden.unwrap_or(d.features.m);
            let l1_values = a.lab_b.l1_values.clone().unwrap_or(d.l1);
            if l1_values.is_empty() || l1_values.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
                return Err(Error::input(
                    "--l1-values: give one or more penalties >= 0, e.g. 0,0.1,1",
                ));
            }
            let topk = match &a.lab_b.topk_values {
                None => (1..=m as u32).collect(),
                Some(v) if v == &[0] => Vec::new(),
                Some(v) => v.clone(),
            };
            if let Some(k) = topk.iter().find(|&&k| k == 0 || k as usize > m) {
                return Err(Error::input(format!(
                    "--topk-values {k}: each k must be in 1..={m} (--hidden), or give 0 alone for no top-k run"
                )));
            }
            let density = lab::one_density(a, d.features.density)?;
            let cfg = l1::L1Config {
                features: d.features.with_flags(a, density),
                l1: l1_values,
                topk,
                schedule: schedule(a),
            };
            // The L1 instances train first, then the top-k ones.
            let e = cfg.l1.len().max(cfg.topk.len());
            let more = "--features, --hidden, --l1-values or --topk-values";
            check_toy_memory(
                "toy --experiment l1",
                [e, cfg.features.n, m, cfg.schedule.batch],
                more,
            )?;
            let r = l1::run(&open_engine(a)?, &cfg, log_every, &mut log)?;
            let files = l1::write(&a.out, &r)?;
            print!("{}", l1::table(&r));
            wrote(&a.out, &files, r.run.train_seconds, &r.run.engine);
        }
        LabB::Intervene => {
            if a.importance_decay.is_some() {
                return Err(Error::input(
                    "--experiment intervene trains equal importances; drop --importance-decay",
                ));
            }
            let d = intervene::InterveneConfig::default_size();
            let n = a.features.unwrap_or(d.n);
            let m = a.hidden.unwrap_or(d.m);
            check_max_hidden(m)?;
            let b = &a.lab_b;
            let cfg = intervene::InterveneConfig {
                n,
                m,
                density: lab::one_density(a, d.density)?,
                schedule: schedule(a),
                capture_rows: b.capture_rows.unwrap_or(d.capture_rows),
                sae_latents: b.sae_latents.unwrap_or(2 * n),
                sae_k: b.sae_k.unwrap_or(d.sae_k),
                sae_steps: b.sae_steps.unwrap_or(d.sae_steps),
                sae_device: a.engine.device,
                sae_adapter: a.engine.adapter.clone(),
                ..d
            };
            if cfg.capture_rows == 0 || cfg.sae_latents == 0 || cfg.sae_k == 0 || cfg.sae_steps == 0
            {
                return Err(Error::input(
                    "--capture-rows, --sae-latents, --sae-k and --sae-steps must be at least 1",
                ));
            }
            if cfg.sae_k > cfg.sae_latents {
                return Err(Error::input(format!(
                    "--sae-k {} exceeds --sae-latents {}",
                    cfg.sae_k, cfg.sae_latents
                )));
            }
            check_toy_memory(
                "toy --experiment intervene",
                [1, n, m, cfg.schedule.batch],
                "--features",
            )?;
            // The captured rows: x (n), the hidden activations (m) and their shard on disk.
            let what = format!("--capture-rows {} (n {n}, m {m})", cfg.capture_rows);
            let rows = cfg.capture_rows as u128;
            let advice = "lower --capture-rows";
            let bytes = rows.saturating_mul(4 * (2 * n + m) as u128);
            crate::io::check_host_memory(&what, bytes, advice)?;
            let shard = rows.saturating_mul(4 * m as u128);
            crate::io::check_disk_space(&what, &a.out, shard, advice)?;
            let r = intervene::run(&open_engine(a)?, &cfg, &a.out, log_every, &mut log)?;
            let files = intervene::write(&a.out, &r)?;
            print!("{}", intervene::table(&r));
            wrote(&a.out, &files, r.toy_train_seconds, &r.engine);
        }
    }
    tracing::debug!(
        seconds = start.elapsed().as_secs_f64(),
        "toy experiment done"
    );
    Ok(())
}
