//! `saeforge synth`: synthetic activations with a planted dictionary (see `crate::synth`).

use std::path::{Path, PathBuf};

use crate::data::FloatType;
use crate::synth::{SynthConfig, write_dataset};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Output folder (shards, truth.safetensors, synth.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of true features.
    #[arg(long, default_value_t = 512)]
    pub features: usize,
    /// Dimension of the activations.
    #[arg(long, default_value_t = 64)]
    pub d_in: usize,
    /// Mean number of active features per row.
    #[arg(long, default_value_t = 4.0)]
    pub active: f64,
    /// Zipf-like decay of feature probabilities (0 = uniform).
    #[arg(long, default_value_t = 0.0)]
    pub density_decay: f64,
    /// Magnitude range LO:HI of an active feature.
    #[arg(long, default_value = "0:1")]
    pub magnitude: String,
    /// Groups of features that fire together.
    #[arg(long, default_value_t = 0)]
    pub correlated_groups: usize,
    /// Groups of features of which at most one fires.
    #[arg(long, default_value_t = 0)]
    pub anticorrelated_groups: usize,
    /// Features per group.
    #[arg(long, default_value_t = 4)]
    pub group_size: usize,
    /// Gaussian noise standard deviation per coordinate.
    #[arg(long, default_value_t = 0.0)]
    pub noise: f32,
    /// Rows to generate.
    #[arg(long, default_value_t = 100_000)]
    pub tokens: usize,
    /// Rows per shard.
    #[arg(long, default_value_t = 50_000)]
    pub shard_tokens: usize,
    /// Stored dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace a dataset already in --out (its shards, truth and synth.json).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

fn range(flag: &str, s: &str) -> Result<(f32, f32)> {
    let bad = || Error::input(format!("--{flag} {s:?}: expected LO:HI, e.g. 0:1"));
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

pub fn run(a: SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        features: a.features,
        d_in: a.d_in,
        active: a.active,
        density_decay: a.density_decay,
        magnitude: range("magnitude", &a.magnitude)?,
        correlated_groups: a.correlated_groups,
        anticorrelated_groups: a.anticorrelated_groups,
        group_size: a.group_size,
        noise: a.noise,
        tokens: a.tokens,
        shard_tokens: a.shard_tokens,
        dtype: match a.dtype {
            DtypeArg::F32 => FloatType::F32,
            DtypeArg::F16 => FloatType::F16,
            DtypeArg::Bf16 => FloatType::Bf16,
        },
        seed: a.seed,
    };
    cfg.validate()?;
    // One shard is generated in memory at a time (f32, plus its stored copy).
    let shard = cfg.shard_tokens.min(cfg.tokens) as u128;
    let bytes = (shard * cfg.d_in as u128 * 8)
        + cfg.features as u128 * (cfg.d_in as u128 * 4 + 64)
        + shard * 64;
    crate::io::check_host_memory(
        &format!(
            "--shard-tokens {} x --d-in {} (with --features {})",
            cfg.shard_tokens, cfg.d_in, cfg.features
        ),
        bytes,
        "lower --shard-tokens",
    )?;
    prepare_out(&a.out, a.overwrite)?;
    let paths = write_dataset(&a.out, cfg)?;
    println!(
        "wrote {} shard(s) of {} rows x {} dims, truth.safetensors ({} features) and synth.json to {}",
        paths.len(),
        a.tokens,
        a.d_in,
        a.features,
        a.out.display()
    );
    Ok(())
}

/// Is `name` one of the files `synth` writes?
fn is_dataset_file(name: &str) -> bool {
    name == "synth.json"
        || name == "truth.safetensors"
        || (name.starts_with("shard-") && name.ends_with(".safetensors"))
}

/// Refuse a folder that already holds a dataset unless --overwrite; with it, remove the old
/// dataset's files first, so that a smaller new dataset never sits beside stale shards.
fn prepare_out(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::input(format!(
            "--out {}: is a file, expected a folder",
            out.display()
        )));
    }
    let old: Vec<PathBuf> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| is_dataset_file(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    if !old.is_empty() && !overwrite {
        return Err(Error::input(format!(
            "--out {}: already holds a dataset (use --overwrite to replace it)",
            out.display()
        )));
    }
    crate::io::remove_stale_temps(out);
    for p in old {
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
    }
    std::fs::create_dir_all(out).map_err(|e| {
        Error::input(format!(
            "--out {}: cannot create the folder ({e})",
            out.display()
        ))
    })
}
