//! `saeforge toy --experiment privileged|abs|l1|intervene`: the superposition lab's
//! privileged-basis, computation-in-superposition, L1 / top-k and intervention experiments
//! (`crate::toy::lab`). They take the sweep's --features, --hidden, --importance-decay,
//! --density, --steps, --batch, --lr, --weight-decay, --seed, --out and --device, with
//! their own defaults where the sweep's do not fit, and the flags below.

use std::path::Path;
use std::time::Instant;

use crate::gpu::select_engine;
use crate::toy::lab::{abs, intervene, l1, privileged};
use crate::{Error, Result};

use super::toy::ToyArgs;

/// Flags of the privileged / abs / l1 / intervene experiments.
#[derive(clap::Args, Debug, Default)]
pub struct LabBArgs {
    /// --experiment l1: the L1 penalties, one instance each [default: 0,0.01,0.03,0.1,0.2,0.3,0.5,1].
    #[arg(long, value_delimiter = ',')]
    pub l1_values: Option<Vec<f32>>,
    /// --experiment l1: the k of the top-k run, one instance each; 0 alone: no top-k run
    /// [default: 1..m].
    #[arg(long, value_delimiter = ',')]
    pub topk_values: Option<Vec<u32>>,
    /// --experiment intervene: SAE latents [default: 2 n].
    #[arg(long)]
    pub sae_latents: Option<usize>,
    /// --experiment intervene: SAE top-k [default: 2].
    #[arg(long)]
    pub sae_k: Option<usize>,
    /// --experiment intervene: SAE training steps [default: 3000].
    #[arg(long)]
    pub sae_steps: Option<u64>,
    /// --experiment intervene: rows of hidden activations captured for the SAE
    /// [default: 65536].
    #[arg(long)]
    pub capture_rows: Option<usize>,
}

/// The lab-B experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabB {
    Privileged,
    Abs,
    L1,
    Intervene,
}

/// `--steps` (the notebook's 10,000 by default).
fn steps(a: &ToyArgs) -> u64 {
    a.steps.unwrap_or(10_000)
}

/// `--batch` (the notebook's 1024 by default).
fn batch(a: &ToyArgs) -> usize {
    a.batch.unwrap_or(1024)
}

fn common(a: &ToyArgs, what: &str) -> Result<()> {
    if a.phase || a.linear {
        return Err(Error::input(format!(
            "--experiment {what}: --phase and --linear belong to the sweeps; drop them"
        )));
    }
    if a.steps == Some(0) || a.batch == Some(0) {
        return Err(Error::input("--steps and --batch must be at least 1"));
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        return Err(Error::input(format!("--lr {}: must be positive", a.lr)));
    }
    if !(a.weight_decay >= 0.0 && a.weight_decay.is_finite()) {
        return Err(Error::input(format!(
            "--weight-decay {}: must be >= 0",
            a.weight_decay
        )));
    }
    let (n, m) = (a.features.unwrap_or(1), a.hidden.unwrap_or(1));
    if n == 0 || m == 0 {
        return Err(Error::input("--features and --hidden must be at least 1"));
    }
    if let Some(d) = &a.density
        && let Some(v) = d.iter().find(|&&v| !(v > 0.0 && v <= 1.0))
    {
        return Err(Error::input(format!(
            "--density {v}: a density 1 - S must be in (0, 1]"
        )));
    }
    if let Some(r) = a.importance_decay
        && !(r > 0.0 && r.is_finite())
    {
        return Err(Error::input(format!(
            "--importance-decay {r}: must be positive"
        )));
    }
    Ok(())
}

/// One density for l1 / intervene.
fn one_density(a: &ToyArgs, what: &str, default: f32) -> Result<f32> {
    if a.density_range.is_some() {
        return Err(Error::input(format!(
            "--experiment {what} trains at one density: give --density D"
        )));
    }
    match &a.density {
        None => Ok(default),
        Some(d) if d.len() == 1 => Ok(d[0]),
        Some(_) => Err(Error::input(format!(
            "--experiment {what} trains at one density: give --density D (one value)"
        ))),
    }
}

fn densities(a: &ToyArgs, default: Vec<f32>) -> Result<Vec<f32>> {
    match (&a.density, &a.density_range) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(r)) => {
            let bad = || {
                Error::input(format!(
                    "--density-range {r:?}: expected LO:HI:COUNT with 0 < LO <= HI <= 1"
                ))
            };
            let p: Vec<&str> = r.split(':').collect();
            if p.len() != 3 {
                return Err(bad());
            }
            let lo: f64 = p[0].trim().parse().map_err(|_| bad())?;
            let hi: f64 = p[1].trim().parse().map_err(|_| bad())?;
            let k: usize = p[2].trim().parse().map_err(|_| bad())?;
            if !(lo > 0.0 && lo <= hi && hi <= 1.0 && k >= 1) {
                return Err(bad());
            }
            Ok(crate::toy::log_space(lo, hi, k))
        }
        (None, None) => Ok(default),
    }
}

