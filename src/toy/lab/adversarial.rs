//! `--experiment adversarial` (the paper's "superposition and adversarial examples"): a
//! sweep of ReLU output models (default n = 40 -> m = 10, importance 0.95^i, 8 densities
//! from 1 to 0.01), and on each represented feature the optimal L2 attack of radius ε.
//!
//! The attack (README "adversarial" has the derivation): feature i's output at an input x
//! is x'_i = ReLU(o_i), o_i = W_i . (W x) + b_i = (WᵀW)_i . x + b_i, linear in x before a
//! monotone ReLU. Lowering x'_i as much as possible with ||δ||₂ <= ε is therefore lowering
//! o_i as much as possible, and o_i(x + δ) - o_i(x) = (WᵀW)_i . δ is smallest, by
//! Cauchy-Schwarz, at δ* = -ε (WᵀW)_i / ||(WᵀW)_i||, where it is -ε ||(WᵀW)_i||. The
//! attack on the input x = e_i (feature i alone, at 1) is compared with the same-size
//! perturbation of feature i itself, δ = -ε e_i, which lowers o_i by ε ||W_i||²: the
//! vulnerability of feature i is the ratio of the two drops of x'_i, which (away from the
//! ReLU's floor) is ||(WᵀW)_i|| / ||W_i||² = 1 / sqrt(D_i). A model without superposition
//! (orthogonal features) has vulnerability 1; interference makes it larger.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::gpu::Engine;
use crate::toy::args::{ToyArgs, check_decay};
use crate::toy::geometry::geometry;
use crate::toy::train::TrainOptions;
use crate::{Error, Result};

use super::{
    Recipe, Run, SWEEP_SIZE, check_features, check_flags, check_hidden, density_range, start, wrote,
};
use crate::toy::plots::{Res, draw_chart, e, legend};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub n: usize,
    pub m: usize,
    pub density: Vec<f32>,
    /// I_i = importance_decay^i.
    pub importance_decay: f32,
    pub epsilon: f64,
    pub recipe: Recipe,
}

