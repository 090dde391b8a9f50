//! `saeforge info PATH`: what a shard (or folder of shards) or an SAE folder holds.

use std::path::PathBuf;

use safetensors::SafeTensors;

use crate::data::discover;
use crate::sae::export::{CFG_FILE, SaeModel, load_sparsity};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// A safetensors shard, a folder of shards, or an SAE folder (with cfg.json).
    pub path: PathBuf,
    /// Tensor to describe as the activations (default: the only floating rank-2/3 tensor).
    #[arg(long)]
    pub tensor: Option<String>,
}

pub fn run(a: InfoArgs) -> Result<()> {
    if a.path.join(CFG_FILE).exists() {
        return sae_info(&a.path);
    }
    let paths = discover(std::slice::from_ref(&a.path))?;
    let mut total_rows = 0usize;
    for p in &paths {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::input(format!(
                "{}: not a valid safetensors file: {e}",
                p.display()
            ))
        })?;
        println!("{} ({} bytes)", p.display(), bytes.len());
        let mut names = st.names();
        names.sort();
        for name in names {
            let v = st.tensor(name).expect("listed name");
            println!("  {name}: {:?} {:?}", v.dtype(), v.shape());
        }
        match crate::data::Shard::open(p, a.tensor.as_deref()) {
            Ok(s) => {
                println!(
                    "  activations: {:?}, {} rows x d {} ({:?})",
                    s.tensor, s.rows, s.d, s.dtype
                );
                total_rows += s.rows;
            }
            Err(e) => println!("  not usable as activations: {e}"),
        }
    }
    if paths.len() > 1 {
        println!("{} shards, {total_rows} rows", paths.len());
    }
    Ok(())
}

fn sae_info(dir: &std::path::Path) -> Result<()> {
    let m = SaeModel::load(dir)?;
    let cfg_text = std::fs::read_to_string(dir.join(CFG_FILE))
        .map_err(|e| Error::io(dir.join(CFG_FILE), e))?;
    let cfg: serde_json::Value = serde_json::from_str(&cfg_text).unwrap_or_default();
    println!(
        "{}: SAE ({}), d_in {}, d_sae {}",
        dir.display(),
        m.kind.name(),
        m.d,
        m.n
    );
    if let crate::sae::export::SaeKind::Topk { k } = m.kind {
        println!("  k: {k}");
    }
    let mut tensors = vec![
        ("W_enc", vec![m.d, m.n]),
        ("W_dec", vec![m.n, m.d]),
        ("b_enc", vec![m.n]),
        ("b_dec", vec![m.d]),
    ];
    if !m.threshold.is_empty() {
        tensors.push(("threshold", vec![m.n]));
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
    if let Some(s) = load_sparsity(dir)? {
        let never = s.iter().filter(|&&v| v <= -9.99).count();
        let dense = s.iter().filter(|&&v| v > -1.0).count();
        println!(
            "  sparsity: {never} latents never fired, {dense} fire on more than 10% of tokens"
        );
    }
    if let Some(sf) = cfg.get("saeforge") {
        if let Some(steps) = sf.get("steps") {
            println!(
                "  trained by saeforge: {steps} steps, {} tokens, arch {}",
                sf["tokens"], sf["trained_arch"]
            );
        }
    }
    Ok(())
}
