//! `saeforge synth`: synthetic activations with a planted dictionary (see `crate::synth`):
//! the plain world, the structured one (hierarchy, correlated firing, Zipf range,
//! per-feature magnitudes, bias), or with --compositional a compositional
//! out-of-distribution split (train/, test/, ood/).

use std::path::{Path, PathBuf};

use crate::cli::{first_set, parse_pair};
use crate::data::FloatType;
use crate::synth::{
    CompositionalConfig, CorrelationSettings, HierarchySettings, PerFeature, Structure,
    SynthConfig, write_compositional, write_world,
};
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
    /// A feature hierarchy with this many root features (0..ROOTS); their children are
    /// the next features, breadth first, and fire only with their parent.
    #[arg(long)]
    pub hierarchy: Option<usize>,
    /// --hierarchy: children per parent, N or LO:HI (uniform) [default: 4:12].
    #[arg(long)]
    pub branching: Option<String>,
    /// --hierarchy: levels below the roots [default: 1].
    #[arg(long)]
    pub hierarchy_depth: Option<usize>,
    /// --hierarchy: fraction of parents whose children are mutually exclusive [default: 0].
    #[arg(long)]
    pub mutually_exclusive: Option<f64>,
    /// --hierarchy: keep the drawn probabilities as they are (by default they are raised
    /// so that each feature's firing rate stays near its target despite the gating).
    #[arg(long)]
    pub no_compensate: bool,
    /// Low-rank correlated firing (Gaussian copula) of this rank [default: none].
    #[arg(long)]
    pub correlation_rank: Option<usize>,
    /// --correlation-rank: scale of the factor's entries [default: 0.1].
    #[arg(long)]
    pub correlation_scale: Option<f64>,
    /// Zipf probabilities from MAX (feature 0) down to MIN (the last), exponent
    /// --density-decay, instead of probabilities summing to --active.
    #[arg(long)]
    pub firing_range: Option<String>,
    /// Gaussian magnitudes max(0, N(mean_i, std_i^2)): per-feature mean, V, linear:A:B,
    /// exponential:A:B or folded-normal:MEAN:STD [default: 1 with --magnitude-std].
    #[arg(long)]
    pub magnitude_mean: Option<String>,
    /// Per-feature std of the Gaussian magnitudes (same forms) [default: 0 with
    /// --magnitude-mean].
    #[arg(long)]
    pub magnitude_std: Option<String>,
    /// Add a random direction of this norm to every row [default: 0].
    #[arg(long)]
    pub bias: Option<f64>,
    /// Do not write the true codes (DIR/codes/) beside the shards.
    #[arg(long)]
    pub no_codes: bool,
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

impl From<DtypeArg> for FloatType {
    fn from(d: DtypeArg) -> FloatType {
        match d {
            DtypeArg::F32 => FloatType::F32,
            DtypeArg::F16 => FloatType::F16,
            DtypeArg::Bf16 => FloatType::Bf16,
        }
    }
}

fn range(flag: &str, s: &str) -> Result<(f32, f32)> {
    parse_pair(s, ':', || {
        Error::input(format!("--{flag} {s:?}: expected LO:HI, e.g. 0:1"))
    })
}

