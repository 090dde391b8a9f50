//! `saeforge eval`: held-out metrics of an SAE folder (any SAELens layout), optionally
//! FISTA on its dictionary and on a planted one, and an out-of-distribution split; the work
//! is `crate::eval::run::run_eval`.

use std::path::PathBuf;

use crate::Result;
use crate::cli::EngineArgs;
use crate::eval::fista::FistaConfig;
use crate::eval::run::{EvalConfig, run_eval};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The SAE: a SAELens folder (standard, topk or jumprelu), a sparsify folder or a Gemma
    /// Scope params.npz (see `convert`).
    #[arg(long)]
    pub sae: PathBuf,
    /// Held-out in-distribution shards (files, folders, globs).
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// A transcoder's target shards, paired with --data shard by shard and row by row
    /// (required for a transcoder, refused for an SAE).
    #[arg(long, num_args = 1..)]
    pub target_data: Vec<PathBuf>,
    /// Out-of-distribution shards, reported side by side with --data.
    #[arg(long, num_args = 1..)]
    pub ood: Vec<PathBuf>,
    /// Tensor name inside the shards.
    #[arg(long)]
    pub tensor: Option<String>,
    /// A planted dictionary (a `saeforge synth` folder, or its truth.safetensors): recovery
    /// metrics and SAELens's ground-truth metrics (MCC, uniqueness; with the true codes synth wrote
    /// beside the --data shards, per-latent precision / recall / F1), and with --fista the
    /// oracle (FISTA on the true dictionary).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Rows per split at most (the first ones, in shard order).
    #[arg(long, default_value_t = 65536)]
    pub rows: usize,
    /// Rows per batch [default: 2^22 / d_sae, within 64 ..= 4096]; memory is a few
    /// (batch, d_sae) f32 buffers.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Also code the rows with FISTA on the SAE's decoder (and on --truth).
    #[arg(long)]
    pub fista: bool,
    /// FISTA's L1 weight (absolute, in data units).
    #[arg(long = "lambda", default_value_t = FistaConfig::default().lambda)]
    pub lambda: f32,
    /// FISTA's iterations at most.
    #[arg(long, default_value_t = FistaConfig::default().max_iters)]
    pub iters: usize,
    /// FISTA stops when every row's ||z_k - z_(k-1)|| <= tol ||z_k|| (0: always run --iters).
    #[arg(long, default_value_t = FistaConfig::default().tol)]
    pub tol: f32,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the feature density histograms (PNG and SVG) into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(a: EvalArgs) -> Result<()> {
    if a.data.is_empty() && a.truth.is_none() {
        return Err(crate::Error::input(
            "nothing to evaluate: give --data (held-out shards) and/or --truth (a planted dictionary)",
        ));
    }
    if a.rows == 0 {
        return Err(crate::Error::input("--rows 0: expected at least 1"));
    }
    let model = crate::sae::export::SaeModel::load(&a.sae)?;
    if model.d_out.is_some() {
        return run_transcoder(&a, &model);
    }
    if !a.target_data.is_empty() {
        return Err(crate::Error::input(format!(
            "--target-data: {} is an SAE, not a transcoder (its target is its input)",
            a.sae.display()
        )));
    }
    if let Some(j) = &a.json {
        crate::io::check_output_file("json", j)?;
    }
    if let Some(p) = &a.plots {
        crate::io::check_output_dir("--plots", p)?;
    }
    let fista = a.fista.then_some(FistaConfig {
        lambda: a.lambda,
        max_iters: a.iters,
        tol: a.tol,
        ..FistaConfig::default()
    });
    if let Some(f) = &fista {
        f.validate()?;
    }
    if a.batch == Some(0) {
        return Err(crate::Error::input("--batch 0: expected at least 1"));
    }
    // The engine line is part of the report (stdout), so that a bad input still gets
    // exactly one line on stderr.
    let (engine, why) = a.engine.select()?;
    let cfg = EvalConfig {
        sae: a.sae,
        data: a.data,
        ood: a.ood,
        tensor: a.tensor,
        truth: a.truth.as_deref().map(crate::synth::truth_file),
        rows: a.rows,
        batch: a.batch.unwrap_or(0),
        fista,
        plots: a.plots,
    };
    let report = run_eval(&engine, &why, &cfg)?;
    print!("{}", report.table());
    if let Some(j) = &a.json {
        crate::io::write_json(j, &report.to_json())?;
    }
    Ok(())
}

/// `eval` of a transcoder (`crate::eval::transcoder`): the paired rows only.
fn run_transcoder(a: &EvalArgs, model: &crate::sae::export::SaeModel) -> Result<()> {
    use crate::eval::transcoder::{TranscoderEval, evaluate, table, to_json};
    for (set, flag) in [
        (!a.ood.is_empty(), "--ood"),
        (a.truth.is_some(), "--truth"),
        (a.fista, "--fista"),
        (a.plots.is_some(), "--plots"),
    ] {
        if set {
            return Err(crate::Error::input(format!(
                "{flag}: not supported for a transcoder ({}); it is evaluated against --target-data",
                a.sae.display()
            )));
        }
    }
    if let Some(j) = &a.json {
        crate::io::check_output_file("json", j)?;
    }
    if a.batch == Some(0) {
        return Err(crate::Error::input("--batch 0: expected at least 1"));
    }
    let e = TranscoderEval {
        sae: &a.sae,
        data: &a.data,
        target_data: &a.target_data,
        tensor: a.tensor.as_deref(),
        rows: a.rows,
        batch: a
            .batch
            .unwrap_or_else(|| crate::eval::run::default_batch(model.n)),
    };
    let (engine, why) = a.engine.select()?;
    let m = evaluate(model, &engine, &e)?;
    println!("saeforge: {why}");
    print!("{}", table(model, &m));
    if let Some(j) = &a.json {
        crate::io::write_json(j, &to_json(model, &m))?;
    }
    Ok(())
}
