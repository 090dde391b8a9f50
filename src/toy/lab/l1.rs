//! `toy --experiment l1`: the paper's "models without superposition" (section 9, approach
//! 1: an L1 penalty on the hidden activations), read backwards from the seed note's
//! "accelerating superposition". The privileged-basis model h = ReLU(W x),
//! x' = ReLU(W^T h + b) is trained at one sparse density with loss
//! sum_i I_i (x_i - x'_i)^2 + l1 sum_k h_k, one instance per penalty; then again with a
//! top-k hidden layer (ReLU of the k largest pre-activations), one instance per k.
//!
//! Superposition is measured as features per dimension ||W+||_F^2 / m (= 1 / D*, W+ the
//! positive weights: with inputs >= 0 only those make a neuron fire, and a penalised model
//! can switch neurons off with negative weights) and as the features represented
//! (||W+[:, i]|| > 0.5). The paper: the penalty removes features
//! below an importance threshold and pushes the model out of superposition, at a cost in
//! loss.

use std::path::Path;

use plotters::style::RGBColor;

use crate::Result;
use crate::gpu::Engine;
use crate::reference::toy_mlp::{HiddenAct, MlpSpec};
use crate::toy::Log;

use super::plots_neurons::{LineChart, Series};
use super::privileged::{summarize, train_instances};
use super::{Features, Run, Schedule};

#[derive(Clone, Debug, serde::Serialize)]
pub struct L1Config {
    /// n, m, I_i and the one 1 - S of every instance (flat in results.json).
    #[serde(flatten)]
    pub features: Features<f32>,
    /// One instance per penalty.
    pub l1: Vec<f32>,
    /// One instance per k of the top-k run (empty: no top-k run).
    pub topk: Vec<u32>,
    /// Steps, batch, AdamW and seed (flat in results.json).
    #[serde(flatten)]
    pub schedule: Schedule,
}

impl L1Config {
    /// n = 20 features, m = 5 neurons, equal importance, density 0.05, eight penalties from
    /// 0 to 1, k = 1..5.
    pub fn default_size() -> Self {
        L1Config {
            features: Features {
                n: 20,
                m: 5,
                importance_decay: 1.0,
                density: 0.05,
            },
            l1: vec![0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0],
            topk: (1..=5).collect(),
            schedule: Schedule::notebook(),
        }
    }
}

