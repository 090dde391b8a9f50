//! `--experiment perturb` (the paper's "non-uniform superposition"): n = 5 features in
//! m = 2 dimensions, importance 1, four features at density 0.05 (where the uniform model
//! is a regular pentagon) and the fifth's density swept from 0.01 to 1, one instance per
//! value. The pentagon deforms as the fifth feature gets denser and then snaps to another
//! configuration; as it gets sparser it shrinks away.

use std::f64::consts::PI;
use std::path::Path;

use crate::Result;
use crate::gpu::Engine;
use crate::toy::args::ToyArgs;
use crate::toy::geometry::REPRESENTED;
use crate::toy::train::TrainOptions;

use super::{Recipe, Run, check_flags, density_range, one_density, start, wrote};

pub const N: usize = 5;
pub const M: usize = 2;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    /// Density of features 0..4.
    pub base_density: f32,
    /// Densities of feature 4.
    pub perturbed: Vec<f32>,
    /// Instances per density; the lowest final loss is reported (the others are local
    /// minima: a square with one feature dropped, mostly).
    pub restarts: usize,
    pub recipe: Recipe,
}

impl Config {
    pub fn from_args(a: &ToyArgs) -> Result<Self> {
        check_flags(a, "perturb", &["--density", "--density-range"])?;
        Ok(Config {
            restarts: crate::toy::args::restarts(a)?,
            base_density: one_density(a, 0.05)?,
            perturbed: density_range(a, (0.01, 1.0, 16))?,
            recipe: Recipe::from_args(a, 10_000, 1024),
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Instance {
    pub perturbed_density: f32,
    /// ||W_i||.
    pub norms: Vec<f64>,
    /// atan2(W_i1, W_i0) in (-pi, pi].
    pub angles: Vec<f64>,
    /// See [`shape`].
    pub shape: String,
    pub final_loss: f64,
    /// Every restart's final loss (this instance is the lowest).
    pub restart_losses: Vec<f64>,
    /// The feature directions W_i, (5, 2).
    pub w: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PerturbResult {
    #[serde(flatten)]
    pub run: Run<Config>,
    /// In ascending perturbed density.
    pub instances: Vec<Instance>,
    /// The perturbed density from which every denser instance is no longer a (deformed)
    /// pentagon of all five features; None if the sweep ends on a pentagon.
    pub snap_density: Option<f32>,
    /// The perturbed density up to which every sparser instance is no longer a pentagon
    /// (the fifth feature dropped); None if the sweep starts on a pentagon.
    pub low_snap_density: Option<f32>,
}

/// The configuration of the represented features (||W_i|| > 0.5) in the plane, from the
/// angular gaps between them in circular order: "pentagon" (five, every gap within 18
/// degrees of 72), "deformed pentagon" (five, otherwise), "two digons" (four as two antipodal
/// pairs: two digons at right angles), "triangle", "digon" (two antipodal), "orthogonal
/// pair", else "K features".
pub fn shape(norms: &[f64], angles: &[f64]) -> String {
    let mut a: Vec<f64> = (0..norms.len())
        .filter(|&i| norms[i] > REPRESENTED)
        .map(|i| angles[i])
        .collect();
    a.sort_by(f64::total_cmp);
    let k = a.len();
    if k == 0 {
        return "none".into();
    }
    let gaps: Vec<f64> = (0..k)
        .map(|i| {
            let next = if i + 1 < k { a[i + 1] } else { a[0] + 2.0 * PI };
            (next - a[i]).to_degrees()
        })
        .collect();
    let near = |target: f64, tol: f64| gaps.iter().all(|g| (g - target).abs() <= tol);
    match k {
        5 if near(72.0, 18.0) => "pentagon".into(),
        5 => "deformed pentagon".into(),
        4 if near(90.0, 20.0) => "two digons".into(),
        3 if near(120.0, 20.0) => "triangle".into(),
        2 if near(180.0, 20.0) => "digon".into(),
        2 if gaps.iter().any(|g| (g - 90.0).abs() <= 20.0) => "orthogonal pair".into(),
        _ => format!("{k} features"),
    }
}

fn is_pentagon(s: &str) -> bool {
    s.ends_with("pentagon")
}

pub fn run(engine: &Engine, cfg: &Config, log: crate::toy::Log<'_>) -> Result<PerturbResult> {
    let mut perturbed = cfg.perturbed.clone();
    perturbed.sort_by(f32::total_cmp);
    let r = cfg.restarts;
    let tc = cfg.recipe.train_config(
        N,
        M,
        perturbed.iter().flat_map(|&p| vec![p; r]).collect(),
        &[1.0; N],
        (cfg.recipe.steps / 10).max(1),
    );
    let feature_density: Vec<f32> = perturbed
        .iter()
        .flat_map(|&p| {
            let mut d = [cfg.base_density; N];
            d[N - 1] = p;
            vec![d; r].concat()
        })
        .collect();
    let opts = TrainOptions {
        feature_density: Some(feature_density),
        ..Default::default()
    };
    let trained = cfg.recipe.train(engine, &tc, &opts, log)?;
    let instances: Vec<Instance> = perturbed
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            let losses = &trained.final_loss[k * r..(k + 1) * r];
            let e = k * r
                + (0..r)
                    .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
                    .unwrap_or(0);
            let w = &trained.params.w[e * N * M..(e + 1) * N * M];
            let norms: Vec<f64> = w
                .chunks(M)
                .map(|r| (r[0] as f64).hypot(r[1] as f64))
                .collect();
            let angles: Vec<f64> = w
                .chunks(M)
                .map(|r| (r[1] as f64).atan2(r[0] as f64))
                .collect();
            Instance {
                perturbed_density: p,
                shape: shape(&norms, &angles),
                norms,
                angles,
                final_loss: trained.final_loss[e],
                restart_losses: losses.to_vec(),
                w: w.chunks(M).map(|r| r.to_vec()).collect(),
                bias: trained.params.b[e * N..(e + 1) * N].to_vec(),
            }
        })
        .collect();
    let (snap_density, low_snap_density) = snaps(&instances, cfg.base_density);
    Ok(PerturbResult {
        run: Run::new(cfg, engine, trained.seconds),
        instances,
        snap_density,
        low_snap_density,
    })
}

/// Where the pentagon gives way: on the high side, the first density of the last run of
/// non-pentagons reaching the top of the sweep (a lone non-pentagon between pentagons is a
/// local minimum all restarts fell into, not the snap); on the low side, the last density
/// of the run of non-pentagons reaching the bottom. Only densities on that side of the
/// base density count; None where the sweep ends on a pentagon.
fn snaps(inst: &[Instance], base: f32) -> (Option<f32>, Option<f32>) {
    let pent = |i: &Instance| is_pentagon(&i.shape);
    let high = inst
        .iter()
        .rposition(pent)
        .map_or(inst.first(), |k| inst.get(k + 1))
        .map(|i| i.perturbed_density)
        .filter(|&d| d > base);
    let low = inst
        .iter()
        .position(pent)
        .map_or(inst.last(), |k| k.checked_sub(1).map(|k| &inst[k]))
        .map(|i| i.perturbed_density)
        .filter(|&d| d < base);
    (high, low)
}

pub fn write(dir: &Path, r: &PerturbResult) -> Result<()> {
    crate::toy::write_results(dir, r)?;
    let panels: Vec<super::plots_a::Panel> = r
        .instances
        .iter()
        .map(|i| super::plots_a::Panel {
            label: format!("p₅ = {:.3}", i.perturbed_density),
            note: i.shape.clone(),
            vectors: i.w.iter().map(|v| [v[0] as f64, v[1] as f64]).collect(),
            groups: (0..N).map(|i| usize::from(i == N - 1)).collect(),
        })
        .collect();
    super::plots_a::directions(
        dir,
        "perturb",
        &format!(
            "n = 5 → m = 2: four features at density {}, the fifth (red) at p₅",
            r.run.config.base_density
        ),
        &panels,
    )
}

pub fn main(a: &ToyArgs) -> Result<()> {
    let cfg = Config::from_args(a)?;
    let e = cfg.perturbed.len().saturating_mul(cfg.restarts);
    let more = "the densities x restarts (--density-range, --restarts)";
    let (engine, mut log) = start(a, "toy perturb", [e, N, M, cfg.recipe.batch], more)?;
    eprintln!(
        "perturb: n 5 -> m 2, base density {}, {} perturbed densities x {} restarts, {} steps, batch {}",
        cfg.base_density,
        cfg.perturbed.len(),
        cfg.restarts,
        cfg.recipe.steps,
        cfg.recipe.batch
    );
    let r = run(&engine, &cfg, &mut log)?;
    write(&a.out, &r)?;
    println!("{:>8}  {:<36} {:>8}  shape", "p5", "norms ||W_i||", "loss");
    for i in &r.instances {
        let norms: Vec<String> = i.norms.iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "{:>8.4}  {:<36} {:>8.5}  {}",
            i.perturbed_density,
            norms.join(" "),
            i.final_loss,
            i.shape
        );
    }
    let show = |d: Option<f32>| d.map_or("none".to_string(), |v| format!("{v:.4}"));
    println!(
        "snap density (above the base): {}; below the base: {}; {}",
        show(r.snap_density),
        show(r.low_snap_density),
        r.run.trained()
    );
    wrote(&a.out, &["results.json", "perturb.{png,svg}"]);
    Ok(())
}
