//! `saeforge synth`: synthetic activations with a planted dictionary (see `crate::synth`).

use std::path::PathBuf;

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
