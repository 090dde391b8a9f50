//! `--experiment geometry`: the feature geometry graph of the uniform n = 400 -> m = 30
//! sweep (importance 1). Per density the nodes are the represented features
//! (||W_i|| > 0.5), an edge joins i and j when |W_i_hat . W_j| (either way round) exceeds
//! `--threshold`, and each connected component is classified by its size and its
//! features' dimensionality D_i: a feature alone (D 1), digon (2 features, D 1/2),
//! triangle (3, 2/3), tetrahedron (4, 3/4), pentagon (5, 2/5), square antiprism (8, 3/8).
//! The paper: the features organise into a tegum product of such small polytopes, D_i
//! sticking at those fractions.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Result;
use crate::gpu::Engine;
use crate::toy::args::ToyArgs;
use crate::toy::geometry::{REPRESENTED, geometry};
use crate::toy::train::TrainOptions;
use crate::{Error, toy::Log};

use super::plots_a::PALETTE;
use super::{
    Recipe, Run, SWEEP_SIZE, check_features, check_flags, check_hidden, density_range, start, wrote,
};
use crate::toy::plots::{Res, draw_chart, e, legend};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub n: usize,
    pub m: usize,
    pub density: Vec<f32>,
    pub threshold: f64,
    pub recipe: Recipe,
}

impl Config {
    pub fn from_args(a: &ToyArgs) -> Result<Self> {
        check_flags(
            a,
            "geometry",
            &["--features", "--hidden", "--density-range", "--threshold"],
        )?;
        let threshold = a.threshold.unwrap_or(0.3);
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(Error::input(format!(
                "--threshold {threshold}: must be in (0, 1)"
            )));
        }
        let n = check_features(a, 400)?;
        Ok(Config {
            n,
            m: check_hidden(a.hidden.unwrap_or(30))?,
            density: density_range(a, (0.2, 0.5, 5))?,
            threshold,
            recipe: Recipe::from_args(a, 4_000, 256),
        })
    }
}

/// The polytopes the paper names: (features, dimensionality, name).
pub const POLYTOPES: &[(usize, f64, &str)] = &[
    (1, 1.0, "dedicated"),
    (2, 0.5, "digon"),
    (3, 2.0 / 3.0, "triangle"),
    (4, 0.75, "tetrahedron"),
    (5, 0.4, "pentagon"),
    (8, 0.375, "square antiprism"),
];

/// A component's features' mean D_i may differ from its polytope's by this much.
pub const DIM_TOLERANCE: f64 = 0.08;

