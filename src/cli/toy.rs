//! `saeforge toy`: the toy models of superposition (Elhage et al. 2022) trained on
//! saeforge's kernels, many instances at once, with the paper's figures.
//!
//! ```text
//! saeforge toy --out toy-intro                       # n 5 -> m 2, I = 0.9^i, 10 densities
//! saeforge toy --features 20 --hidden 5 --importance-decay 0.7 --density 1,0.3,0.1,0.03,0.01,0.003,0.001
//! saeforge toy --features 200 --hidden 20 --importance-decay 1 --density-range 0.05:1:20
//! saeforge toy --phase                               # n 2 -> m 1 phase diagram
//! saeforge toy --experiment perturb                  # the rest of the paper: src/toy/lab
//! saeforge toy --experiment correlated --correlation anticorrelated --sets 2 --set-size 2
//! ```

use std::path::PathBuf;
use std::time::Instant;

use crate::cli::first_set;
use crate::gpu::{DeviceChoice, select_engine};
use crate::toy::phase::{Phase, PhaseConfig, run_phase};
use crate::toy::{
    Init, Progress, Recipe, SweepConfig, log_space, run_sweep, write_phase, write_sweep,
};
use crate::{Error, Result};

/// The lab's experiments (`--experiment`), one module each under `crate::toy::lab`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// Non-uniform superposition: the n 5 -> m 2 pentagon with feature 5's density swept.
    Perturb,
    /// Feature sets that fire together (--correlation correlated) or never together.
    Correlated,
    /// The feature geometry graph of the n 400 -> m 30 sweep, components classified.
    Geometry,
    /// D_i and the loss during training: the energy-level jumps.
    Dynamics,
    /// The optimal L2 attack on each feature against features per dimension.
    Adversarial,
    /// Superposition in a privileged basis: h = ReLU(W x), per-neuron stacked bars.
    Privileged,
    /// Computation in superposition: y = |x| through a ReLU hidden layer.
    Abs,
    /// An L1 penalty (and a top-k) on the hidden layer against superposition.
    L1,
    /// An SAE trained on the toy model's hidden layer; its latents ablated / clamped.
    Intervene,
}

/// `--correlation`: how the features of a set fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Correlation {
    Correlated,
    Anticorrelated,
}

