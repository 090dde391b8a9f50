//! The files of a training run: its folder prepared (and a previous run's files cleared
//! with --overwrite), checkpoints written only while the parameters are finite, the
//! SAELens export with sparsity and plots, and the notes an error adds about what is kept.

use std::path::Path;

use serde_json::json;

use crate::report::jsonl::{self, Record};
use crate::report::plots::{self, Series};
use crate::sae::TrainConfig;
use crate::sae::checkpoint::{self, Checkpoint, ShardPrint};
use crate::sae::engine::TrainState;
use crate::sae::export::{CFG_FILE, SaeModel};
use crate::{Error, Result};

/// Is `dir` already holding a run?
pub fn holds_run(dir: &Path) -> bool {
    dir.join(CFG_FILE).exists()
        || checkpoint::path(dir).exists()
        || dir.join("config.json").exists()
}

/// What the user can do next, given the checkpoint on disk (its step, if any).
pub(super) fn checkpoint_note(cfg: &TrainConfig, last: Option<u64>) -> String {
    match last {
        Some(s) => format!(
            "the last checkpoint (step {s}) in {} is intact; continue with: saeforge train --resume {}",
            cfg.out.join(checkpoint::CHECKPOINT_DIR).display(),
            cfg.out.display()
        ),
        None => "no checkpoint had been written yet".to_string(),
    }
}

/// Files a run writes into its folder (besides checkpoint/ and plots/).
const RUN_FILES: [&str; 5] = [
    CFG_FILE,
    crate::sae::export::WEIGHTS_FILE,
    crate::sae::export::SPARSITY_FILE,
    "training.jsonl",
    "config.json",
];
const PLOT_NAMES: [&str; 5] = [
    "loss",
    "l0",
    "explained_variance",
    "dead_fraction",
    "feature_density",
];

/// Create the output folder and clear what a killed process left (temporary files); with
/// --overwrite, remove the previous run's files (only the ones saeforge writes) so that a
/// new run stopped early never sits beside a stale dictionary. Failing here is a bad --out.
pub fn prepare_out(cfg: &TrainConfig, overwrite: bool) -> Result<()> {
    let out = &cfg.out;
    let bad = |e: std::io::Error| {
        Error::input(format!(
            "--out {}: cannot write the output folder ({e})",
            out.display()
        ))
    };
    std::fs::create_dir_all(out).map_err(bad)?;
    let ck = out.join(checkpoint::CHECKPOINT_DIR);
    let plots = out.join("plots");
    for dir in [out, &ck, &plots] {
        let n = crate::io::remove_stale_temps(dir);
        if n > 0 {
            tracing::info!("removed {n} temporary file(s) left in {}", dir.display());
        }
    }
    if overwrite {
        for f in RUN_FILES {
            let p = out.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(bad)?;
            }
        }
        let state = checkpoint::path(out);
        if state.exists() {
            std::fs::remove_file(&state).map_err(bad)?;
        }
        let _ = std::fs::remove_dir(&ck);
        for name in PLOT_NAMES {
            for ext in ["png", "svg"] {
                let _ = std::fs::remove_file(plots.join(format!("{name}.{ext}")));
            }
        }
        let _ = std::fs::remove_dir(&plots);
    }
    crate::io::write_json(&out.join("config.json"), cfg).map_err(|e| match e {
        Error::Io { source, .. } => bad(source),
        e => e,
    })
}

/// Where a diverged run stands and what to try: a lower learning rate from the last good
/// checkpoint, or from the start when there is none.
pub(super) fn diverged_note(cfg: &TrainConfig, last: Option<u64>) -> String {
    let lower = format!("{:.0e}", cfg.lr / 10.0);
    match last {
        Some(s) => format!(
            "The last good checkpoint (step {s}) in {} is kept. Lower the learning rate (now {:e}) or check the data, e.g.: saeforge train --resume {} --lr {lower}",
            cfg.out.join(checkpoint::CHECKPOINT_DIR).display(),
            cfg.lr,
            cfg.out.display()
        ),
        None => format!(
            "It diverged before its first checkpoint. Lower the learning rate (now {:e}) or check the data, and start again with --lr {lower} --overwrite",
            cfg.lr
        ),
    }
}

