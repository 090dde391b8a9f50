//! `--experiment dynamics` (the paper's "learning dynamics"): one ReLU output model
//! (default n = 20 -> m = 5, importance 1, density 0.3), its parameters read back every
//! `--record-every` steps, each feature's dimensionality D_i and the batch loss recorded.
//! A feature's D_i settles on "energy levels" (1, 3/4, 2/3, 1/2, 2/5, 3/8, 0) and moves
//! between them in jumps that come with drops in the loss. A jump is detected when a
//! feature's D_i, having held one level (within [`LEVEL_TOLERANCE`]) for [`HOLD`]
//! records, holds another one for [`HOLD`] records; its loss drop is the mean loss of the
//! [`WINDOW`] records before it left the old level minus that of the [`WINDOW`] records
//! after it reached the new one.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::gpu::Engine;
use crate::toy::args::{ToyArgs, open_engine, progress_line};
use crate::toy::geometry::geometry;
use crate::toy::train::TrainOptions;
use crate::{Error, Result};

use super::{Recipe, Run, check_features, check_flags, check_hidden, one_density, wrote};
use crate::toy::plots::{Res, draw_chart, e};

/// The levels a feature's D_i settles on.
pub const LEVELS: &[f64] = &[0.0, 0.375, 0.4, 0.5, 2.0 / 3.0, 0.75, 1.0];
/// D_i within this of a level is on it (half the gap between 3/8 and 2/5 would be too
/// strict for noisy training; 2/5 and 3/8 are told apart by the nearest).
pub const LEVEL_TOLERANCE: f64 = 0.04;
/// Records a level must hold to count.
pub const HOLD: usize = 4;
/// Records averaged on each side of a jump for its loss drop.
pub const WINDOW: usize = 8;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub n: usize,
    pub m: usize,
    pub density: f32,
    pub record_every: u64,
    pub recipe: Recipe,
}