/// What is measured of each instance, penalised or top-k.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measured {
    /// Reconstruction loss (without the penalty) on fresh batches.
    pub loss: f64,
    /// m / ||W+||_F^2 (W+: the positive weights).
    pub dstar: f64,
    /// ||W+||_F^2 / m.
    pub features_per_dim: f64,
    pub features_represented: usize,
    pub monosemantic_neurons: usize,
    pub polysemantic_neurons: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct L1Instance {
    pub l1: f32,
    #[serde(flatten)]
    pub measured: Measured,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TopkInstance {
    pub k: u32,
    #[serde(flatten)]
    pub measured: Measured,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct L1Result {
    pub experiment: &'static str,
    /// The configuration, the engine and the training's wall time (flat in results.json).
    #[serde(flatten)]
    pub run: Run<L1Config>,
    pub instances: Vec<L1Instance>,
    pub topk: Vec<TopkInstance>,
}

fn train_all(
    engine: &Engine,
    cfg: &L1Config,
    spec: MlpSpec,
    l1: Vec<f32>,
    topk: Vec<u32>,
    log_every: u64,
    log: Log<'_>,
) -> Result<(Vec<Measured>, f64)> {
    let mc = mlp_config!(
        cfg,
        spec,
        vec![cfg.features.density; l1.len()],
        l1,
        topk,
        log_every
    );
    let mn = cfg.features.m * cfg.features.n;
    train_instances(engine, &mc, log, |_, w, loss| {
        // Only the positive weights make a neuron fire (inputs are >= 0).
        let frob: f64 = w[..mn].iter().map(|&v| (v as f64).max(0.0).powi(2)).sum();
        let s = summarize(mc.shape(), w, false);
        Measured {
            loss,
            // No neuron fires at all: no dimension is used (null in results.json).
            dstar: if frob > 1e-9 {
                cfg.features.m as f64 / frob
            } else {
                f64::INFINITY
            },
            features_per_dim: frob / cfg.features.m as f64,
            features_represented: s.features_represented,
            monosemantic_neurons: s.counts.monosemantic_neurons,
            polysemantic_neurons: s.counts.polysemantic_neurons,
        }
    })
}

pub fn run(engine: &Engine, cfg: &L1Config, log_every: u64, log: Log<'_>) -> Result<L1Result> {
    let spec = super::privileged::spec();
    let k = cfg.l1.len();
    let (a, s1) = train_all(
        engine,
        cfg,
        spec,
        cfg.l1.clone(),
        vec![cfg.features.m as u32; k],
        log_every,
        log,
    )?;
    let instances = a
        .into_iter()
        .zip(&cfg.l1)
        .map(|(measured, &l1)| L1Instance { l1, measured })
        .collect();
    let (topk, s2) = if cfg.topk.is_empty() {
        (Vec::new(), 0.0)
    } else {
        let tspec = MlpSpec {
            act_h: HiddenAct::TopK,
            ..spec
        };
        let z = vec![0.0; cfg.topk.len()];
        let (b, s2) = train_all(engine, cfg, tspec, z, cfg.topk.clone(), log_every, log)?;
        let v = b
            .into_iter()
            .zip(&cfg.topk)
            .map(|(measured, &k)| TopkInstance { k, measured })
            .collect();
        (v, s2)
    };
    Ok(L1Result {
        experiment: "l1",
        run: Run::new(cfg, engine, s1 + s2),
        instances,
        topk,
    })
}

pub fn write(dir: &Path, r: &L1Result) -> Result<Vec<String>> {
    crate::toy::write_results(dir, r)?;
    // The log axis needs positive x: l1 = 0 is drawn at a tenth of the smallest penalty.
    let floor = r
        .instances
        .iter()
        .map(|i| i.l1 as f64)
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() {
        floor / 10.0
    } else {
        1e-3
    };
    let x = |v: f32| (v as f64).max(floor);
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    let green = RGBColor(44, 160, 44);
    let mut charts = vec![
        LineChart {
            title: format!(
                "L1 on h: n = {}, m = {}, 1-S = {}",
                r.run.config.features.n, r.run.config.features.m, r.run.config.features.density
            ),
            x_desc: "L1 penalty (0 drawn at the left edge)".into(),
            y_desc: "features".into(),
            log_x: true,
            series: vec![
                Series {
                    label: "features / dimension".into(),
                    points: r
                        .instances
                        .iter()
                        .map(|i| (x(i.l1), i.measured.features_per_dim))
                        .collect(),
                    color: blue,
                },
                Series {
                    label: "features represented / m".into(),
                    points: r
                        .instances
                        .iter()
                        .map(|i| {
                            let f = i.measured.features_represented;
                            (x(i.l1), f as f64 / r.run.config.features.m as f64)
                        })
                        .collect(),
                    color: green,
                },
            ],
        },
        LineChart {
            title: "loss (without the penalty)".into(),
            x_desc: "L1 penalty".into(),
            y_desc: "loss".into(),
            log_x: true,
            series: vec![Series {
                label: "loss".into(),
                points: r
                    .instances
                    .iter()
                    .map(|i| (x(i.l1), i.measured.loss))
                    .collect(),
                color: red,
            }],
        },
    ];
    if !r.topk.is_empty() {
        charts.push(LineChart {
            title: "top-k on h".into(),
            x_desc: "k".into(),
            y_desc: "features / dimension, loss x 10".into(),
            log_x: false,
            series: vec![
                Series {
                    label: "features / dimension".into(),
                    points: r
                        .topk
                        .iter()
                        .map(|i| (i.k as f64, i.measured.features_per_dim))
                        .collect(),
                    color: blue,
                },
                Series {
                    label: "loss x 10".into(),
                    points: r
                        .topk
                        .iter()
                        .map(|i| (i.k as f64, 10.0 * i.measured.loss))
                        .collect(),
                    color: red,
                },
            ],
        });
    }
    super::plots_neurons::lines(dir, "l1", &charts)?;
    Ok(vec!["results.json".into(), "l1.{png,svg}".into()])
}

pub fn table(r: &L1Result) -> String {
    let mut s = format!(
        "{:>8} {:>9} {:>8} {:>10} {:>9} {:>5} {:>5}\n",
        "l1", "loss", "D*", "feat/dim", "features", "mono", "poly"
    );
    let rows = r.instances.iter().map(|i| (i.l1.to_string(), &i.measured));
    let topk = r.topk.iter().map(|i| (format!("top-{}", i.k), &i.measured));
    for (label, m) in rows.chain(topk) {
        s += &format!(
            "{:>8} {:>9.5} {:>8.4} {:>10.3} {:>9} {:>5} {:>5}\n",
            label,
            m.loss,
            m.dstar,
            m.features_per_dim,
            m.features_represented,
            m.monosemantic_neurons,
            m.polysemantic_neurons
        );
    }
    s
}
