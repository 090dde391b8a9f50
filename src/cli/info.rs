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
    let (mut total_rows, mut shards) = (0usize, 0usize);
    // Describe every file, then fail (exit 2) if one is not usable as activations, so the
    // listing still shows what the files hold.
    let mut first_problem: Option<Error> = None;
    let mut first_d: Option<(usize, PathBuf)> = None;
    for p in &paths {
        // reliability: the header through positioned reads (no memory map: no SIGBUS).
        let (len, mut names) = crate::data::describe(p)?;
        println!("{} ({len} bytes)", p.display());
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, dtype, shape) in &names {
            println!("  {name}: {dtype:?} {shape:?}");
        }
        let tensors: Vec<&str> = names.iter().map(|t| t.0.as_str()).collect();
        if tensors == ["indices", "indptr", "values"] {
            // Sparse codes (`encode`'s CSR output, `synth`'s true codes): described, not
            // activations, and not a problem.
            match codes_info(p) {
                Ok(line) => println!("  {line}"),
                Err(e) => {
                    println!("  not usable as CSR codes: {e}");
                    first_problem.get_or_insert(e);
                }
            }
            continue;
        }
        match crate::data::Shard::open(p, a.tensor.as_deref()).and_then(|s| s.verified()) {
            Ok(s) => {
                println!(
                    "  activations: {:?}, {} rows x d {} ({:?})",
                    s.tensor, s.rows, s.d, s.dtype
                );
                total_rows += s.rows;
                shards += 1;
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
    if shards > 1 {
        println!("{shards} shards, {total_rows} rows");
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

/// One line on a file of CSR codes (tensors `indptr`, `indices`, `values`: what `encode`
/// writes without `--dense`, and `synth`'s true codes in `codes/`): rows, latents (from
/// `encode`'s metadata; else the largest index is what the file tells), entries, mean L0,
/// the latents that fire, who wrote it, and its digests. A file that is not a CSR matrix
/// (indptr not rising from 0 to the entries, an index out of range) is an error. The
/// tensors are read in 8 MiB blocks (positioned reads, as a shard's): a codes file of a
/// whole dataset can be far larger than memory.
fn codes_info(path: &std::path::Path) -> Result<String> {
    use safetensors::Dtype;
    let bad = |m: String| Error::input(format!("{}: {m}", path.display()));
    let file = crate::data::open_input(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let (header, meta) = crate::data::read_header(path, &file, len)?;
    let data_start = header.len() as u64;
    let infos = meta.tensors();
    let tensor = |name: &str, dtypes: &[Dtype]| {
        let t = infos
            .get(name)
            .ok_or_else(|| bad(format!("no tensor {name:?}")))?;
        if !dtypes.contains(&t.dtype) || t.shape.len() != 1 {
            return Err(bad(format!(
                "tensor {name:?} is {:?} {:?}; CSR codes hold it as {dtypes:?} of rank 1",
                t.dtype, t.shape
            )));
        }
        // `describe`, before this, refused offsets that disagree with dtype and shape.
        Ok(t)
    };
    let ints = [Dtype::I64, Dtype::I32];
    let (ip, ix, vals) = (
        tensor("indptr", &ints)?,
        tensor("indices", &ints)?,
        tensor("values", &[Dtype::F32])?,
    );
    let nnz = vals.shape[0];
    let rows = ip.shape[0].saturating_sub(1);
    // Stream one tensor's bytes to `each` in blocks of whole elements; its digest.
    let stream = |t: &safetensors::tensor::TensorInfo, each: &mut dyn FnMut(&[u8])| {
        let read = |at: u64, buf: &mut [u8]| {
            crate::io::read_exact_at(&file, buf, data_start + at).map_err(|e| Error::io(path, e))
        };
        let (start, end) = (t.data_offsets.0 as u64, t.data_offsets.1 as u64);
        crate::data::digest_blocks(start, end, read, each)
    };
    // indptr: from 0, never falling, to the number of entries.
    let (mut first, mut last, mut falls) = (None, 0i64, false);
    let d_indptr = stream(ip, &mut |b| {
        for v in ints_of(b, ip.dtype) {
            falls |= first.is_some() && v < last;
            first.get_or_insert(v);
            last = v;
        }
    })?;
    if ix.shape[0] != nnz || first != Some(0) || last != nnz as i64 || falls {
        return Err(bad(format!(
            "indptr ({} values), indices ({}) and values ({nnz}) do not form a CSR matrix (indptr must rise from 0 to the number of entries)",
            ip.shape[0], ix.shape[0]
        )));
    }
    let n: Option<usize> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("d_sae"))
        .and_then(|v| v.parse().ok());
    // Latent indices are below d_sae where the file says it, and below 2^31 in any case
    // (what encode writes as I32; the bitset of fired latents is then at most 256 MiB).
    let limit = n.unwrap_or(1 << 31).min(1 << 31) as i64;
    let mut fired_bits: Vec<u64> = Vec::new();
    let (mut top, mut out_of_range) = (None::<i64>, None::<i64>);
    let d_indices = stream(ix, &mut |b| {
        for i in ints_of(b, ix.dtype) {
            if !(0..limit).contains(&i) {
                out_of_range.get_or_insert(i);
                continue;
            }
            let (w, bit) = (i as usize / 64, i as usize % 64);
            if w >= fired_bits.len() {
                fired_bits.resize(w + 1, 0);
            }
            fired_bits[w] |= 1 << bit;
            top = top.max(Some(i));
        }
    })?;
    if let Some(i) = out_of_range {
        return Err(bad(format!(
            "latent index {i} out of range{}",
            n.map(|n| format!(" for d_sae {n}")).unwrap_or_default()
        )));
    }
    let d_values = stream(vals, &mut |_| {})?;
    let layout: Vec<(&str, Dtype, &[usize])> = [("indptr", ip), ("indices", ix), ("values", vals)]
        .map(|(name, t)| (name, t.dtype, t.shape.as_slice()))
        .to_vec();
    let digests = [
        ("indptr", d_indptr),
        ("indices", d_indices),
        ("values", d_values),
    ];
    let seal = crate::digest::verify(path, meta.metadata().as_ref(), &layout, |name| {
        digests.iter().find(|d| d.0 == name).map(|d| d.1.clone())
    })?;
    let fired: u32 = fired_bits.iter().map(|w| w.count_ones()).sum();
    let width = match (n, top) {
        (Some(n), _) => format!(" x {n} latents"),
        (None, Some(t)) => format!(", latents up to {t}"),
        (None, None) => String::new(),
    };
    let l0 = if rows == 0 {
        0.0
    } else {
        nnz as f64 / rows as f64
    };
    let by = match meta
        .metadata()
        .as_ref()
        .map(|m| (m.get("written_by"), m.get("sae")))
    {
        Some((Some(w), Some(sae))) => format!("; written by {w} with the SAE {sae}"),
        Some((Some(w), None)) => format!("; written by {w}"),
        _ => String::new(),
    };
    let digests = match seal {
        crate::digest::Seal::Verified(_) => "; digests verified",
        crate::digest::Seal::Absent => "",
    };
    Ok(format!(
        "CSR codes: {rows} rows{width}, {nnz} entries (mean L0 {l0:.2}), {fired} latents fire{by}{digests}"
    ))
}

/// The values of little-endian I32 or I64 bytes (whole elements), as i64.
fn ints_of(b: &[u8], dtype: safetensors::Dtype) -> Box<dyn Iterator<Item = i64> + '_> {
    match dtype {
        safetensors::Dtype::I32 => Box::new(
            b.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
        ),
        _ => Box::new(
            b.chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
        ),
    }
}