impl Config {
    pub fn from_args(a: &ToyArgs) -> Result<Self> {
        check_flags(
            a,
            "dynamics",
            &["--features", "--hidden", "--density", "--record-every"],
        )?;
        let n = check_features(a, 20)?;
        let record_every = a.record_every.unwrap_or(25);
        let recipe = Recipe::from_args(a, 10_000, 1024);
        if record_every == 0 || record_every > recipe.steps {
            return Err(Error::input(format!(
                "--record-every {record_every}: between 1 and --steps ({})",
                recipe.steps
            )));
        }
        Ok(Config {
            n,
            m: check_hidden(a.hidden.unwrap_or(5))?,
            density: one_density(a, 0.3)?,
            record_every,
            recipe,
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Jump {
    pub step: u64,
    pub feature: usize,
    pub from: f64,
    pub to: f64,
    pub loss_drop: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DynamicsResult {
    #[serde(flatten)]
    pub run: Run<Config>,
    pub steps: Vec<u64>,
    /// Batch loss per recorded step.
    pub loss: Vec<f64>,
    /// D_i per recorded step, (records, n).
    pub dims: Vec<Vec<f64>>,
    /// D* per recorded step.
    pub dstar: Vec<f64>,
    pub jumps: Vec<Jump>,
    pub final_loss: f64,
}

/// The level `d` is on, if any.
fn level(d: f64) -> Option<f64> {
    let nearest = LEVELS
        .iter()
        .copied()
        .min_by(|a, b| (a - d).abs().total_cmp(&(b - d).abs()))?;
    ((nearest - d).abs() <= LEVEL_TOLERANCE).then_some(nearest)
}

/// 3/8 (square antiprism) and 2/5 (pentagon) are closer than training noise: a feature
/// moving between them is not counted as a jump.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.05
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The jumps of every feature in `dims` (records, n), with `loss` per record.
pub fn jumps(steps: &[u64], loss: &[f64], dims: &[Vec<f64>]) -> Vec<Jump> {
    let n = dims.first().map_or(0, |d| d.len());
    let mut out = Vec::new();
    for f in 0..n {
        // Runs of records on one level: (level, first record, last record).
        let mut runs: Vec<(f64, usize, usize)> = Vec::new();
        for (t, d) in dims.iter().enumerate() {
            match (level(d[f]), runs.last_mut()) {
                (Some(l), Some(r)) if same(r.0, l) && r.2 + 1 == t => r.2 = t,
                (Some(l), _) => runs.push((l, t, t)),
                (None, _) => {}
            }
        }
        let held: Vec<&(f64, usize, usize)> =
            runs.iter().filter(|r| r.2 + 1 - r.1 >= HOLD).collect();
        for pair in held.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if same(a.0, b.0) {
                continue;
            }
            let before = &loss[(a.2 + 1).saturating_sub(WINDOW).max(a.1)..=a.2];
            let after = &loss[b.1..(b.1 + WINDOW).min(b.2 + 1)];
            out.push(Jump {
                step: steps[b.1],
                feature: f,
                from: a.0,
                to: b.0,
                loss_drop: mean(before) - mean(after),
            });
        }
    }
    out.sort_by_key(|j| (j.step, j.feature));
    out
}

pub fn run(engine: &Engine, cfg: &Config, log: crate::toy::Log<'_>) -> Result<DynamicsResult> {
    let (n, m) = (cfg.n, cfg.m);
    let tc = cfg
        .recipe
        .train_config(n, m, vec![cfg.density], &vec![1.0; n], cfg.record_every);
    let opts = TrainOptions {
        snapshot_every: cfg.record_every,
        ..Default::default()
    };
    let t = cfg.recipe.train(engine, &tc, &opts, log)?;
    let mut steps = Vec::new();
    let mut dims = Vec::new();
    let mut dstar = Vec::new();
    for (s, p) in &t.snapshots {
        let g = geometry(&p.w, n, m);
        steps.push(*s);
        dims.push(g.dims);
        dstar.push(g.dstar);
    }
    // The loss curve is logged at the same steps as the snapshots.
    let loss: Vec<f64> = steps
        .iter()
        .map(|s| {
            t.curve
                .iter()
                .find(|c| c.0 == *s)
                .map_or(f64::NAN, |c| c.1[0])
        })
        .collect();
    Ok(DynamicsResult {
        run: Run::new(cfg, engine, t.seconds),
        jumps: jumps(&steps, &loss, &dims),
        steps,
        loss,
        dims,
        dstar,
        final_loss: t.final_loss[0],
    })
}

pub fn write(dir: &Path, r: &DynamicsResult) -> Result<()> {
    crate::toy::write_results(dir, r)?;
    chart(dir, r)
}

pub fn main(a: &ToyArgs) -> Result<()> {
    let cfg = Config::from_args(a)?;
    let shape = [1, cfg.n, cfg.m, cfg.recipe.batch];
    crate::toy::args::check_toy_memory("toy dynamics", shape, "--features")?;
    // Every record keeps W and b (f32), D_i (f64) and the step's loss.
    let records = (cfg.recipe.steps / cfg.record_every).saturating_add(1);
    let (n, m) = (cfg.n as u128, cfg.m as u128);
    crate::io::check_host_memory(
        &format!(
            "toy dynamics: --steps {} / --record-every {} = {records} records of n {} x m {}",
            cfg.recipe.steps, cfg.record_every, cfg.n, cfg.m
        ),
        (records as u128).saturating_mul(4 * (n * m + n) + 8 * n + 32),
        "raise --record-every, or lower --steps or --features",
    )?;
    let engine = open_engine(a)?;
    eprintln!(
        "dynamics: n {} -> m {}, density {}, {} steps, batch {}, recording every {}",
        cfg.n, cfg.m, cfg.density, cfg.recipe.steps, cfg.recipe.batch, cfg.record_every
    );
    let every = (cfg.recipe.steps / 10).max(1);
    let mut line = progress_line("toy dynamics");
    let r = run(&engine, &cfg, &mut |p| {
        if p.step % every == 0 || p.step == p.steps {
            line(p)
        }
    })?;
    write(&a.out, &r)?;
    println!(
        "{:>7} {:>8} {:>6} {:>6} {:>10}",
        "step", "feature", "from", "to", "loss drop"
    );
    for j in &r.jumps {
        println!(
            "{:>7} {:>8} {:>6.3} {:>6.3} {:>10.5}",
            j.step, j.feature, j.from, j.to, j.loss_drop
        );
    }
    println!(
        "{} jumps, {} with a loss drop; final loss {:.5}, D* {:.4}; {}",
        r.jumps.len(),
        r.jumps.iter().filter(|j| j.loss_drop > 0.0).count(),
        r.final_loss,
        r.dstar.last().copied().unwrap_or(0.0),
        r.run.trained()
    );
    wrote(&a.out, &["results.json", "dynamics.{png,svg}"]);
    Ok(())
}

// ---------------------------------------------------------------- the chart

fn dynamics_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &DynamicsResult) -> Res {
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 3 / 5);
    let s1 = r.steps.last().copied().unwrap_or(1) as f64;
    let n = r.run.config.n;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "Learning dynamics, n = {} → m = {}, density {}: Dᵢ per feature",
                n, r.run.config.m, r.run.config.density
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..s1, 0.0..1.1)
        .map_err(e)?;
    c.configure_mesh()
        .y_desc("Dᵢ")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    for &l in LEVELS {
        c.draw_series(LineSeries::new(
            vec![(0.0, l), (s1, l)],
            RGBColor(200, 200, 200).stroke_width(1),
        ))
        .map_err(e)?;
    }
    for f in 0..n {
        let color = ViridisRGB::get_color(f as f64 / n.max(2) as f64 * 0.9);
        let pts = r.steps.iter().zip(&r.dims).map(|(&s, d)| (s as f64, d[f]));
        c.draw_series(LineSeries::new(pts, color.stroke_width(1)))
            .map_err(e)?;
    }
    c.draw_series(
        r.jumps
            .iter()
            .map(|j| Circle::new((j.step as f64, j.to), 4, RED.stroke_width(2))),
    )
    .map_err(e)?;
    let finite: Vec<f64> = r.loss.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1e-6);
    let hi = finite.iter().copied().fold(0.0, f64::max).max(lo * 1.01);
    let mut c = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..s1, (lo..hi).log_scale())
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("step (red: jumps)")
        .y_desc("batch loss")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    for j in &r.jumps {
        c.draw_series(LineSeries::new(
            vec![(j.step as f64, lo), (j.step as f64, hi)],
            RED.mix(0.4).stroke_width(1),
        ))
        .map_err(e)?;
    }
    let pts = r
        .steps
        .iter()
        .zip(&r.loss)
        .filter(|p| p.1.is_finite() && *p.1 > 0.0)
        .map(|(&s, &l)| (s as f64, l));
    c.draw_series(LineSeries::new(pts, BLACK.stroke_width(1)))
        .map_err(e)?;
    Ok(())
}

fn chart(dir: &Path, r: &DynamicsResult) -> Result<()> {
    draw_chart!(dir, "dynamics", (860, 600), dynamics_chart(r: DynamicsResult))
}
