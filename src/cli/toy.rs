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

use std::time::Instant;

pub use crate::toy::args::ToyArgs;
use crate::toy::args::{
    Experiment, check_common, check_decay, check_density, check_max_hidden, check_toy_memory,
    density_bounds, open_engine, parse_range, progress_line, restarts,
};
use crate::toy::phase::{Phase, PhaseConfig, run_phase};
use crate::toy::{Features, Recipe, SweepConfig, log_space, run_sweep, write_phase, write_sweep};
use crate::{Error, Result};

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
    let recipe = Recipe::from_args(a, 10_000, 1024);
    check_toy_memory(
        "toy",
        [density.len(), n, m, recipe.batch],
        "--features, --hidden or the densities (--density, --density-range)",
    )?;
    Ok(SweepConfig {
        features: Features {
            n,
            m,
            importance_decay: decay,
            density,
        },
        relu: !a.linear,
        recipe,
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
    let importance_range = a.importance_range.as_deref().unwrap_or("0.1:10:15");
    let (ilo, ihi, ik) = parse_range("--importance-range", importance_range)?;
    let (dlo, dhi, dk) = density_bounds(a, (0.01, 1.0, 15))?;
    let restarts = restarts(a)?;
    let recipe = Recipe {
        eval_batches: 32,
        ..Recipe::from_args(a, 10_000, 1024)
    };
    let instances = ik.saturating_mul(dk).saturating_mul(restarts);
    check_toy_memory(
        "toy --phase",
        [instances, 2, 1, recipe.batch],
        "the cells x restarts (--importance-range, --density-range, --restarts)",
    )?;
    Ok(PhaseConfig {
        importance_lo: ilo,
        importance_hi: ihi,
        importance_points: ik,
        density_lo: dlo,
        density_hi: dhi,
        density_points: dk,
        restarts,
        relu: !a.linear,
        recipe,
    })
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
            "{} cells: {} not learned, {} dedicated dimension, {} superposition ({})",
            r.cells.len(),
            count(Phase::NotLearned),
            count(Phase::Dedicated),
            count(Phase::Superposition),
            r.run.trained()
        );
        println!("wrote {}: {}", args.out.display(), files.join(", "));
    } else if let Some(cfg) = sweep {
        eprintln!(
            "{} model, n {} -> m {}, {} densities, {} steps, batch {}",
            if cfg.relu { "ReLU output" } else { "linear" },
            cfg.features.n,
            cfg.features.m,
            cfg.features.density.len(),
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
            "{}; wrote {}: {}",
            r.run.trained(),
            args.out.display(),
            files.join(", ")
        );
    }
    tracing::debug!(seconds = start.elapsed().as_secs_f64(), "toy done");
    Ok(())
}
