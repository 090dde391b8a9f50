//! `toy --experiment intervene`: the seed note's knowledge manipulation, end to end inside a
//! model whose features we know. The ReLU output model x' = ReLU(W^T h + b), h = W x, is
//! trained in superposition (n features in m < n dimensions); its hidden activations h on
//! fresh data are written as an activation shard (DIR/acts/hidden.safetensors, tensor
//! `activations` (rows, m), saeforge's format); a TopK SAE is trained on them through the
//! library's train entry (`crate::sae::train::run`, as `saeforge train` does); each feature
//! i is matched to the SAE latent whose decoder row has the largest cosine with W_i; then
//! the toy model's forward pass runs with that latent edited in the hidden layer through
//! `steer`'s code path (`crate::eval::steer::steer_rows`: h' = h + (z' - z) W_dec, the
//! SAE's error term kept) and x' = ReLU(W^T h' + b):
//! - ablate (z'_j = 0), on rows where feature i is on: x'_i should vanish, the other
//!   outputs barely move;
//! - clamp (z'_j = V, V the largest z_j seen on the test rows), on rows where feature i is
//!   off: x'_i should turn on everywhere ("Golden Gate").

use std::path::{Path, PathBuf};

use plotters::style::RGBColor;

use crate::eval::steer::{Edit, EditOp, SteerReport, steer_rows};
use crate::gpu::{DeviceChoice, Engine};
use crate::io::OutTensor;
use crate::sae::export::SaeModel;
use crate::sae::{Arch, TrainArgs};
use crate::toy::Log;
use crate::toy::train::{Init, TrainOptions};
use crate::{Error, Result, reference};

use super::Schedule;
use super::plots_neurons::{LineChart, Series};

#[derive(Clone, Debug, serde::Serialize)]
pub struct InterveneConfig {
    pub n: usize,
    pub m: usize,
    pub density: f32,
    /// Steps, batch, AdamW and seed (flat in results.json).
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Rows of hidden activations captured for the SAE.
    pub capture_rows: usize,
    /// Rows the interventions are measured on.
    pub test_rows: usize,
    pub sae_latents: usize,
    pub sae_k: usize,
    pub sae_steps: u64,
    pub sae_batch: usize,
    pub sae_lr: f32,
    pub sae_device: DeviceChoice,
    #[serde(skip)]
    pub sae_adapter: Option<String>,
}

