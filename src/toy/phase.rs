//! The n = 2 -> m = 1 phase diagram (Elhage et al. 2022, "Superposition as a Phase
//! Change"): feature 1 has importance 1, feature 2 ("the extra feature") importance r; both
//! have density 1 - S. For each (r, 1 - S) on log grids a few restarts are trained at once
//! (every cell and restart is one instance of the same launch), the restart with the lowest
//! loss on fresh batches is kept, and the extra feature is classified:
//! - not learned: ||W_2|| <= 0.5;
//! - dedicated dimension: ||W_2|| > 0.5 and feature 1 not learned (||W_1|| <= 0.5);
//! - superposition: both learned, sharing the one dimension (antipodally).

use crate::Result;
use crate::gpu::Engine;

use super::geometry::REPRESENTED;
use super::train::{Log, TrainConfig, TrainOptions};
use super::{Recipe, Run, log_space};

#[derive(Clone, Debug, serde::Serialize)]
pub struct PhaseConfig {
    /// Relative importance r of feature 2, log grid from `importance_lo` to `importance_hi`.
    pub importance_lo: f64,
    pub importance_hi: f64,
    pub importance_points: usize,
    /// Density 1 - S, log grid from `density_lo` to `density_hi`.
    pub density_lo: f64,
    pub density_hi: f64,
    pub density_points: usize,
    /// Independent initialisations per cell; the lowest final loss wins.
    pub restarts: usize,
    pub relu: bool,
    /// Init, steps, batch, AdamW, seed, final-loss batches (flat in results.json).
    #[serde(flatten)]
    pub recipe: Recipe,
}

impl Default for PhaseConfig {
    fn default() -> Self {
        PhaseConfig {
            importance_lo: 0.1,
            importance_hi: 10.0,
            importance_points: 15,
            density_lo: 0.01,
            density_hi: 1.0,
            density_points: 15,
            restarts: 4,
            relu: true,
            recipe: Recipe {
                eval_batches: 32,
                ..Recipe::notebook()
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    NotLearned,
    Dedicated,
    Superposition,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::NotLearned => "not learned",
            Phase::Dedicated => "dedicated dimension",
            Phase::Superposition => "superposition",
        }
    }

    /// How the extra feature (index 1) is held, from the norms of both feature directions.
    pub fn classify(norm1: f64, norm2: f64) -> Phase {
        if norm2 <= REPRESENTED {
            Phase::NotLearned
        } else if norm1 <= REPRESENTED {
            Phase::Dedicated
        } else {
            Phase::Superposition
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Cell {
    /// Importance r of feature 2 (feature 1 has 1).
    pub importance: f32,
    pub density: f32,
    pub phase: Phase,
    /// The winning restart and its loss on fresh batches.
    pub restart: usize,
    pub loss: f64,
    /// The winner's W (one weight per feature, m = 1) and b.
    pub w: [f32; 2],
    pub b: [f32; 2],
    /// Phase of every restart, in order (disagreement marks a cell near a boundary).
    pub restart_phases: Vec<Phase>,
    pub restart_losses: Vec<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PhaseResult {
    pub model: &'static str,
    /// The configuration, the engine and the training's wall time (flat in results.json).
    #[serde(flatten)]
    pub run: Run<PhaseConfig>,
    /// Column values (importance r, ascending) and row values (density, descending).
    pub importance_axis: Vec<f32>,
    pub density_axis: Vec<f32>,
    /// Row-major: cells[d * importance_points + j] has density_axis[d], importance_axis[j].
    pub cells: Vec<Cell>,
}

/// Train every cell and restart at once and classify each cell.
pub fn run_phase(
    engine: &Engine,
    cfg: &PhaseConfig,
    log_every: u64,
    log: Log<'_>,
) -> Result<PhaseResult> {
    let mut imps = log_space(cfg.importance_lo, cfg.importance_hi, cfg.importance_points);
    imps.reverse();
    let dens = log_space(cfg.density_lo, cfg.density_hi, cfg.density_points);
    let k = cfg.restarts.max(1);
    let mut density = Vec::new();
    let mut importance = Vec::new();
    for &d in &dens {
        for &r in &imps {
            for _ in 0..k {
                density.push(d);
                importance.extend([1.0, r]);
            }
        }
    }
    let tc = TrainConfig {
        relu: cfg.relu,
        ..cfg
            .recipe
            .train_config_per_instance(2, 1, density, importance, log_every)
    };
    let trained = cfg
        .recipe
        .train(engine, &tc, &TrainOptions::default(), log)?;
    let (w, b) = (&trained.params.w, &trained.params.b);
    let mut cells = Vec::new();
    for (di, &d) in dens.iter().enumerate() {
        for (ii, &r) in imps.iter().enumerate() {
            let first = (di * imps.len() + ii) * k;
            let phases: Vec<Phase> = (first..first + k)
                .map(|e| Phase::classify(w[2 * e].abs() as f64, w[2 * e + 1].abs() as f64))
                .collect();
            let losses = trained.final_loss[first..first + k].to_vec();
            let best = (0..k)
                .min_by(|&a, &c| losses[a].total_cmp(&losses[c]))
                .expect("at least one restart");
            let e = first + best;
            cells.push(Cell {
                importance: r,
                density: d,
                phase: phases[best],
                restart: best,
                loss: losses[best],
                w: [w[2 * e], w[2 * e + 1]],
                b: [b[2 * e], b[2 * e + 1]],
                restart_phases: phases,
                restart_losses: losses,
            });
        }
    }
    Ok(PhaseResult {
        model: if cfg.relu { "relu" } else { "linear" },
        run: Run::new(cfg, engine, trained.seconds),
        importance_axis: imps,
        density_axis: dens,
        cells,
    })
}
