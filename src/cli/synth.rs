//! `saeforge synth`: synthetic activations with a planted dictionary (see `crate::synth`),
//! or with --compositional a compositional out-of-distribution split (train/, test/, ood/).

use std::path::{Path, PathBuf};

use crate::data::FloatType;
use crate::synth::{CompositionalConfig, SynthConfig, write_compositional, write_dataset};
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
    /// Mean number of active features per row [default: 4].
    #[arg(long)]
    pub active: Option<f64>,
    /// Zipf-like decay of feature probabilities (0 = uniform) [default: 0].
    #[arg(long)]
    pub density_decay: Option<f64>,
    /// Magnitude range LO:HI of an active feature [default: 0:1].
    #[arg(long)]
    pub magnitude: Option<String>,
    /// Groups of features that fire together [default: 0].
    #[arg(long)]
    pub correlated_groups: Option<usize>,
    /// Groups of features of which at most one fires [default: 0].
    #[arg(long)]
    pub anticorrelated_groups: Option<usize>,
    /// Features per group [default: 4].
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Gaussian noise standard deviation per coordinate [default: 0].
    #[arg(long)]
    pub noise: Option<f32>,
    /// Rows to generate (with --compositional: training rows).
    #[arg(long, default_value_t = 100_000)]
    pub tokens: usize,
    /// Write a compositional out-of-distribution split (arXiv 2603.28744): DIR/train/,
    /// DIR/test/, DIR/ood/, DIR/truth.safetensors; feature 0 is the probe.
    #[arg(long)]
    pub compositional: bool,
    /// --compositional: non-zeros per row (U(0, 1) each) [default: 3].
    #[arg(long)]
    pub k: Option<usize>,
    /// --compositional: size of the OOD pool, the last features [default: features / 2].
    #[arg(long)]
    pub ood_features: Option<usize>,
    /// --compositional: training rows never use the OOD pool (by default they do, but
    /// never together with the probe).
    #[arg(long)]
    pub ood_unseen: bool,
    /// --compositional: held-out in-distribution rows (DIR/test/) [default: 10000].
    #[arg(long)]
    pub test_tokens: Option<usize>,
    /// --compositional: out-of-distribution rows (DIR/ood/) [default: 10000].
    #[arg(long)]
    pub ood_tokens: Option<usize>,
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
    let dtype = match a.dtype {
        DtypeArg::F32 => FloatType::F32,
        DtypeArg::F16 => FloatType::F16,
        DtypeArg::Bf16 => FloatType::Bf16,
    };
    if a.compositional {
        let plain = [
            ("--active", a.active.is_some()),
            ("--density-decay", a.density_decay.is_some()),
            ("--magnitude", a.magnitude.is_some()),
            ("--correlated-groups", a.correlated_groups.is_some()),
            ("--anticorrelated-groups", a.anticorrelated_groups.is_some()),
            ("--group-size", a.group_size.is_some()),
            ("--noise", a.noise.is_some()),
        ];
        if let Some((flag, _)) = plain.iter().find(|(_, set)| *set) {
            return Err(Error::input(format!(
                "{flag} does not apply to --compositional (rows have exactly --k features, U(0, 1) each)"
            )));
        }
        let cfg = CompositionalConfig {
            features: a.features,
            d_in: a.d_in,
            k: a.k.unwrap_or(3),
            ood_features: a.ood_features.unwrap_or(a.features / 2),
            ood_unseen: a.ood_unseen,
            train_tokens: a.tokens,
            test_tokens: a.test_tokens.unwrap_or(10_000),
            ood_tokens: a.ood_tokens.unwrap_or(10_000),
            shard_tokens: a.shard_tokens,
            dtype,
            seed: a.seed,
        };
        let (pool, test, ood) = (cfg.ood_features, cfg.test_tokens, cfg.ood_tokens);
        let _lock = crate::lock::acquire(&a.out, "--out")?; // reliability: one writer per folder
        write_compositional(&a.out, cfg)?;
        println!(
            "wrote train/ ({} rows), test/ ({} rows), ood/ ({} rows) of {} dims, truth.safetensors ({} features: probe 0, in-distribution pool 1..{}, OOD pool {}..{}) and synth.json to {}",
            a.tokens,
            test,
            ood,
            a.d_in,
            a.features,
            a.features - pool,
            a.features - pool,
            a.features,
            a.out.display()
        );
        return Ok(());
    }
    for (flag, set) in [
        ("--k", a.k.is_some()),
        ("--ood-features", a.ood_features.is_some()),
        ("--ood-unseen", a.ood_unseen),
        ("--test-tokens", a.test_tokens.is_some()),
        ("--ood-tokens", a.ood_tokens.is_some()),
    ] {
        if set {
            return Err(Error::input(format!("{flag} needs --compositional")));
        }
    }
    let cfg = SynthConfig {
        features: a.features,
        d_in: a.d_in,
        active: a.active.unwrap_or(4.0),
        density_decay: a.density_decay.unwrap_or(0.0),
        magnitude: range("magnitude", a.magnitude.as_deref().unwrap_or("0:1"))?,
        correlated_groups: a.correlated_groups.unwrap_or(0),
        anticorrelated_groups: a.anticorrelated_groups.unwrap_or(0),
        group_size: a.group_size.unwrap_or(4),
        noise: a.noise.unwrap_or(0.0),
        tokens: a.tokens,
        shard_tokens: a.shard_tokens,
        dtype,
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
    let _lock = crate::lock::acquire(&a.out, "--out")?; // reliability: one writer per folder
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