impl InterveneConfig {
    /// n = 20 features in m = 5 dimensions at density 0.03, equal importance; 65,536
    /// captured rows; a TopK SAE with 40 latents, k = 2, 3,000 steps of 1,024 rows.
    pub fn default_size() -> Self {
        InterveneConfig {
            n: 20,
            m: 5,
            density: 0.03,
            schedule: Schedule::notebook(),
            capture_rows: 65_536,
            test_rows: 16_384,
            sae_latents: 40,
            sae_k: 2,
            sae_steps: 3_000,
            sae_batch: 1024,
            sae_lr: 4e-3,
            sae_device: DeviceChoice::Auto,
            sae_adapter: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Intervention {
    pub feature: usize,
    pub latent: usize,
    /// cos(W_dec[latent], W_i).
    pub cos: f64,
    /// "ablate" or "clamp".
    pub kind: &'static str,
    /// Clamp: the value z'_j = V; ablate: 0.
    pub value: f32,
    /// Rows measured: feature i on (ablate) or off (clamp).
    pub rows: usize,
    /// Mean x'_i over those rows, before and after the edit.
    pub target_output_before: f64,
    pub target_output_after: f64,
    /// Fraction of those rows with x'_i > 0.25 after the edit.
    pub target_on_after: f64,
    /// Mean over those rows of mean_{j != i} |x'_j after - x'_j before|.
    pub other_outputs_change: f64,
    /// Mean over those rows of mean_{j != i} x'_j before (the scale of the change).
    pub other_outputs_mean: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct InterveneResult {
    pub experiment: &'static str,
    pub config: InterveneConfig,
    pub engine: String,
    pub toy_train_seconds: f64,
    pub toy_loss: f64,
    /// m / ||W||_F^2 of the toy model.
    pub dstar: f64,
    pub sae: String,
    pub sae_seconds: f64,
    pub interventions: Vec<Intervention>,
}

/// h = W x for rows of x (rows, n) and w (n, m).
fn hidden(x: &[f32], w: &[f32], n: usize, m: usize) -> Vec<f32> {
    let rows = x.len() / n;
    let mut h = vec![0.0f32; rows * m];
    for r in 0..rows {
        for i in 0..n {
            let xi = x[r * n + i];
            if xi != 0.0 {
                for k in 0..m {
                    h[r * m + k] += w[i * m + k] * xi;
                }
            }
        }
    }
    h
}

/// x' = ReLU(W h + b) per row.
fn output(h: &[f32], w: &[f32], b: &[f32], n: usize, m: usize) -> Vec<f32> {
    let rows = h.len() / m;
    let mut y = vec![0.0f32; rows * n];
    for r in 0..rows {
        for i in 0..n {
            let mut o = b[i];
            for k in 0..m {
                o += w[i * m + k] * h[r * m + k];
            }
            y[r * n + i] = o.max(0.0);
        }
    }
    y
}

/// `rows` fresh rows of the toy data for instance 0 at `density`, from data steps
/// `first..` (batches of 1,024 rows).
fn fresh(n: usize, density: f32, seed: u64, first: u32, rows: usize) -> Vec<f32> {
    let chunk = 1024;
    let mut x = Vec::with_capacity(rows * n);
    let mut b = vec![0.0f32; chunk * n];
    let mut step = first;
    let dens = vec![density; n];
    while x.len() < rows * n {
        let s = reference::toy::ToyShape {
            instances: 1,
            rows: chunk,
            n,
            m: 1,
        };
        let sets = reference::toy::FeatureSets::default();
        reference::toy::toy_data(s, seed, step, sets, &dens, &mut b);
        let take = (rows * n - x.len()).min(chunk * n);
        x.extend_from_slice(&b[..take]);
        step += 1;
    }
    x
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum();
    let na: f64 = a.iter().map(|&u| (u as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&u| (u as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

pub fn run(
    engine: &Engine,
    cfg: &InterveneConfig,
    dir: &Path,
    log_every: u64,
    log: Log<'_>,
) -> Result<InterveneResult> {
    let (n, m) = (cfg.n, cfg.m);
    // 1. The toy model, one instance.
    let recipe = cfg.schedule.recipe(Init::Xavier);
    let tc = recipe.train_config(n, m, vec![cfg.density], &vec![1.0; n], log_every);
    let toy = recipe.train(engine, &tc, &TrainOptions::default(), log)?;
    let (w, b) = (&toy.params.w, &toy.params.b);
    let frob: f64 = w.iter().map(|&v| (v as f64).powi(2)).sum();

    // 2. Its hidden activations on fresh data, as an activation shard.
    let data_seed = cfg.schedule.seed.wrapping_add(1);
    let x = fresh(n, cfg.density, data_seed, 0, cfg.capture_rows);
    let h = hidden(&x, w, n, m);
    let acts = dir.join("acts");
    crate::io::create_dir(&acts)?;
    crate::io::write_safetensors(
        &acts.join("hidden.safetensors"),
        &[OutTensor::f32("activations", &[cfg.capture_rows, m], &h)],
        None,
    )?;

    // 3. An SAE on them, through the library's train entry.
    let sae_dir: PathBuf = dir.join("sae");
    let args = TrainArgs {
        data: Some(vec![acts.clone()]),
        tensor: Some("activations".into()),
        out: Some(sae_dir.clone()),
        arch: Some(Arch::Topk),
        d_sae: Some(cfg.sae_latents),
        k: Some(cfg.sae_k),
        batch: Some(cfg.sae_batch),
        steps: Some(cfg.sae_steps),
        lr: Some(cfg.sae_lr),
        seed: Some(cfg.schedule.seed),
        device: Some(cfg.sae_device),
        adapter: cfg.sae_adapter.clone(),
        eval_every: Some(0),
        checkpoint_every: Some(0),
        log_every: Some((cfg.sae_steps / 5).max(1)),
        overwrite: Some(true),
        ..Default::default()
    };
    let outcome = crate::sae::train::run(&args)?;
    let sae = SaeModel::load(&sae_dir)?;
    if sae.d != m {
        return Err(Error::Internal(format!(
            "intervene: the SAE has d = {}, the toy model m = {m}",
            sae.d
        )));
    }

    // 4. Interventions on fresh test rows.
    let xt = fresh(n, cfg.density, data_seed, 1 << 20, cfg.test_rows);
    let ht = hidden(&xt, w, n, m);
    let codes = sae.encode(&ht, cfg.test_rows);
    let y0 = output(&ht, w, b, n, m);
    let mut interventions = Vec::new();
    for i in 0..n {
        let wi = &w[i * m..(i + 1) * m];
        let (latent, c) = (0..sae.n)
            .map(|j| (j, cos(&sae.w_dec[j * m..(j + 1) * m], wi)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        let zmax = (0..cfg.test_rows)
            .map(|r| crate::eval::steer::code_of(&codes, r, latent as u32))
            .fold(0.0f32, f32::max);
        for (kind, op) in [("ablate", EditOp::Ablate), ("clamp", EditOp::Set(zmax))] {
            let edit = Edit { latent, op };
            let mut h2 = ht.clone();
            let mut report = SteerReport::new(&[edit]);
            steer_rows(&sae, &[edit], &mut h2, &codes, &mut report);
            let y1 = output(&h2, w, b, n, m);
            let on = |r: usize| xt[r * n + i] != 0.0;
            let rows: Vec<usize> = (0..cfg.test_rows)
                .filter(|&r| if kind == "ablate" { on(r) } else { !on(r) })
                .collect();
            let k = rows.len().max(1) as f64;
            let mean = |y: &[f32]| rows.iter().map(|&r| y[r * n + i] as f64).sum::<f64>() / k;
            let others = |f: &dyn Fn(usize, usize) -> f64| {
                rows.iter()
                    .map(|&r| {
                        (0..n).filter(|&j| j != i).map(|j| f(r, j)).sum::<f64>()
                            / (n - 1).max(1) as f64
                    })
                    .sum::<f64>()
                    / k
            };
            interventions.push(Intervention {
                feature: i,
                latent,
                cos: c,
                kind,
                value: if kind == "ablate" { 0.0 } else { zmax },
                rows: rows.len(),
                target_output_before: mean(&y0),
                target_output_after: mean(&y1),
                target_on_after: rows.iter().filter(|&&r| y1[r * n + i] > 0.25).count() as f64 / k,
                other_outputs_change: others(&|r, j| (y1[r * n + j] - y0[r * n + j]).abs() as f64),
                other_outputs_mean: others(&|r, j| y0[r * n + j] as f64),
            });
        }
    }
    Ok(InterveneResult {
        experiment: "intervene",
        config: cfg.clone(),
        engine: engine.name(),
        toy_train_seconds: toy.seconds,
        toy_loss: toy.final_loss[0],
        dstar: m as f64 / frob.max(1e-12),
        sae: sae_dir.display().to_string(),
        sae_seconds: outcome.steps as f64 * cfg.sae_batch as f64 / outcome.tokens_per_s.max(1e-9),
        interventions,
    })
}

/// Means over features of one kind: (cos, before, after, on after, others' change).
pub fn summary(r: &InterveneResult, kind: &str) -> (f64, f64, f64, f64, f64) {
    let v: Vec<&Intervention> = r.interventions.iter().filter(|i| i.kind == kind).collect();
    let k = v.len().max(1) as f64;
    let avg = |f: &dyn Fn(&Intervention) -> f64| v.iter().map(|i| f(i)).sum::<f64>() / k;
    (
        avg(&|i| i.cos),
        avg(&|i| i.target_output_before),
        avg(&|i| i.target_output_after),
        avg(&|i| i.target_on_after),
        avg(&|i| i.other_outputs_change),
    )
}

pub fn write(dir: &Path, r: &InterveneResult) -> Result<Vec<String>> {
    crate::toy::write_results(dir, r)?;
    let pick = |kind: &str, f: &dyn Fn(&Intervention) -> f64| -> Vec<(f64, f64)> {
        r.interventions
            .iter()
            .filter(|i| i.kind == kind)
            .map(|i| (i.feature as f64, f(i)))
            .collect()
    };
    let grey = RGBColor(120, 120, 120);
    let red = RGBColor(214, 39, 40);
    let blue = RGBColor(31, 119, 180);
    let chart = |title: &str, kind: &str| LineChart {
        title: title.into(),
        x_desc: "feature i".into(),
        y_desc: "mean output".into(),
        log_x: false,
        series: vec![
            Series {
                label: "x'_i before".into(),
                points: pick(kind, &|i| i.target_output_before),
                color: grey,
            },
            Series {
                label: "x'_i after".into(),
                points: pick(kind, &|i| i.target_output_after),
                color: red,
            },
            Series {
                label: "mean |change| of x'_j, j != i".into(),
                points: pick(kind, &|i| i.other_outputs_change),
                color: blue,
            },
        ],
    };
    let charts = [
        chart("ablate feature i's latent (rows with i on)", "ablate"),
        chart("clamp it (rows with i off)", "clamp"),
    ];
    super::plots_neurons::lines(dir, "intervene", &charts)?;
    Ok(vec![
        "results.json".into(),
        "intervene.{png,svg}".into(),
        "acts/hidden.safetensors".into(),
        "sae/".into(),
    ])
}

pub fn table(r: &InterveneResult) -> String {
    let mut s = format!(
        "toy model n {} -> m {}, 1-S {}: D* {:.3}, loss {:.5}\n",
        r.config.n, r.config.m, r.config.density, r.dstar, r.toy_loss
    );
    s += &format!(
        "{:>7} {:>8} {:>11} {:>10} {:>10} {:>14}\n",
        "edit", "mean cos", "x'_i before", "x'_i after", "on after", "others |diff|"
    );
    for kind in ["ablate", "clamp"] {
        let (c, b, a, on, o) = summary(r, kind);
        s += &format!("{kind:>7} {c:>8.3} {b:>11.4} {a:>10.4} {on:>10.3} {o:>14.5}\n");
    }
    s
}