pub fn run(a: SynthArgs) -> Result<()> {
    let dtype = FloatType::from(a.dtype);
    if a.compositional {
        let plain = [
            ("--active", a.active.is_some()),
            ("--density-decay", a.density_decay.is_some()),
            ("--magnitude", a.magnitude.is_some()),
            ("--correlated-groups", a.correlated_groups.is_some()),
            ("--anticorrelated-groups", a.anticorrelated_groups.is_some()),
            ("--group-size", a.group_size.is_some()),
            ("--noise", a.noise.is_some()),
            ("--hierarchy", a.hierarchy.is_some()),
            ("--branching", a.branching.is_some()),
            ("--hierarchy-depth", a.hierarchy_depth.is_some()),
            ("--mutually-exclusive", a.mutually_exclusive.is_some()),
            ("--no-compensate", a.no_compensate),
            ("--correlation-rank", a.correlation_rank.is_some()),
            ("--correlation-scale", a.correlation_scale.is_some()),
            ("--firing-range", a.firing_range.is_some()),
            ("--magnitude-mean", a.magnitude_mean.is_some()),
            ("--magnitude-std", a.magnitude_std.is_some()),
            ("--bias", a.bias.is_some()),
            ("--no-codes", a.no_codes),
        ];
        if let Some(flag) = first_set(&plain) {
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
    if let Some(flag) = first_set(&[
        ("--k", a.k.is_some()),
        ("--ood-features", a.ood_features.is_some()),
        ("--ood-unseen", a.ood_unseen),
        ("--test-tokens", a.test_tokens.is_some()),
        ("--ood-tokens", a.ood_tokens.is_some()),
    ]) {
        return Err(Error::input(format!("{flag} needs --compositional")));
    }
    let structure = structure(&a)?;
    if structure.firing_range.is_some() && a.active.is_some() {
        return Err(Error::input(
            "--active does not combine with --firing-range (the Zipf probabilities fix the rate)",
        ));
    }
    if (a.magnitude_mean.is_some() || a.magnitude_std.is_some()) && a.magnitude.is_some() {
        return Err(Error::input(
            "--magnitude LO:HI does not combine with --magnitude-mean/--magnitude-std (uniform or Gaussian magnitudes, not both)",
        ));
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
    structure.validate(&cfg)?;
    // One shard is generated in memory at a time (f32, plus its stored copy, and its codes:
    // 12 bytes an entry, a few more while written), plus the dictionary and a correlation
    // factor.
    let shard = cfg.shard_tokens.min(cfg.tokens) as u128;
    let expected_active = match structure.firing_range {
        Some((lo, hi)) => {
            crate::synth::structure::zipf_range(cfg.features, cfg.density_decay, lo, hi)
                .iter()
                .map(|&p| p as f64)
                .sum()
        }
        None => cfg.active,
    };
    let rank = structure.correlation.as_ref().map_or(0, |c| c.rank) as u128;
    let bytes = (shard * cfg.d_in as u128 * 8)
        + cfg.features as u128 * (cfg.d_in as u128 * 4 + rank * 4 + 64)
        + shard * (64 + 40 * expected_active.ceil() as u128);
    crate::io::check_host_memory(
        &format!(
            "--shard-tokens {} x --d-in {} (with --features {})",
            cfg.shard_tokens, cfg.d_in, cfg.features
        ),
        bytes,
        "lower --shard-tokens",
    )?;
    // The shards and their codes (12 bytes an entry) on disk: a dataset that does not fit
    // would fail only when the disk is full, leaving an incomplete one.
    let codes = if a.no_codes {
        0
    } else {
        cfg.tokens as u128 * (8 + 12 * expected_active.ceil() as u128)
    };
    crate::io::check_disk_space(
        &format!("--tokens {} x --d-in {}", cfg.tokens, cfg.d_in),
        &a.out,
        cfg.tokens as u128 * cfg.d_in as u128 * cfg.dtype.bytes() as u128 + codes,
        "lower --tokens, or write elsewhere",
    )?;
    let _lock = crate::lock::acquire(&a.out, "--out")?; // reliability: one writer per folder
    prepare_out(&a.out, a.overwrite)?;
    let describe = describe(&structure);
    let paths = write_world(&a.out, cfg, structure, !a.no_codes)?;
    println!(
        "wrote {} shard(s) of {} rows x {} dims{}, truth.safetensors ({} features{describe}) and synth.json to {}",
        paths.len(),
        a.tokens,
        a.d_in,
        if a.no_codes {
            ""
        } else {
            " with their true codes (codes/)"
        },
        a.features,
        a.out.display()
    );
    Ok(())
}

/// The structured world's settings from the flags (one clear line for a bad one).
fn structure(a: &SynthArgs) -> Result<Structure> {
    let hierarchy_only = [
        ("--branching", a.branching.is_some()),
        ("--hierarchy-depth", a.hierarchy_depth.is_some()),
        ("--mutually-exclusive", a.mutually_exclusive.is_some()),
        ("--no-compensate", a.no_compensate),
    ];
    if a.hierarchy.is_none()
        && let Some(flag) = first_set(&hierarchy_only)
    {
        return Err(Error::input(format!("{flag} needs --hierarchy ROOTS")));
    }
    if a.correlation_scale.is_some() && a.correlation_rank.is_none() {
        return Err(Error::input("--correlation-scale needs --correlation-rank"));
    }
    let hierarchy = match a.hierarchy {
        Some(roots) => Some(HierarchySettings {
            roots,
            branching: match &a.branching {
                Some(s) => branching(s)?,
                None => (4, 12),
            },
            depth: a.hierarchy_depth.unwrap_or(1),
            exclusive: a.mutually_exclusive.unwrap_or(0.0),
            compensate: !a.no_compensate,
        }),
        None => None,
    };
    let firing_range = match &a.firing_range {
        Some(s) => Some(parse_pair(s, ':', || {
            Error::input(format!(
                "--firing-range {s:?}: expected MIN:MAX, e.g. 0.002:0.4"
            ))
        })?),
        None => None,
    };
    let per = |flag: &str, v: &Option<String>| {
        v.as_deref().map(|s| PerFeature::parse(flag, s)).transpose()
    };
    Ok(Structure {
        hierarchy,
        correlation: a.correlation_rank.map(|rank| CorrelationSettings {
            rank,
            scale: a.correlation_scale.unwrap_or(0.1),
        }),
        firing_range,
        magnitude_mean: per("magnitude-mean", &a.magnitude_mean)?,
        magnitude_std: per("magnitude-std", &a.magnitude_std)?,
        bias: a.bias.unwrap_or(0.0),
    })
}

/// `--branching N` or `LO:HI`.
fn branching(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::input(format!("--branching {s:?}: expected N or LO:HI, e.g. 4:12"));
    if s.contains(':') {
        return parse_pair(s, ':', bad);
    }
    let n = s.trim().parse::<usize>().map_err(|_| bad())?;
    Ok((n, n))
}

/// ", a hierarchy of R roots and M children, ..." for the closing line.
fn describe(s: &Structure) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &s.hierarchy {
        parts.push(format!("a hierarchy of {} roots", h.roots));
    }
    if let Some(c) = &s.correlation {
        parts.push(format!("rank-{} correlated firing", c.rank));
    }
    if s.bias > 0.0 {
        parts.push(format!("a bias of norm {}", s.bias));
    }
    parts.iter().map(|p| format!(", {p}")).collect()
}

/// Is `name` one of the files `synth` writes?
fn is_dataset_file(name: &str) -> bool {
    name == "synth.json"
        || name == "codes"
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
    crate::io::check_foreign_output("--out", out, "a synth dataset")?;
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
        if p.is_dir() {
            // codes/: only the codes of shards, then the folder if that emptied it.
            for e in std::fs::read_dir(&p)
                .map_err(|e| Error::io(&p, e))?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("shard-") && name.ends_with(".safetensors") {
                    std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
                }
            }
            let _ = std::fs::remove_dir(&p);
        } else {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| {
        Error::input(format!(
            "--out {}: cannot create the folder ({e})",
            out.display()
        ))
    })
}
