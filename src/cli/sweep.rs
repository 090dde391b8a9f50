//! `saeforge sweep`: many SAEs from one pass over the data (see `crate::sweep`). Members come
//! from a TOML sweep file and / or command-line lists (`--k 16,32,64` makes a grid);
//! `saeforge sweep report OUT` rebuilds the report, `--emit slurm` writes a job array.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::stop::StopToken;
use crate::sweep::spec::{key, parse_value};
use crate::sweep::{SpecParts, SweepOptions, report};
use crate::{Error, Result};

#[derive(clap::Args, Debug, Default)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub action: Option<SweepAction>,
    /// Sweep file (TOML: out, [shared], [grid], [[member]]; see README "saeforge sweep").
    pub file: Option<PathBuf>,
    /// Output folder: OUT/<member>/ per member, OUT/sweep.json, OUT/report.md, OUT/plots/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Activation shards for every member (shared).
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    /// Transcoders: the target shards paired with --data, for every member (shared).
    #[arg(long, num_args = 1..)]
    pub target_data: Option<Vec<PathBuf>>,
    /// Grid over architectures, e.g. --arch topk,batchtopk.
    #[arg(long, value_delimiter = ',')]
    pub arch: Vec<String>,
    /// Grid over k, e.g. --k 16,32,64.
    #[arg(long, value_delimiter = ',')]
    pub k: Vec<String>,
    /// Grid over d_sae.
    #[arg(long, value_delimiter = ',')]
    pub d_sae: Vec<String>,
    /// Grid over the expansion factor.
    #[arg(long, value_delimiter = ',')]
    pub expansion: Vec<String>,
    /// Grid over the L1 coefficient (relu).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub l1: Vec<String>,
    /// Grid over the L0 coefficient (jumprelu).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub l0: Vec<String>,
    /// Grid over the learning rate.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub lr: Vec<String>,
    /// Grid over seeds (the members share the smallest seed's data order, one pass over
    /// the data: member S equals `train --seed S --data-seed <smallest>`).
    #[arg(long, value_delimiter = ',')]
    pub seed: Vec<String>,
    /// Grid over any other train option: OPTION=V1,V2 (repeatable).
    #[arg(long)]
    pub grid: Vec<String>,
    /// Shared train option for every member: OPTION=VALUE (repeatable).
    #[arg(long)]
    pub set: Vec<String>,
    /// Training steps of every member (shared).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Rows per step (shared).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Engine of every member (shared): auto, gpu, cpu.
    #[arg(long)]
    pub device: Option<String>,
    /// Replace a sweep (and member runs) already in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the sweep in this folder from its members' checkpoints.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Train only these members (comma-separated names; a job-array task).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// With --resume: go on even if the shards changed since the checkpoints.
    #[arg(long)]
    pub allow_data_change: bool,
    /// Ground-truth dictionary (a `saeforge synth` folder) for the report's recovery metrics.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Write a cluster job instead of training: `slurm` (a job array + the gather step).
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// With --emit slurm: members per array task (default 1; a task trains its members
    /// from one pass).
    #[arg(long)]
    pub per_task: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Slurm,
}

#[derive(clap::Subcommand, Debug)]
pub enum SweepAction {
    /// Rebuild OUT/sweep.json, OUT/report.md and OUT/plots from the finished members.
    Report {
        /// The sweep's output folder.
        out: PathBuf,
        /// Ground-truth dictionary (a `saeforge synth` folder) for recovery metrics.
        #[arg(long)]
        truth: Option<PathBuf>,
    },
}