fn lab_flags_only_for(a: &ToyArgs, exp: LabB) -> Result<()> {
    let b = &a.lab_b;
    if exp != LabB::L1 && (b.l1_values.is_some() || b.topk_values.is_some()) {
        return Err(Error::input(
            "--l1-values and --topk-values belong to --experiment l1",
        ));
    }
    if exp != LabB::Intervene
        && (b.sae_latents.is_some()
            || b.sae_k.is_some()
            || b.sae_steps.is_some()
            || b.capture_rows.is_some())
    {
        return Err(Error::input(
            "--sae-latents, --sae-k, --sae-steps and --capture-rows belong to --experiment intervene",
        ));
    }
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
    common(a, name)?;
    lab_flags_only_for(a, exp)?;
    let log_every = (steps(a) / 10).max(1);
    let start = Instant::now();
    let mut log = super::toy::progress_line(name);
    match exp {
        LabB::Privileged => {
            let d = privileged::PrivilegedConfig::paper();
            let cfg = privileged::PrivilegedConfig {
                n: a.features.unwrap_or(d.n),
                m: a.hidden.unwrap_or(d.m),
                importance_decay: a.importance_decay.unwrap_or(d.importance_decay),
                density: densities(a, d.density)?,
                steps: steps(a),
                batch: batch(a),
                lr: a.lr,
                weight_decay: a.weight_decay,
                seed: a.seed,
            };
            let (engine, why) = select_engine(a.device, a.adapter.as_deref())?;
            eprintln!("{why}");
            let r = privileged::run(&engine, &cfg, log_every, &mut log)?;
            let files = privileged::write(&a.out, &r)?;
            print!("{}", privileged::table(&r));
            println!("rule: {}", r.rule);
            wrote(&a.out, &files, r.train_seconds, &r.engine);
        }
        LabB::Abs => {
            let d = abs::AbsConfig::default_size();
            let cfg = abs::AbsConfig {
                n: a.features.unwrap_or(d.n),
                m: a.hidden.unwrap_or(d.m),
                importance_decay: a.importance_decay.unwrap_or(d.importance_decay),
                density: densities(a, d.density)?,
                steps: steps(a),
                batch: batch(a),
                lr: a.lr,
                weight_decay: a.weight_decay,
                seed: a.seed,
            };
            let (engine, why) = select_engine(a.device, a.adapter.as_deref())?;
            eprintln!("{why}");
            let r = abs::run(&engine, &cfg, log_every, &mut log)?;
            let files = abs::write(&a.out, &r)?;
            print!("{}", abs::table(&r));
            println!("rule: {}", r.rule);
            wrote(&a.out, &files, r.train_seconds, &r.engine);
        }
        LabB::L1 => {
            let d = l1::L1Config::default_size();
            let m = a.hidden.unwrap_or(d.m);
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
            let cfg = l1::L1Config {
                n: a.features.unwrap_or(d.n),
                m,
                importance_decay: a.importance_decay.unwrap_or(d.importance_decay),
                density: one_density(a, name, d.density)?,
                l1: l1_values,
                topk,
                steps: steps(a),
                batch: batch(a),
                lr: a.lr,
                weight_decay: a.weight_decay,
                seed: a.seed,
            };
            let (engine, why) = select_engine(a.device, a.adapter.as_deref())?;
            eprintln!("{why}");
            let r = l1::run(&engine, &cfg, log_every, &mut log)?;
            let files = l1::write(&a.out, &r)?;
            print!("{}", l1::table(&r));
            wrote(&a.out, &files, r.train_seconds, &r.engine);
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
            if m > crate::kernels::toy::MAX_HIDDEN {
                return Err(Error::input(format!(
                    "--hidden {m}: at most {} hidden dimensions",
                    crate::kernels::toy::MAX_HIDDEN
                )));
            }
            let b = &a.lab_b;
            let cfg = intervene::InterveneConfig {
                n,
                m,
                density: one_density(a, name, d.density)?,
                steps: steps(a),
                batch: batch(a),
                lr: a.lr,
                weight_decay: a.weight_decay,
                seed: a.seed,
                capture_rows: b.capture_rows.unwrap_or(d.capture_rows),
                sae_latents: b.sae_latents.unwrap_or(2 * n),
                sae_k: b.sae_k.unwrap_or(d.sae_k),
                sae_steps: b.sae_steps.unwrap_or(d.sae_steps),
                sae_device: a.device,
                sae_adapter: a.adapter.clone(),
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
            let (engine, why) = select_engine(a.device, a.adapter.as_deref())?;
            eprintln!("{why}");
            let r = intervene::run(&engine, &cfg, &a.out, log_every, &mut log)?;
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