/// Write a checkpoint unless the parameters are no longer finite (then the one on disk, at
/// step `last`, stays and the run stops as diverged). A failed write (disk full) leaves the
/// previous checkpoint in place too.
pub(super) fn write_checkpoint(
    st: &TrainState,
    cfg: &TrainConfig,
    batches: u64,
    scale: f32,
    last: Option<u64>,
    data: &[ShardPrint],
) -> Result<()> {
    if !st.params.all_finite() {
        return Err(Error::Diverged(format!(
            "training diverged: parameters became non-finite by step {}; stopped. {}",
            st.step,
            diverged_note(cfg, last),
        )));
    }
    let step = st.step;
    Checkpoint::save(&cfg.out, st, batches, scale, cfg, data).map_err(|e| {
        e.with_hint(format!(
            "could not write the checkpoint at step {step}; {}",
            checkpoint_note(cfg, last)
        ))
    })
}

/// log10 firing frequency per latent (SAELens sparsity.safetensors), -10 for never.
pub fn log10_sparsity(fire_total: &[u32], tokens: u64) -> Vec<f32> {
    fire_total
        .iter()
        .map(|&c| ((c as f64 / tokens.max(1) as f64) + 1e-10).log10() as f32)
        .collect()
}

/// Export the dictionary, sparsity and plots into cfg.out.
pub fn export(cfg: &TrainConfig, st: &TrainState, scale: f32) -> Result<()> {
    let model = SaeModel::from_training(&st.params, cfg, scale, st.threshold);
    let tokens = st.step * cfg.batch as u64;
    let sparsity = log10_sparsity(&st.fire_total, tokens);
    let saeforge = json!({
        "train": cfg,
        "activation_scale": scale,
        "steps": st.step,
        "tokens": tokens,
        "trained_arch": cfg.arch,
    });
    model.save(&cfg.out, Some(&sparsity), saeforge)?;
    plot_run(&cfg.out, &sparsity)
}

/// plots/: loss, L0, explained variance, dead fraction over tokens; feature density.
pub fn plot_run(out: &Path, log10_sparsity: &[f32]) -> Result<()> {
    let dir = out.join("plots");
    let recs = jsonl::read(&out.join("training.jsonl"))?;
    let pts = |f: &dyn Fn(&Record) -> f64| -> Vec<(f64, f64)> {
        recs.iter().map(|r| (r.tokens as f64, f(r))).collect()
    };
    let one = |name: &str, p: Vec<(f64, f64)>| {
        vec![Series {
            name: name.into(),
            points: p,
        }]
    };
    let mut loss = one("train loss", pts(&|r| r.loss));
    loss.push(Series {
        name: "train mse".into(),
        points: pts(&|r| r.mse),
    });
    plots::line_plot(&dir, "loss", "Loss", "tokens", "loss", &loss, true)?;
    plots::line_plot(
        &dir,
        "l0",
        "L0 (active latents per row)",
        "tokens",
        "L0",
        &one("L0", pts(&|r| r.l0)),
        false,
    )?;
    let mut ev = one("train", pts(&|r| r.explained_variance));
    let evals: Vec<(f64, f64)> = recs
        .iter()
        .filter_map(|r| r.eval_explained_variance.map(|v| (r.tokens as f64, v)))
        .collect();
    if !evals.is_empty() {
        ev.push(Series {
            name: "held-out".into(),
            points: evals,
        });
    }
    plots::line_plot(
        &dir,
        "explained_variance",
        "Explained variance",
        "tokens",
        "explained variance",
        &ev,
        false,
    )?;
    plots::line_plot(
        &dir,
        "dead_fraction",
        "Dead latents",
        "tokens",
        "fraction dead",
        &one("dead", pts(&|r| r.dead_fraction)),
        false,
    )?;
    let vals: Vec<f64> = log10_sparsity.iter().map(|&v| v as f64).collect();
    let never = vals.iter().filter(|&&v| v <= -9.99).count();
    let shown: Vec<f64> = vals.iter().cloned().filter(|&v| v > -9.99).collect();
    plots::histogram(
        &dir,
        "feature_density",
        "Feature density",
        "log10 firing frequency",
        &shown,
        50,
        &format!("{never} latents never fired (not shown)"),
    )
}