/// The command line's part of the spec: grid lists and shared options.
fn cli_parts(a: &SweepArgs) -> Result<SpecParts> {
    let mut p = SpecParts::default();
    // Each option once on the command line: a second value (--k 2,4 --grid k=8, --set
    // d_sae=16 --set d_sae=32, --steps 5 --set steps=9) would silently replace the first.
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    let mut once = |k: &str, flag: String| -> Result<()> {
        match given.insert(k.to_string(), flag.clone()) {
            Some(prev) => Err(Error::input(format!(
                "{flag}: option `{k}` is also given by {prev}; give it once (a grid list or one shared value)"
            ))),
            None => Ok(()),
        }
    };
    let lists: [(&str, &Vec<String>); 8] = [
        ("arch", &a.arch),
        ("k", &a.k),
        ("d_sae", &a.d_sae),
        ("expansion", &a.expansion),
        ("l1", &a.l1),
        ("l0", &a.l0),
        ("lr", &a.lr),
        ("seed", &a.seed),
    ];
    for (k, vs) in lists {
        if !vs.is_empty() {
            once(k, format!("--{} {}", k.replace('_', "-"), vs.join(",")))?;
            p.grid
                .insert(k.into(), vs.iter().map(|v| parse_value(v)).collect());
        }
    }
    let pair = |flag: &str, s: &str| -> Result<(String, String)> {
        s.split_once('=')
            .map(|(k, v)| (key(k), v.to_string()))
            .ok_or_else(|| Error::input(format!("--{flag} {s}: expected OPTION=VALUE")))
    };
    for g in &a.grid {
        let (k, v) = pair("grid", g)?;
        once(&k, format!("--grid {g}"))?;
        let vs: Vec<Value> = v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(parse_value)
            .collect();
        p.grid.insert(k, vs);
    }
    for s in &a.set {
        let (k, v) = pair("set", s)?;
        once(&k, format!("--set {s}"))?;
        p.shared.insert(k, parse_value(&v));
    }
    let paths = |d: &Vec<PathBuf>| {
        Value::Array(
            d.iter()
                .map(|p| Value::String(p.display().to_string()))
                .collect(),
        )
    };
    if let Some(d) = &a.data {
        once("data", "--data".into())?;
        p.shared.insert("data".into(), paths(d));
    }
    if let Some(d) = &a.target_data {
        once("target_data", "--target-data".into())?;
        p.shared.insert("target_data".into(), paths(d));
    }
    if let Some(s) = a.steps {
        once("steps", format!("--steps {s}"))?;
        p.shared.insert("steps".into(), s.into());
    }
    if let Some(b) = a.batch {
        once("batch", format!("--batch {b}"))?;
        p.shared.insert("batch".into(), b.into());
    }
    if let Some(d) = &a.device {
        once("device", format!("--device {d}"))?;
        p.shared.insert("device".into(), Value::String(d.clone()));
    }
    Ok(p)
}

pub fn run(a: SweepArgs) -> Result<()> {
    if let Some(SweepAction::Report { out, truth }) = &a.action {
        let s = report::write(out, truth.as_deref())?;
        println!("{s}");
        return Ok(());
    }
    let only = (!a.only.is_empty()).then(|| a.only.clone());
    let (spec, out, resume) = if let Some(dir) = &a.resume {
        let given = a.file.is_some()
            || a.data.is_some()
            || a.target_data.is_some()
            || a.batch.is_some()
            || a.device.is_some()
            || !a.grid.is_empty()
            || !a.set.is_empty()
            || a.overwrite;
        if given {
            return Err(Error::input(format!(
                "--resume {}: the sweep's own options are in {}; give only --resume (and --steps, --only, --truth)",
                dir.display(),
                dir.join(crate::sweep::state::SPEC_FILE).display()
            )));
        }
        (None, dir.clone(), true)
    } else {
        let (file_parts, file_out) = match &a.file {
            Some(f) => SpecParts::from_toml(f)?,
            None => (SpecParts::default(), None),
        };
        let spec = file_parts.overlay(cli_parts(&a)?).expand()?;
        let out = a.out.clone().or(file_out).ok_or_else(|| {
            Error::input("--out: missing (the sweep's folder; or out = \"...\" in the sweep file)")
        })?;
        (Some(spec), out, false)
    };
    if a.emit == Some(Emit::Slurm) {
        let spec = match spec {
            Some(s) => s,
            None => crate::sweep::state::load_spec(&out)?,
        };
        let script = crate::sweep::slurm::emit(&spec, &out, a.per_task.unwrap_or(1), a.overwrite)?;
        println!("{script}");
        return Ok(());
    }
    let opts = SweepOptions {
        out: out.clone(),
        overwrite: a.overwrite,
        resume,
        only,
        allow_data_change: a.allow_data_change,
        steps: if resume { a.steps } else { None },
    };
    let stop = StopToken::new();
    let _signals = stop.on_signals();
    let o = crate::sweep::run_until(spec, &opts, &stop)?;
    if o.interrupted {
        return Err(Error::Interrupted(format!(
            "interrupted; every member's checkpoint is in {}/<member>/checkpoint. Resume with: saeforge sweep --resume {}",
            out.display(),
            out.display()
        )));
    }
    if let Some(only) = &opts.only {
        // A job-array task: the gather step writes the report once every task is done.
        println!(
            "trained {} in {}; the report: saeforge sweep report {}",
            only.join(", "),
            out.display(),
            out.display()
        );
        return Ok(());
    }
    let summary = report::write(&out, a.truth.as_deref())?;
    println!("{summary}");
    Ok(())
}