/// A component's name: the polytope of its size whose D it matches, else "other".
pub fn classify(size: usize, mean_dim: f64) -> &'static str {
    POLYTOPES
        .iter()
        .find(|p| p.0 == size && (mean_dim - p.1).abs() <= DIM_TOLERANCE)
        .map_or("other", |p| p.2)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Component {
    pub features: Vec<usize>,
    pub mean_dim: f64,
    pub class: &'static str,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Level {
    pub density: f32,
    pub dstar: f64,
    pub final_loss: f64,
    /// Component size -> how many.
    pub components: BTreeMap<usize, usize>,
    /// Component class -> how many.
    pub classes: BTreeMap<&'static str, usize>,
    /// Every D_i (n).
    pub dims: Vec<f64>,
    pub represented: usize,
    /// The components, largest first.
    pub list: Vec<Component>,
    /// The feature directions W_i, (n, m).
    pub w: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GeometryResult {
    #[serde(flatten)]
    pub run: Run<Config>,
    pub levels: Vec<Level>,
}

fn find(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    let mut j = i;
    while parent[j] != r {
        let next = parent[j];
        parent[j] = r;
        j = next;
    }
    r
}

/// The components of one instance's w (n, m) as the module describes.
pub fn components(w: &[f32], n: usize, m: usize, threshold: f64) -> (Vec<Component>, Vec<f64>) {
    let g = geometry(w, n, m);
    let nodes: Vec<usize> = (0..n).filter(|&i| g.norms[i] > REPRESENTED).collect();
    let mut parent: Vec<usize> = (0..n).collect();
    for (a, &i) in nodes.iter().enumerate() {
        for &j in &nodes[a + 1..] {
            let wij = g.wtw[i * n + j].abs();
            if wij / g.norms[i] > threshold || wij / g.norms[j] > threshold {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                parent[ri] = rj;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &nodes {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut list: Vec<Component> = groups
        .into_values()
        .map(|features| {
            let mean_dim = features.iter().map(|&i| g.dims[i]).sum::<f64>() / features.len() as f64;
            Component {
                class: classify(features.len(), mean_dim),
                features,
                mean_dim,
            }
        })
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.features.len()));
    (list, g.dims)
}

pub fn run(engine: &Engine, cfg: &Config, log: Log<'_>) -> Result<GeometryResult> {
    let (n, m) = (cfg.n, cfg.m);
    let tc = cfg.recipe.train_config(
        n,
        m,
        cfg.density.clone(),
        &vec![1.0; n],
        (cfg.recipe.steps / 10).max(1),
    );
    let t = cfg
        .recipe
        .train(engine, &tc, &TrainOptions::default(), log)?;
    let levels = cfg
        .density
        .iter()
        .enumerate()
        .map(|(e, &density)| {
            let w = &t.params.w[e * n * m..(e + 1) * n * m];
            let (list, dims) = components(w, n, m, cfg.threshold);
            let mut sizes = BTreeMap::new();
            let mut classes = BTreeMap::new();
            for c in &list {
                *sizes.entry(c.features.len()).or_insert(0) += 1;
                *classes.entry(c.class).or_insert(0) += 1;
            }
            Level {
                density,
                dstar: geometry(w, n, m).dstar,
                final_loss: t.final_loss[e],
                components: sizes,
                classes,
                represented: list.iter().map(|c| c.features.len()).sum(),
                dims,
                list,
                w: w.chunks(m).map(|r| r.to_vec()).collect(),
            }
        })
        .collect();
    Ok(GeometryResult {
        run: Run::new(cfg, engine, t.seconds),
        levels,
    })
}

pub fn write(dir: &Path, r: &GeometryResult) -> Result<()> {
    crate::toy::write_results(dir, r)?;
    chart(dir, r)
}

pub fn main(a: &ToyArgs) -> Result<()> {
    let cfg = Config::from_args(a)?;
    let shape = [cfg.density.len(), cfg.n, cfg.m, cfg.recipe.batch];
    let (engine, mut log) = start(a, "toy geometry", shape, SWEEP_SIZE)?;
    eprintln!(
        "geometry: n {} -> m {}, {} densities, {} steps, batch {}, threshold {}",
        cfg.n,
        cfg.m,
        cfg.density.len(),
        cfg.recipe.steps,
        cfg.recipe.batch,
        cfg.threshold
    );
    let r = run(&engine, &cfg, &mut log)?;
    write(&a.out, &r)?;
    println!(
        "{:>8} {:>7} {:>6}  components by class",
        "1-S", "D*", "feats"
    );
    for l in &r.levels {
        let classes: Vec<String> = l.classes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{:>8.4} {:>7.4} {:>6}  {}",
            l.density,
            l.dstar,
            l.represented,
            classes.join(", ")
        );
    }
    println!("{}", r.run.trained());
    wrote(&a.out, &["results.json", "geometry.{png,svg}"]);
    Ok(())
}

// ---------------------------------------------------------------- the chart

fn class_color(class: &str) -> RGBColor {
    POLYTOPES
        .iter()
        .position(|p| p.2 == class)
        .map_or(RGBColor(160, 160, 160), |i| PALETTE[i % PALETTE.len()])
}

fn geometry_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &GeometryResult) -> Res {
    let xs: Vec<f64> = r.levels.iter().map(|l| 1.0 / l.density as f64).collect();
    let x0 = xs.iter().copied().fold(f64::INFINITY, f64::min) / 1.3;
    let x1 = xs.iter().copied().fold(0.0, f64::max) * 1.3;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Feature dimensionality Dᵢ, n = {} → m = {}, coloured by component",
                r.run.config.n, r.run.config.m
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((x0.max(1e-3)..x1.max(2.0)).log_scale(), 0.0..1.1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("1 / (1 - S)")
        .y_desc("Dᵢ")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for p in POLYTOPES {
        let c = class_color(p.2);
        chart
            .draw_series(LineSeries::new(
                vec![(x0.max(1e-3), p.1), (x1.max(2.0), p.1)],
                c.mix(0.4).stroke_width(1),
            ))
            .map_err(e)?
            .label(format!("{} ({:.3})", p.2, p.1))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
    }
    for (l, &x) in r.levels.iter().zip(&xs) {
        let k = l.list.len().max(1);
        for (ci, c) in l.list.iter().enumerate() {
            let color = class_color(c.class);
            // Spread the dots of a level a little in x so that the clusters show.
            let jitter = 1.0 + 0.25 * (ci as f64 / k as f64 - 0.5);
            chart
                .draw_series(
                    c.features
                        .iter()
                        .map(|&i| Circle::new((x * jitter, l.dims[i]), 2, color.filled())),
                )
                .map_err(e)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight, 13)
}

fn chart(dir: &Path, r: &GeometryResult) -> Result<()> {
    draw_chart!(dir, "geometry", (820, 520), geometry_chart(r: GeometryResult))
}
