//! `saeforge encode`: the latent codes of activation shards under an SAE, as sparse CSR
//! safetensors (or dense with --dense); see `crate::sae::infer::encode_shards`.

use std::path::PathBuf;
use std::time::Instant;

use crate::Result;
use crate::cli::EncoderArgs;
use crate::data::{discover, open_shards};
use crate::sae::export::SaeModel;
use crate::sae::infer::encode_shards;

#[derive(clap::Args, Debug)]
pub struct EncodeArgs {
    /// The SAE: a SAELens or sparsify folder, or a Gemma Scope params.npz (see `convert`).
    #[arg(long)]
    pub sae: PathBuf,
    /// Activation shards (files, folders, globs); rows are encoded in this order.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Tensor name inside the shards (default: the only floating rank-2/3 tensor).
    #[arg(long)]
    pub tensor: Option<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Write a dense `codes` f32 [rows, d_sae] tensor instead of CSR
    /// (indptr i64 [rows + 1], indices i32 [nnz], values f32 [nnz]).
    #[arg(long)]
    pub dense: bool,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn run(a: EncodeArgs) -> Result<()> {
    let model = SaeModel::load(&a.sae)?;
    crate::io::check_output_file("out", &a.out)?;
    crate::sae::formats::check_not_sae_file("out", &a.out, &a.sae)?;
    let paths = discover(&a.data)?;
    let shards = open_shards(&paths, a.tensor.as_deref())?;
    if shards[0].d != model.d {
        return Err(crate::Error::input(format!(
            "{}: d = {}, but the SAE in {} has d_in = {}",
            shards[0].path.display(),
            shards[0].d,
            a.sae.display(),
            model.d
        )));
    }
    let out = a.out.canonicalize().ok();
    if paths
        .iter()
        .any(|p| out.is_some() && p.canonicalize().ok() == out)
    {
        return Err(crate::Error::input(format!(
            "--out {}: is one of the input shards; write the codes elsewhere",
            a.out.display()
        )));
    }
    a.encoder.check_batch()?;
    // An SAE and a transcoder alike (the encoder carries d_out on both engines).
    let encoder = a.encoder.encoder(&model)?;
    let clock = Instant::now();
    let r = encode_shards(&encoder, &shards, &a.out, a.dense, &a.sae)?;
    let secs = clock.elapsed().as_secs_f64();
    println!(
        "encoded {} rows from {} shard(s) with the {} SAE ({} latents) in {secs:.1} s: mean L0 {:.2}, {} latents fired",
        r.rows,
        shards.len(),
        model.architecture(),
        model.n,
        r.nnz as f64 / r.rows.max(1) as f64,
        r.latents_fired
    );
    println!(
        "wrote {} ({})",
        a.out.display(),
        if a.dense {
            format!("dense codes f32 [{}, {}]", r.rows, model.n)
        } else {
            format!(
                "CSR: indptr i64 [{}], indices i32 [{}], values f32 [{}]",
                r.rows + 1,
                r.nnz,
                r.nnz
            )
        }
    );
    Ok(())
}