#[derive(clap::Args, Debug)]
pub struct ToyArgs {
    /// Features n [default: 5].
    #[arg(long)]
    pub features: Option<usize>,
    /// Hidden dimensions m (at most 32) [default: 2].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Feature importance I_i = R^i (i from 0); 1 for equal importance [default: 0.9].
    #[arg(long, value_name = "R")]
    pub importance_decay: Option<f32>,
    /// Feature densities 1 - S, one instance each, comma-separated (e.g. 1,0.3,0.1).
    /// (perturb: the four unperturbed features' density; correlated, dynamics: one value.)
    #[arg(long, value_delimiter = ',')]
    pub density: Option<Vec<f32>>,
    /// COUNT densities log-spaced from HI down to LO [default: 0.05:1:10, the paper's
    /// 20^-linspace(0, 1, 10); with --phase 0.01:1:15].
    #[arg(long, value_name = "LO:HI:COUNT")]
    pub density_range: Option<String>,
    /// Train the linear model x' = W^T W x + b instead of the ReLU output model.
    #[arg(long)]
    pub linear: bool,
    /// Training steps [default: 10000; geometry 4000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Batch rows per instance and step [default: 1024; geometry 256].
    #[arg(long)]
    pub batch: Option<usize>,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// AdamW decoupled weight decay (torch.optim.AdamW's default).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// W's initialisation: notebook (the authors' notebook: Xavier-normal over the
    /// (instances, n, m) parameter, std sqrt(2 / (m (n + instances)))) or xavier (per
    /// instance, W (m, n): std sqrt(2 / (n + m))).
    #[arg(long, value_enum, default_value_t = Init::Notebook)]
    pub init: Init,
    /// Seed of the initialisation and of the data hash.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: results.json and the figures (PNG and SVG).
    #[arg(long, default_value = "toy")]
    pub out: PathBuf,
    /// Draw the n = 2 -> m = 1 phase diagram (relative importance of feature 2 against
    /// density) instead of a sweep.
    #[arg(long)]
    pub phase: bool,
    /// With --phase: COUNT relative importances of feature 2, log-spaced from LO to HI.
    #[arg(long, value_name = "LO:HI:COUNT", default_value = "0.1:10:15")]
    pub importance_range: String,
    /// With --phase: restarts per cell (the lowest final loss wins); with --experiment
    /// perturb (per density) and correlated: instances trained, the lowest final loss
    /// reported.
    #[arg(long, default_value_t = 4)]
    pub restarts: usize,
    /// Run one experiment of the lab instead of a sweep (README "Superposition lab"):
    /// perturb (n 5 -> m 2, the fifth feature's density swept), correlated (feature sets
    /// firing together or never together), geometry (the feature geometry graph of the
    /// n 400 -> m 30 sweep), dynamics (D_i and the loss during training, energy-level
    /// jumps), adversarial (the optimal L2 attack against features per dimension),
    /// privileged (a ReLU hidden layer: per-neuron stacks), abs (y = |x| computed in
    /// superposition), l1 (an L1 penalty or top-k on the hidden layer), intervene (an SAE
    /// on the hidden layer, its latents ablated and clamped inside the model).
    #[arg(long, value_enum, conflicts_with = "phase")]
    pub experiment: Option<Experiment>,
    /// correlated: features per set [default: 2].
    #[arg(long)]
    pub set_size: Option<usize>,
    /// correlated: number of sets (n = sets x set size) [default: 2].
    #[arg(long)]
    pub sets: Option<usize>,
    /// correlated: the sets' features fire together (correlated) or at most one at a time
    /// (anticorrelated) [default: correlated].
    #[arg(long, value_enum)]
    pub correlation: Option<Correlation>,
    /// geometry: an edge joins features i and j when |W_i_hat . W_j| exceeds this
    /// [default: 0.3].
    #[arg(long)]
    pub threshold: Option<f64>,
    /// dynamics: record D_i and the loss every this many steps [default: 25].
    #[arg(long)]
    pub record_every: Option<u64>,
    /// adversarial: the L2 radius of the attack on the input [default: 0.05].
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// auto: a hardware GPU if there is one, else the CPU engine; gpu: any wgpu adapter
    /// (lavapipe included); cpu: the plain-Rust engine.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Use the adapter whose name contains this (see `saeforge devices`).
    #[arg(long)]
    pub adapter: Option<String>,
    #[command(flatten)]
    pub lab_b: super::toy_lab_b::LabBArgs,
}

/// Parse LO:HI:COUNT.
pub fn parse_range(flag: &str, s: &str) -> Result<(f64, f64, usize)> {
    let bad = || {
        Error::input(format!(
            "{flag} {s:?}: expected LO:HI:COUNT with 0 < LO <= HI and COUNT >= 1, e.g. 0.05:1:20"
        ))
    };
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let lo: f64 = parts[0].trim().parse().map_err(|_| bad())?;
    let hi: f64 = parts[1].trim().parse().map_err(|_| bad())?;
    let count: usize = parts[2].trim().parse().map_err(|_| bad())?;
    if !(lo > 0.0 && lo <= hi && hi.is_finite() && count >= 1) {
        return Err(bad());
    }
    Ok((lo, hi, count))
}

fn check_density(d: &[f32]) -> Result<()> {
    if d.is_empty() {
        return Err(Error::input("--density: give at least one value"));
    }
    check_densities(d)
}

/// Every `--density` value a density 1 - S, in (0, 1].
pub fn check_densities(d: &[f32]) -> Result<()> {
    if let Some(v) = d.iter().find(|&&v| !(v > 0.0 && v <= 1.0)) {
        return Err(Error::input(format!(
            "--density {v}: a density 1 - S must be in (0, 1]"
        )));
    }
    Ok(())
}

/// `--density-range LO:HI:COUNT` (HI at most 1), or `default`.
pub fn density_bounds(a: &ToyArgs, default: (f64, f64, usize)) -> Result<(f64, f64, usize)> {
    let (lo, hi, k) = match &a.density_range {
        Some(r) => parse_range("--density-range", r)?,
        None => default,
    };
    if hi > 1.0 {
        return Err(Error::input(format!(
            "--density-range: densities must be at most 1, got {hi}"
        )));
    }
    Ok((lo, hi, k))
}

/// `--hidden M` within the kernels' limit.
pub fn check_max_hidden(m: usize) -> Result<()> {
    if m > crate::kernels::toy::MAX_HIDDEN {
        return Err(Error::input(format!(
            "--hidden {m}: at most {} hidden dimensions",
            crate::kernels::toy::MAX_HIDDEN
        )));
    }
    Ok(())
}

