//! `--experiment correlated`: `--sets` sets of `--set-size` features in `--hidden`
//! dimensions, the features of a set always firing together (correlated) or never
//! together (anticorrelated, at most one at a time), each feature present with the same
//! marginal density, importance 1. The paper: correlated features go orthogonal when there
//! is room (and side by side, in a lower-dimensional PCA-like arrangement, when not);
//! anticorrelated features go antipodal. `--restarts` instances are trained at once and
//! the one with the lowest loss is reported (all of them are in results.json).

use std::path::Path;

use crate::gpu::Engine;
use crate::reference::toy::{FeatureSets, SetMode};
use crate::toy::args::{Correlation, ToyArgs};
use crate::toy::train::TrainOptions;
use crate::{Error, Result};

use super::{Recipe, Run, check_flags, check_hidden, cos, one_density, start, wrote};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub sets: usize,
    pub set_size: usize,
    /// "correlated" or "anticorrelated".
    pub correlation: SetMode,
    pub m: usize,
    /// Each feature's marginal density (an anticorrelated set fires with set_size times it).
    pub density: f32,
    pub restarts: usize,
    pub recipe: Recipe,
}

impl Config {
    pub fn from_args(a: &ToyArgs) -> Result<Self> {
        check_flags(
            a,
            "correlated",
            &[
                "--sets",
                "--set-size",
                "--correlation",
                "--hidden",
                "--density",
            ],
        )?;
        let sets = a.sets.unwrap_or(2);
        let set_size = a.set_size.unwrap_or(2);
        if sets == 0 || set_size < 2 {
            return Err(Error::input(format!(
                "--sets {sets} --set-size {set_size}: at least one set of at least 2 features"
            )));
        }
        if sets.saturating_mul(set_size) > 1024 {
            return Err(Error::input(format!(
                "--sets {sets} x --set-size {set_size}: at most 1024 features"
            )));
        }
        let correlation = match a.correlation.unwrap_or(Correlation::Correlated) {
            Correlation::Correlated => SetMode::Correlated,
            Correlation::Anticorrelated => SetMode::Anticorrelated,
        };
        let density = one_density(a, 0.05)?;
        if correlation == SetMode::Anticorrelated && density as f64 * set_size as f64 > 1.0 {
            return Err(Error::input(format!(
                "--density {density}: an anticorrelated set of {set_size} fires with {set_size} x \
                 the density, which must be at most 1"
            )));
        }
        Ok(Config {
            sets,
            set_size,
            correlation,
            m: check_hidden(a.hidden.unwrap_or(2))?,
            density,
            restarts: crate::toy::args::restarts(a)?,
            recipe: Recipe::from_args(a, 10_000, 1024),
        })
    }

    pub fn n(&self) -> usize {
        self.sets * self.set_size
    }
}

/// Cosines within and across sets of one instance's W.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measures {
    pub within_set_mean_abs_cos: f64,
    pub within_set_min_cos: f64,
    pub across_set_mean_abs_cos: f64,
    pub final_loss: f64,
    /// ||W_i||.
    pub norms: Vec<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CorrelatedResult {
    #[serde(flatten)]
    pub run: Run<Config>,
    /// The lowest-loss restart's measures (flattened here) and W (n, m).
    #[serde(flatten)]
    pub best: Measures,
    #[serde(rename = "W")]
    pub w: Vec<Vec<f32>>,
    /// cos(W_i, W_j) of the best restart, (n, n).
    pub cos: Vec<Vec<f64>>,
    pub best_restart: usize,
    pub restarts: Vec<Measures>,
    /// Every restart's W, (restarts, n, m).
    pub restart_w: Vec<Vec<Vec<f32>>>,
}

