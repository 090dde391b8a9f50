//! `saeforge info PATH`: what a shard (or folder of shards) or an SAE folder holds.

use std::path::PathBuf;

use crate::data::discover;
use crate::sae::export::{CFG_FILE, WEIGHTS_FILE, load_sparsity};
use crate::sae::formats::{self, Layout, gemma_scope::PARAMS_FILE as GEMMA_SCOPE_FILE};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// A safetensors shard, a folder of shards, or an SAE (a SAELens or sparsify folder, a
    /// Gemma Scope params.npz).
    pub path: PathBuf,
    /// Tensor to describe as the activations (default: the only floating rank-2/3 tensor).
    #[arg(long)]
    pub tensor: Option<String>,
}

pub fn run(a: InfoArgs) -> Result<()> {
    crate::lock::note_if_writing(&a.path); // reliability: say when a live run writes it
    let sae_files = [CFG_FILE, WEIGHTS_FILE, GEMMA_SCOPE_FILE, "ae.pt"];
    let ext = a.path.extension().and_then(|e| e.to_str());
    if (a.path.is_dir() && sae_files.iter().any(|f| a.path.join(f).exists()))
        || (a.path.is_file() && matches!(ext, Some("npz" | "pt" | "pth")))
    {
        return sae_info(&a.path);
    }
    let paths = discover(std::slice::from_ref(&a.path)).map_err(|e| {
        if a.path.is_dir() {
            e.with_hint("no cfg.json either, so not an SAE folder")
        } else {
            e
        }
    })?;
    let mut total_rows = 0usize;
    // Describe every file, then fail (exit 2) if one is not usable as activations, so the
    // listing still shows what the files hold.
    let mut first_problem: Option<Error> = None;
    let mut first_d: Option<(usize, PathBuf)> = None;
    for p in &paths {
        // reliability: the header through positioned reads (no memory map: no SIGBUS).
        let (len, mut names) = crate::data::describe(p)?;
        println!("{} ({len} bytes)", p.display());
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, dtype, shape) in names {
            println!("  {name}: {dtype:?} {shape:?}");
        }
        match crate::data::Shard::open(p, a.tensor.as_deref()).and_then(|s| s.verified()) {
            Ok(s) => {
                println!(
                    "  activations: {:?}, {} rows x d {} ({:?})",
                    s.tensor, s.rows, s.d, s.dtype
                );
                total_rows += s.rows;
                match &first_d {
                    None => first_d = Some((s.d, p.clone())),
                    Some((d, q)) if *d != s.d && first_problem.is_none() => {
                        first_problem = Some(Error::input(format!(
                            "{}: tensor {:?} has d = {}, but {} has d = {d}; all shards must share d",
                            p.display(),
                            s.tensor,
                            s.d,
                            q.display()
                        )));
                    }
                    _ => {}
                }
            }
            Err(e) => {
                println!("  not usable as activations: {e}");
                first_problem.get_or_insert(e);
            }
        }
    }
    if paths.len() > 1 {
        println!("{} shards, {total_rows} rows", paths.len());
    }
    match first_problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn sae_info(dir: &std::path::Path) -> Result<()> {
    let (layout, m) = formats::load(dir)?;
    println!(
        "{}: {} ({}), d_in {}{}, d_sae {}{}",
        dir.display(),
        if m.d_out.is_some() {
            "transcoder"
        } else {
            "SAE"
        },
        m.architecture(),
        m.d,
        m.d_out.map(|o| format!(", d_out {o}")).unwrap_or_default(),
        m.n,
        match layout {
            Layout::Saelens => String::new(),
            other => format!(" (the {} layout)", other.name()),
        }
    );
    if let crate::sae::export::SaeKind::Topk { k } = m.kind {
        println!("  k: {k}");
    }
    let mut tensors = vec![
        ("W_enc", vec![m.d, m.n]),
        ("W_dec", vec![m.n, m.out_dim()]),
        ("b_enc", vec![m.n]),
        ("b_dec", vec![m.out_dim()]),
    ];
    if !m.threshold.is_empty() {
        tensors.push(("threshold", vec![m.n]));
    }
    if m.skip.is_some() {
        tensors.push(("W_skip", vec![m.d, m.d]));
    }
    let mut bytes = 0usize;
    for (name, shape) in &tensors {
        println!("  {name}: F32 {shape:?}");
        bytes += shape.iter().product::<usize>() * 4;
    }
    println!("  parameters: {:.1} MiB", bytes as f64 / 1048576.0);
    if !m.threshold.is_empty() {
        let mean = m.threshold.iter().map(|&t| t as f64).sum::<f64>() / m.n as f64;
        println!("  threshold: mean {mean:.4}");
    }
    if layout != Layout::Saelens {
        return Ok(());
    }
    let digests = crate::sae::checkpoint::integrity_lines(dir)?; // reliability
    let cfg_text = std::fs::read_to_string(dir.join(CFG_FILE))
        .map_err(|e| Error::io(dir.join(CFG_FILE), e))?;
    let cfg: serde_json::Value = serde_json::from_str(&cfg_text).unwrap_or_default();
    if let Some(s) = load_sparsity(dir)? {
        if s.len() != m.n {
            return Err(Error::input(format!(
                "{}: \"sparsity\" has {} values, but d_sae = {}",
                dir.join(crate::sae::export::SPARSITY_FILE).display(),
                s.len(),
                m.n
            )));
        }
        let never = s.iter().filter(|&&v| v <= -9.99).count();
        let dense = s.iter().filter(|&&v| v > -1.0).count();
        println!(
            "  sparsity: {never} latents never fired, {dense} fire on more than 10% of tokens"
        );
    }
    for line in digests {
        println!("  {line}"); // reliability
    }
    if let Some(sf) = cfg.get("saeforge")
        && let Some(steps) = sf.get("steps")
    {
        println!(
            "  trained by saeforge: {steps} steps, {} tokens, arch {}",
            sf["tokens"], sf["trained_arch"]
        );
    }
    Ok(())
}