/// `--importance-decay R`: positive (and finite).
pub fn check_decay(r: f32) -> Result<f32> {
    if !(r > 0.0 && r.is_finite()) {
        return Err(Error::input(format!(
            "--importance-decay {r}: must be positive"
        )));
    }
    Ok(r)
}

/// The flags only the lab's experiments read, as (flag, given).
pub fn lab_flags(a: &ToyArgs) -> [(&'static str, bool); 12] {
    let b = &a.lab_b;
    [
        ("--set-size", a.set_size.is_some()),
        ("--sets", a.sets.is_some()),
        ("--correlation", a.correlation.is_some()),
        ("--threshold", a.threshold.is_some()),
        ("--record-every", a.record_every.is_some()),
        ("--epsilon", a.epsilon.is_some()),
        ("--l1-values", b.l1_values.is_some()),
        ("--topk-values", b.topk_values.is_some()),
        ("--sae-latents", b.sae_latents.is_some()),
        ("--sae-k", b.sae_k.is_some()),
        ("--sae-steps", b.sae_steps.is_some()),
        ("--capture-rows", b.capture_rows.is_some()),
    ]
}

pub fn check_common(a: &ToyArgs) -> Result<()> {
    if a.steps == Some(0) {
        return Err(Error::input("--steps must be at least 1"));
    }
    if a.batch == Some(0) {
        return Err(Error::input("--batch must be at least 1"));
    }
    if a.experiment.is_none()
        && let Some(flag) = first_set(&lab_flags(a))
    {
        return Err(Error::input(format!(
            "{flag} applies to --experiment only (see saeforge toy --help)"
        )));
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
    Ok(())
}

pub fn progress_line(what: &str) -> impl FnMut(&Progress) + '_ {
    move |p: &Progress| {
        let k = p.batch_loss.len() as f64;
        let mean = p.batch_loss.iter().sum::<f64>() / k;
        let rate = p.step as f64 / p.seconds.max(1e-9);
        let eta = (p.steps - p.step) as f64 / rate.max(1e-9);
        eprintln!(
            "{what}: step {}/{}  mean batch loss {mean:.5}  {rate:.0} steps/s  ETA {eta:.0} s",
            p.step, p.steps
        );
    }
}

/// The sweep configuration the flags describe (no --phase).
pub fn sweep_config(a: &ToyArgs) -> Result<SweepConfig> {
    check_common(a)?;
    let n = a.features.unwrap_or(5);
    let m = a.hidden.unwrap_or(2);
    if n == 0 || m == 0 {
        return Err(Error::input("--features and --hidden must be at least 1"));
    }
    check_max_hidden(m)?;
    let decay = check_decay(a.importance_decay.unwrap_or(0.9))?;
    let density = match (&a.density, &a.density_range) {
        (Some(_), Some(_)) => {
            return Err(Error::input(
                "--density and --density-range: give one or the other",
            ));
        }
        (Some(d), _) => d.clone(),
        (None, Some(r)) => {
            let (lo, hi, k) = parse_range("--density-range", r)?;
            log_space(lo, hi, k)
        }
        (None, None) => log_space(0.05, 1.0, 10),
    };
    check_density(&density)?;
    Ok(SweepConfig {
        n,
        m,
        importance_decay: decay,
        density,
        relu: !a.linear,
        recipe: Recipe::from_args(a, 10_000, 1024),
    })
}

/// The phase-diagram configuration the flags describe (--phase).
pub fn phase_config(a: &ToyArgs) -> Result<PhaseConfig> {
    check_common(a)?;
    if a.features.is_some() || a.hidden.is_some() || a.importance_decay.is_some() {
        return Err(Error::input(
            "--phase trains n = 2 features in m = 1 dimension with importances 1 and r; \
             drop --features, --hidden and --importance-decay (set r with --importance-range)",
        ));
    }
    if a.density.is_some() {
        return Err(Error::input(
            "--phase takes its density axis from --density-range LO:HI:COUNT",
        ));
    }
    let (ilo, ihi, ik) = parse_range("--importance-range", &a.importance_range)?;
    let (dlo, dhi, dk) = density_bounds(a, (0.01, 1.0, 15))?;
    if a.restarts == 0 {
        return Err(Error::input("--restarts must be at least 1"));
    }
    Ok(PhaseConfig {
        importance_lo: ilo,
        importance_hi: ihi,
        importance_points: ik,
        density_lo: dlo,
        density_hi: dhi,
        density_points: dk,
        restarts: a.restarts,
        relu: !a.linear,
        recipe: Recipe {
            eval_batches: 32,
            ..Recipe::from_args(a, 10_000, 1024)
        },
    })
}

/// Validate the flags of a lab experiment, then open the engine `--device` picks.
pub fn open_engine(a: &ToyArgs) -> Result<crate::gpu::Engine> {
    crate::io::check_output_dir("--out", &a.out)?;
    let (engine, why) = select_engine(a.device, a.adapter.as_deref())?;
    eprintln!("{why}");
    Ok(engine)
}

pub fn run(args: ToyArgs) -> Result<()> {
    if let Some(x) = args.experiment {
        use super::toy_lab_b::{LabB, run as run_b};
        use crate::toy::lab;
        return match x {
            Experiment::Perturb => lab::perturb::main(&args),
            Experiment::Correlated => lab::correlated::main(&args),
            Experiment::Geometry => lab::graph::main(&args),
            Experiment::Dynamics => lab::dynamics::main(&args),
            Experiment::Adversarial => lab::adversarial::main(&args),
            Experiment::Privileged => run_b(LabB::Privileged, &args),
            Experiment::Abs => run_b(LabB::Abs, &args),
            Experiment::L1 => run_b(LabB::L1, &args),
            Experiment::Intervene => run_b(LabB::Intervene, &args),
        };
    }
    // Validate every flag before opening a device.
    let sweep = if args.phase {
        None
    } else {
        Some(sweep_config(&args)?)
    };
    let phase = if args.phase {
        Some(phase_config(&args)?)
    } else {
        None
    };
    let engine = open_engine(&args)?;
    let start = Instant::now();
    let log_every = (args.steps.unwrap_or(10_000) / 10).max(1);
    if let Some(cfg) = phase {
        let cells = cfg.importance_points * cfg.density_points;
        eprintln!(
            "phase diagram: {} x {} cells x {} restarts = {} instances of n 2 -> m 1, {} steps, batch {}",
            cfg.importance_points,
            cfg.density_points,
            cfg.restarts,
            cells * cfg.restarts,
            cfg.recipe.steps,
            cfg.recipe.batch
        );
        let r = run_phase(&engine, &cfg, log_every, &mut progress_line("toy --phase"))?;
        let files = write_phase(&args.out, &r)?;
        let count = |p: Phase| r.cells.iter().filter(|c| c.phase == p).count();
        println!(
            "{} cells: {} not learned, {} dedicated dimension, {} superposition ({:.1} s training on the {})",
            r.cells.len(),
            count(Phase::NotLearned),
            count(Phase::Dedicated),
            count(Phase::Superposition),
            r.train_seconds,
            r.engine
        );
        println!("wrote {}: {}", args.out.display(), files.join(", "));
    } else if let Some(cfg) = sweep {
        eprintln!(
            "{} model, n {} -> m {}, {} densities, {} steps, batch {}",
            if cfg.relu { "ReLU output" } else { "linear" },
            cfg.n,
            cfg.m,
            cfg.density.len(),
            cfg.recipe.steps,
            cfg.recipe.batch
        );
        let r = run_sweep(&engine, &cfg, log_every, &mut progress_line("toy"))?;
        let files = write_sweep(&args.out, &r)?;
        println!(
            "{:>10} {:>8} {:>8} {:>8}  represented (||W_i|| > 0.5)",
            "1-S", "1/(1-S)", "D*", "loss"
        );
        for i in &r.instances {
            let rep: Vec<String> = i.represented.iter().map(|v| v.to_string()).collect();
            println!(
                "{:>10.4} {:>8.3} {:>8.4} {:>8.5}  {} [{}]",
                i.density,
                i.inverse_density,
                i.dstar,
                i.final_loss,
                i.represented.len(),
                rep.join(" ")
            );
        }
        println!(
            "{:.1} s training on the {}; wrote {}: {}",
            r.train_seconds,
            r.engine,
            args.out.display(),
            files.join(", ")
        );
    }
    tracing::debug!(seconds = start.elapsed().as_secs_f64(), "toy done");
    Ok(())
}
