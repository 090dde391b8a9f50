//! `saeforge steer`: edit chosen SAE latents of every row and write the edited activations
//! x' = x + (z' - z) W_dec (see `crate::eval::steer`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::EncoderArgs;
use crate::cli::synth::DtypeArg;
use crate::data::{FloatType, discover, open_shards};
use crate::eval::steer::{Edit, EditOp, SteerOutput, SteerReport, check_edits, steer_file};
use crate::sae::export::SaeModel;
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct SteerArgs {
    /// The SAE: a SAELens or sparsify folder, or a Gemma Scope params.npz (see `convert`).
    #[arg(long)]
    pub sae: PathBuf,
    /// A safetensors file of activations, or a folder or a glob pattern of them (then --out
    /// is a folder of files with the same names).
    #[arg(long)]
    pub data: PathBuf,
    /// Activation tensor inside the file (default: the only floating rank-2/3 tensor).
    #[arg(long)]
    pub tensor: Option<String>,
    /// Output file (a folder when --data is a folder or a glob).
    #[arg(long)]
    pub out: PathBuf,
    /// Clamp latent I to V on every row (repeatable), e.g. --set 1234=8.
    #[arg(long = "set", value_name = "I=V")]
    pub set: Vec<String>,
    /// Multiply latent I by F (repeatable), e.g. --scale 1234=0.5.
    #[arg(long = "scale", value_name = "I=F")]
    pub scale: Vec<String>,
    /// Zero latent I (repeatable), e.g. --ablate 1234.
    #[arg(long = "ablate", value_name = "I")]
    pub ablate: Vec<String>,
    /// Add V to latent I (repeatable), e.g. --add 1234=-2.
    #[arg(long = "add", value_name = "I=V")]
    pub add: Vec<String>,
    /// Stored dtype of the edited tensor (default: the input's).
    #[arg(long, value_enum)]
    pub out_dtype: Option<DtypeArg>,
    /// Name of the edited tensor (default: the input's).
    #[arg(long)]
    pub out_tensor: Option<String>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Also write the per-edit statistics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Parse the edit flags (one-line errors naming the flag).
pub fn parse_edits(
    set: &[String],
    scale: &[String],
    ablate: &[String],
    add: &[String],
) -> Result<Vec<Edit>> {
    // Each I=V of a flag as the edit `op(V)` of latent I.
    fn valued(
        flag: &str,
        items: &[String],
        example: &str,
        op: fn(f32) -> EditOp,
    ) -> Result<Vec<Edit>> {
        let bad = |s: &str| {
            Error::input(format!(
                "--{flag} {s}: expected I=V, e.g. --{flag} {example}"
            ))
        };
        let edit = |s: &String| {
            let (latent, v) = crate::cli::parse_pair(s, '=', || bad(s))?;
            Ok(Edit { latent, op: op(v) })
        };
        items.iter().map(edit).collect()
    }
    let mut out = valued("set", set, "1234=8", EditOp::Set)?;
    out.extend(valued("scale", scale, "1234=0.5", EditOp::Scale)?);
    for s in ablate {
        let latent = s.trim().parse::<usize>().map_err(|_| {
            Error::input(format!(
                "--ablate {s}: expected a latent index, e.g. --ablate 1234"
            ))
        })?;
        out.push(Edit {
            latent,
            op: EditOp::Ablate,
        });
    }
    out.extend(valued("add", add, "1234=-2", EditOp::Add)?);
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Print the per-edit lines of a report.
pub fn print_report(r: &SteerReport) {
    for e in &r.edits {
        let edit = e.edit.expect("set by SteerReport::new");
        let rows = r.rows.max(1) as f64;
        println!(
            "  {:<18} changed {} of {} rows; mean z {:.4} -> {:.4}; mean |delta x| {:.4} over the changed rows",
            edit.flag(),
            e.rows_changed,
            r.rows,
            e.sum_before / rows,
            e.sum_after / rows,
            e.mean_delta_norm()
        );
    }
}

pub fn run(a: SteerArgs) -> Result<()> {
    let model = SaeModel::load(&a.sae)?;
    if model.d_out.is_some() {
        // The edited reconstruction replaces the input rows: a transcoder's output is
        // another activation.
        return Err(Error::input(format!(
            "--sae {}: is a transcoder ({}); steer edits SAEs, whose output replaces their input",
            a.sae.display(),
            model.architecture()
        )));
    }
    let edits = check_edits(&parse_edits(&a.set, &a.scale, &a.ablate, &a.add)?, model.n)?;
    a.encoder.check_batch()?;
    if let Some(j) = &a.json {
        crate::io::check_output_file("json", j)?;
    }
    let opts = SteerOutput {
        dtype: a.out_dtype.map(FloatType::from),
        tensor: a.out_tensor.clone(),
    };
    // One file -> one file; a folder -> a folder of files with the same names.
    // A glob pattern (e.g. 'acts/*.safetensors') is many files, like a folder.
    let glob = !a.data.exists() && a.data.to_string_lossy().contains(['*', '?', '[']);
    // A refusal of --out, saying why.
    let bad_out = |why: &str| Error::input(format!("--out {}: {why}", a.out.display()));
    let jobs: Vec<(PathBuf, PathBuf)> = if a.data.is_dir() || glob {
        let inputs = discover(std::slice::from_ref(&a.data))?;
        if a.out.exists() && !a.out.is_dir() {
            return Err(bad_out(
                "--data names several files, so --out must be a folder, but this is a file",
            ));
        }
        // A new folder named like a file would read as one (the output of a single input).
        if !a.out.exists() && a.out.extension().is_some_and(|e| e == "safetensors") {
            return Err(bad_out(
                "--data names several files, so --out is a folder of files, but this name \
                 ends in .safetensors like one file; give a folder name",
            ));
        }
        crate::io::check_output_dir("--out", &a.out)?;
        if inputs.iter().any(|p| p.parent() == Some(a.out.as_path())) {
            return Err(bad_out(
                "holds the input files; steering writes new files, pick another folder",
            ));
        }
        if same_file(&a.out, &a.data) {
            return Err(bad_out(
                "is the input folder; steering writes new files, pick another folder",
            ));
        }
        let jobs: Vec<(PathBuf, PathBuf)> = inputs
            .into_iter()
            .map(|p| {
                let o = a.out.join(p.file_name().expect("a file"));
                (p, o)
            })
            .collect();
        // A glob over several folders can name two inputs alike: one output would replace
        // the other.
        for (k, (p, o)) in jobs.iter().enumerate() {
            if let Some((q, _)) = jobs[..k].iter().find(|(_, o2)| o2 == o) {
                return Err(Error::input(format!(
                    "--data {}: {} and {} have the same file name, and --out is a folder of \
                     files named as the inputs: one would replace the other",
                    a.data.display(),
                    q.display(),
                    p.display()
                )));
            }
        }
        // Shards of an earlier run that this one would not replace: the folder, read as
        // --data, would mix them with this run's.
        if a.out.is_dir()
            && let Ok(there) = discover(std::slice::from_ref(&a.out))
            && let Some(stale) = there.iter().find(|p| !jobs.iter().any(|(_, o)| o == *p))
        {
            return Err(bad_out(&format!(
                "already holds {}, which this run would not write (read as --data, the \
                 folder would mix it with this run's files); empty the folder or pick another",
                stale.file_name().expect("a file").to_string_lossy()
            )));
        }
        jobs
    } else {
        if !a.data.is_file() {
            return Err(Error::input(format!(
                "--data {}: no such file or folder",
                a.data.display()
            )));
        }
        if same_file(&a.out, &a.data) {
            return Err(bad_out(
                "is the input file; write the edited activations elsewhere",
            ));
        }
        crate::io::check_output_file("out", &a.out)?;
        vec![(a.data.clone(), a.out.clone())]
    };
    for (_, out) in &jobs {
        crate::sae::formats::check_not_sae_file("out", out, &a.sae)?;
    }
    // Every input's header and d before the first file is written, so that a bad file
    // among many leaves no partial output behind.
    let inputs: Vec<PathBuf> = jobs.iter().map(|(i, _)| i.clone()).collect();
    if let Some(s) = open_shards(&inputs, a.tensor.as_deref())?.first() {
        crate::eval::steer::check_d(s, &model)?;
    }
    if a.data.is_dir() || glob {
        crate::io::create_dir(&a.out)?;
    }
    let encoder = a.encoder.encoder(&model)?;
    if edits.is_empty() {
        println!("no edits given: the output equals the input");
    }
    let mut all = Vec::new();
    for (input, out) in &jobs {
        let clock = Instant::now();
        let r = steer_file(
            &encoder,
            &model,
            &edits,
            input,
            a.tensor.as_deref(),
            out,
            &opts,
        )?;
        println!(
            "steered {} rows of {} with the {} SAE ({} latents) in {:.1} s: {} rows changed, mean |delta x| {:.4} over them",
            r.rows,
            input.display(),
            model.kind.name(),
            model.n,
            clock.elapsed().as_secs_f64(),
            r.rows_changed,
            r.mean_delta_norm()
        );
        print_report(&r);
        println!("wrote {}", out.display());
        all.push(serde_json::json!({
            "input": input,
            "output": out,
            "report": r,
        }));
    }
    if let Some(j) = &a.json {
        crate::io::write_json(j, &serde_json::Value::Array(all))?;
    }
    Ok(())
}