impl Config {
    pub fn from_args(a: &ToyArgs) -> Result<Self> {
        check_flags(
            a,
            "adversarial",
            &[
                "--features",
                "--hidden",
                "--importance-decay",
                "--density-range",
                "--epsilon",
            ],
        )?;
        let epsilon = a.epsilon.unwrap_or(0.05);
        if !(epsilon > 0.0 && epsilon.is_finite()) {
            return Err(Error::input(format!(
                "--epsilon {epsilon}: must be positive"
            )));
        }
        let n = check_features(a, 40)?;
        Ok(Config {
            n,
            m: check_hidden(a.hidden.unwrap_or(10))?,
            density: density_range(a, (0.01, 1.0, 8))?,
            importance_decay: check_decay(a.importance_decay.unwrap_or(0.95))?,
            epsilon,
            recipe: Recipe::from_args(a, 10_000, 1024),
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Instance {
    pub density: f32,
    pub dstar: f64,
    /// ||W||_F^2 / m = 1 / D*.
    pub features_per_dim: f64,
    /// Mean over the represented features of the attack's drop over the drop of -ε e_i.
    pub vulnerability: f64,
    pub vulnerability_max: f64,
    /// Per feature (0 for a feature not represented).
    pub feature_vulnerability: Vec<f64>,
    pub represented: usize,
    pub final_loss: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AdversarialResult {
    #[serde(flatten)]
    pub run: Run<Config>,
    pub instances: Vec<Instance>,
}

/// x' = ReLU(Wᵀ W x + b) in f64; w: (n, m), row i = W_i.
pub fn forward(w: &[f32], b: &[f32], n: usize, m: usize, x: &[f64]) -> Vec<f64> {
    let mut h = vec![0.0f64; m];
    for i in 0..n {
        for k in 0..m {
            h[k] += w[i * m + k] as f64 * x[i];
        }
    }
    (0..n)
        .map(|i| {
            let o: f64 = b[i] as f64 + (0..m).map(|k| w[i * m + k] as f64 * h[k]).sum::<f64>();
            o.max(0.0)
        })
        .collect()
}

/// The optimal attack's drop of x'_i at x = e_i over that of -ε e_i, per feature; None for
/// a feature whose output -ε e_i does not lower (not represented, or already 0).
pub fn vulnerability(w: &[f32], b: &[f32], n: usize, m: usize, eps: f64) -> Vec<Option<f64>> {
    let g = geometry(w, n, m);
    (0..n)
        .map(|i| {
            let row = &g.wtw[i * n..(i + 1) * n];
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if g.norms[i] <= crate::toy::geometry::REPRESENTED || norm == 0.0 {
                return None;
            }
            let mut x = vec![0.0; n];
            x[i] = 1.0;
            let clean = forward(w, b, n, m, &x)[i];
            let attacked: Vec<f64> = (0..n).map(|j| x[j] - eps * row[j] / norm).collect();
            let mut own = x.clone();
            own[i] -= eps;
            let drop_attack = clean - forward(w, b, n, m, &attacked)[i];
            let drop_own = clean - forward(w, b, n, m, &own)[i];
            (drop_own > 0.0).then(|| drop_attack / drop_own)
        })
        .collect()
}

pub fn run(engine: &Engine, cfg: &Config, log: crate::toy::Log<'_>) -> Result<AdversarialResult> {
    let (n, m) = (cfg.n, cfg.m);
    let tc = cfg.recipe.train_config(
        n,
        m,
        cfg.density.clone(),
        &crate::toy::decay_importance(n, cfg.importance_decay),
        (cfg.recipe.steps / 10).max(1),
    );
    let t = cfg
        .recipe
        .train(engine, &tc, &TrainOptions::default(), log)?;
    let instances = cfg
        .density
        .iter()
        .enumerate()
        .map(|(e, &density)| {
            let w = &t.params.w[e * n * m..(e + 1) * n * m];
            let b = &t.params.b[e * n..(e + 1) * n];
            let g = geometry(w, n, m);
            let v = vulnerability(w, b, n, m, cfg.epsilon);
            let got: Vec<f64> = v.iter().flatten().copied().collect();
            Instance {
                density,
                dstar: g.dstar,
                features_per_dim: if g.dstar > 0.0 { 1.0 / g.dstar } else { 0.0 },
                vulnerability: if got.is_empty() {
                    0.0
                } else {
                    got.iter().sum::<f64>() / got.len() as f64
                },
                vulnerability_max: got.iter().copied().fold(0.0, f64::max),
                feature_vulnerability: v.iter().map(|x| x.unwrap_or(0.0)).collect(),
                represented: got.len(),
                final_loss: t.final_loss[e],
            }
        })
        .collect();
    Ok(AdversarialResult {
        run: Run::new(cfg, engine, t.seconds),
        instances,
    })
}

pub fn write(dir: &Path, r: &AdversarialResult) -> Result<()> {
    crate::toy::write_results(dir, r)?;
    chart(dir, r)
}

pub fn main(a: &ToyArgs) -> Result<()> {
    let cfg = Config::from_args(a)?;
    let shape = [cfg.density.len(), cfg.n, cfg.m, cfg.recipe.batch];
    let (engine, mut log) = start(a, "toy adversarial", shape, SWEEP_SIZE)?;
    eprintln!(
        "adversarial: n {} -> m {}, {} densities, epsilon {}, {} steps, batch {}",
        cfg.n,
        cfg.m,
        cfg.density.len(),
        cfg.epsilon,
        cfg.recipe.steps,
        cfg.recipe.batch
    );
    let r = run(&engine, &cfg, &mut log)?;
    write(&a.out, &r)?;
    println!(
        "{:>8} {:>7} {:>10} {:>6} {:>14} {:>8}",
        "1-S", "D*", "feat/dim", "feats", "vulnerability", "max"
    );
    for i in &r.instances {
        println!(
            "{:>8.4} {:>7.4} {:>10.3} {:>6} {:>14.3} {:>8.3}",
            i.density,
            i.dstar,
            i.features_per_dim,
            i.represented,
            i.vulnerability,
            i.vulnerability_max
        );
    }
    println!("{}", r.run.trained());
    wrote(&a.out, &["results.json", "adversarial.{png,svg}"]);
    Ok(())
}

// ---------------------------------------------------------------- the chart

fn adversarial_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &AdversarialResult,
) -> Res {
    let x1 = r
        .instances
        .iter()
        .map(|i| i.features_per_dim)
        .fold(1.0, f64::max)
        * 1.1;
    let y1 = r
        .instances
        .iter()
        .map(|i| i.vulnerability_max)
        .fold(1.0, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(root)
        .caption(
            format!(
                "Optimal L2 attack (ε = {}), n = {} → m = {}",
                r.run.config.epsilon, r.run.config.n, r.run.config.m
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x1, 0.0..y1)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("features per dimension (1 / D*)")
        .y_desc("vulnerability (attack / own-feature drop)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(
        vec![(0.0, 1.0), (x1, 1.0)],
        RGBColor(180, 180, 180).stroke_width(1),
    ))
    .map_err(e)?;
    for i in &r.instances {
        c.draw_series(
            i.feature_vulnerability
                .iter()
                .filter(|&&v| v > 0.0)
                .map(|&v| Circle::new((i.features_per_dim, v), 2, BLUE.mix(0.35).filled())),
        )
        .map_err(e)?;
    }
    let mut pts: Vec<(f64, f64)> = r
        .instances
        .iter()
        .map(|i| (i.features_per_dim, i.vulnerability))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    c.draw_series(LineSeries::new(pts.clone(), BLACK.stroke_width(2)))
        .map_err(e)?
        .label("mean over represented features")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, BLACK.filled())))
        .map_err(e)?;
    legend(&mut c, SeriesLabelPosition::UpperLeft, 13)
}

fn chart(dir: &Path, r: &AdversarialResult) -> Result<()> {
    draw_chart!(dir, "adversarial", (760, 500), adversarial_chart(r: AdversarialResult))
}