/// The cosines of `w` (n, m) within and across sets of `size` consecutive features.
pub fn measure(w: &[f32], n: usize, m: usize, size: usize, loss: f64) -> Measures {
    let row = |i: usize| &w[i * m..(i + 1) * m];
    let (mut within, mut across) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            let c = cos(row(i), row(j));
            if i / size == j / size {
                within.push(c);
            } else {
                across.push(c);
            }
        }
    }
    let mean_abs = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(|c| c.abs()).sum::<f64>() / v.len() as f64
        }
    };
    Measures {
        within_set_mean_abs_cos: mean_abs(&within),
        within_set_min_cos: within.iter().copied().fold(f64::INFINITY, f64::min),
        across_set_mean_abs_cos: mean_abs(&across),
        final_loss: loss,
        norms: (0..n)
            .map(|i| {
                row(i)
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect(),
    }
}

pub fn run(engine: &Engine, cfg: &Config, log: crate::toy::Log<'_>) -> Result<CorrelatedResult> {
    let (n, m) = (cfg.n(), cfg.m);
    let tc = cfg.recipe.train_config(
        n,
        m,
        vec![cfg.density; cfg.restarts],
        &vec![1.0; n],
        (cfg.recipe.steps / 10).max(1),
    );
    let opts = TrainOptions {
        sets: FeatureSets {
            mode: cfg.correlation,
            sets: cfg.sets,
            size: cfg.set_size,
        },
        ..Default::default()
    };
    let t = cfg.recipe.train(engine, &tc, &opts, log)?;
    let w_of = |e: usize| &t.params.w[e * n * m..(e + 1) * n * m];
    let restarts: Vec<Measures> = (0..cfg.restarts)
        .map(|e| measure(w_of(e), n, m, cfg.set_size, t.final_loss[e]))
        .collect();
    let best_restart = (0..cfg.restarts)
        .min_by(|&a, &b| t.final_loss[a].total_cmp(&t.final_loss[b]))
        .unwrap_or(0);
    let w = w_of(best_restart);
    let row = |i: usize| &w[i * m..(i + 1) * m];
    Ok(CorrelatedResult {
        run: Run::new(cfg, engine, t.seconds),
        best: restarts[best_restart].clone(),
        w: w.chunks(m).map(|r| r.to_vec()).collect(),
        cos: (0..n)
            .map(|i| (0..n).map(|j| cos(row(i), row(j))).collect())
            .collect(),
        best_restart,
        restarts,
        restart_w: (0..cfg.restarts)
            .map(|e| w_of(e).chunks(m).map(|r| r.to_vec()).collect())
            .collect(),
    })
}

pub fn write(dir: &Path, r: &CorrelatedResult) -> Result<Vec<&'static str>> {
    crate::toy::write_results(dir, r)?;
    let c = &r.run.config;
    let kind = match c.correlation {
        SetMode::Anticorrelated => "anticorrelated",
        _ => "correlated",
    };
    let groups: Vec<usize> = (0..c.n()).map(|i| i / c.set_size).collect();
    super::plots_a::heat(
        dir,
        "correlated-cos",
        &format!(
            "cos(Wᵢ, Wⱼ), {} {kind} sets of {} in m = {} (colour: set)",
            c.sets, c.set_size, c.m
        ),
        &r.cos,
        &groups,
    )?;
    let mut files = vec!["results.json", "correlated-cos.{png,svg}"];
    if c.m == 2 {
        let panels: Vec<super::plots_a::Panel> = restart_ws(r)
            .into_iter()
            .enumerate()
            .map(|(e, w)| super::plots_a::Panel {
                label: format!(
                    "restart {e}{}",
                    if e == r.best_restart { " (best)" } else { "" }
                ),
                note: format!("loss {:.4}", r.restarts[e].final_loss),
                vectors: w,
                groups: groups.clone(),
            })
            .collect();
        super::plots_a::directions(
            dir,
            "correlated",
            &format!(
                "{} {kind} sets of {} features in m = 2 (colour: set)",
                c.sets, c.set_size
            ),
            &panels,
        )?;
        files.push("correlated.{png,svg}");
    }
    Ok(files)
}

/// Every restart's W as plane vectors (m = 2), kept in the result's `restart_w`.
fn restart_ws(r: &CorrelatedResult) -> Vec<Vec<[f64; 2]>> {
    r.restart_w
        .iter()
        .map(|w| w.iter().map(|v| [v[0] as f64, v[1] as f64]).collect())
        .collect()
}

pub fn main(a: &ToyArgs) -> Result<()> {
    let cfg = Config::from_args(a)?;
    let shape = [cfg.restarts, cfg.n(), cfg.m, cfg.recipe.batch];
    let (engine, mut log) = start(a, "toy correlated", shape, "--restarts")?;
    eprintln!(
        "correlated: {} {:?} sets of {} features in m {}, density {}, {} restarts, {} steps",
        cfg.sets, cfg.correlation, cfg.set_size, cfg.m, cfg.density, cfg.restarts, cfg.recipe.steps
    );
    let r = run(&engine, &cfg, &mut log)?;
    let files = write(&a.out, &r)?;
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>12}",
        "restart", "loss", "within|cos|", "within min", "across|cos|"
    );
    for (e, x) in r.restarts.iter().enumerate() {
        println!(
            "{:>8} {:>10.5} {:>12.3} {:>10.3} {:>12.3}{}",
            e,
            x.final_loss,
            x.within_set_mean_abs_cos,
            x.within_set_min_cos,
            x.across_set_mean_abs_cos,
            if e == r.best_restart { "  (best)" } else { "" }
        );
    }
    println!("{}", r.run.trained());
    wrote(&a.out, &files);
    Ok(())
}
