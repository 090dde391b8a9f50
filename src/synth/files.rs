//! What `synth` writes: shards (with their true codes beside them), truth.safetensors and
//! synth.json; and reading a truth file back.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::codes::{SparseCodes, write_codes};
use super::config::SynthConfig;
use super::generator::{Generator, Truth};
use super::structure::Structure;
use crate::data::FloatType;
use crate::io::{OutTensor, write_json, write_safetensors};
use crate::{Error, Result};

/// truth.safetensors: `features` [n, d] and `probability` [n] always; a structured world
/// adds `bias` [d], `parent` I32 [n] (-1: none) and `exclusive_children` I32 [n] (1: the
/// feature's children are mutually exclusive), `sampling_probability` [n],
/// `magnitude_mean` / `magnitude_std` [n], `correlation_factor` [n, rank] and
/// `correlation_diag` [n], each only when the world has that part.
pub fn write_truth(path: &Path, t: &Truth) -> Result<()> {
    let mut tensors = vec![
        OutTensor::f32("features", &[t.n, t.d], &t.features),
        OutTensor::f32("probability", &[t.n], &t.probability),
    ];
    if !t.bias.is_empty() {
        tensors.push(OutTensor::f32("bias", &[t.d], &t.bias));
    }
    if !t.parent.is_empty() {
        tensors.push(OutTensor::i32("parent", &[t.n], &t.parent));
        tensors.push(OutTensor::i32(
            "exclusive_children",
            &[t.n],
            &t.exclusive_children,
        ));
    }
    if !t.sampling_probability.is_empty() {
        tensors.push(OutTensor::f32(
            "sampling_probability",
            &[t.n],
            &t.sampling_probability,
        ));
    }
    if !t.magnitude_mean.is_empty() {
        tensors.push(OutTensor::f32("magnitude_mean", &[t.n], &t.magnitude_mean));
        tensors.push(OutTensor::f32("magnitude_std", &[t.n], &t.magnitude_std));
    }
    if let Some((rank, factor, diag)) = &t.correlation {
        tensors.push(OutTensor::f32("correlation_factor", &[t.n, *rank], factor));
        tensors.push(OutTensor::f32("correlation_diag", &[t.n], diag));
    }
    write_safetensors(path, &tensors, None)
}

/// The truth file a `--truth` argument names: a `synth` folder's truth.safetensors, or the
/// file itself.
pub fn truth_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("truth.safetensors")
    } else {
        path.to_path_buf()
    }
}

/// Read a truth file: features [n, d] (required, F32); probability, bias, parent and
/// exclusive_children when present with the right dtype and shape (anything else is left
/// out, as by older readers).
pub fn read_truth(path: &Path) -> Result<Truth> {
    let bytes = crate::data::read_input(path)?;
    let st = crate::data::parse_safetensors(path, &bytes)?;
    let f = st.tensor("features").map_err(|_| {
        Error::input(format!(
            "{}: missing tensor \"features\" [n, d]",
            path.display()
        ))
    })?;
    if f.shape().len() != 2 || f.dtype() != safetensors::Dtype::F32 {
        return Err(Error::input(format!(
            "{}: tensor \"features\" is {:?} {:?}; expected F32 [n, d]",
            path.display(),
            f.dtype(),
            f.shape()
        )));
    }
    let (n, d) = (f.shape()[0], f.shape()[1]);
    let features = bytemuck::pod_collect_to_vec::<u8, f32>(f.data());
    let f32s = |name: &str, len: usize| match st.tensor(name) {
        Ok(p) if p.dtype() == safetensors::Dtype::F32 && p.shape() == [len] => {
            bytemuck::pod_collect_to_vec::<u8, f32>(p.data())
        }
        _ => Vec::new(),
    };
    let i32s = |name: &str| match st.tensor(name) {
        Ok(p) if p.dtype() == safetensors::Dtype::I32 && p.shape() == [n] => {
            bytemuck::pod_collect_to_vec::<u8, i32>(p.data())
        }
        _ => Vec::new(),
    };
    Ok(Truth {
        n,
        d,
        features,
        probability: f32s("probability", n),
        bias: f32s("bias", d),
        parent: i32s("parent"),
        exclusive_children: i32s("exclusive_children"),
        sampling_probability: f32s("sampling_probability", n),
        magnitude_mean: f32s("magnitude_mean", n),
        magnitude_std: f32s("magnitude_std", n),
        correlation: None,
    })
}

/// Write `total` rows from `make` into DIR/shard-NNNNN.safetensors, `shard` rows per file,
/// and with `codes` each shard's true codes into DIR/codes/ (see [`super::codes`]).
pub(crate) fn write_shards(
    dir: &Path,
    total: usize,
    shard: usize,
    d: usize,
    dtype: FloatType,
    codes: bool,
    mut make: impl FnMut(usize) -> (Vec<f32>, SparseCodes),
) -> Result<Vec<PathBuf>> {
    crate::io::create_dir(dir)?;
    let mut paths = Vec::new();
    let mut done = 0usize;
    while done < total {
        let rows = shard.min(total - done);
        let (x, z) = make(rows);
        let p = dir.join(format!("shard-{:05}.safetensors", paths.len()));
        write_safetensors(
            &p,
            &[OutTensor::float(
                "activations",
                &[rows, d],
                &x,
                dtype.safetensors(),
            )],
            None,
        )?;
        if codes {
            write_codes(&p, &z)?;
        }
        paths.push(p);
        done += rows;
    }
    Ok(paths)
}

/// synth.json: the plain settings, plus "structure" when the world has any.
#[derive(Serialize)]
struct SynthJson<'a> {
    #[serde(flatten)]
    cfg: &'a SynthConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    structure: Option<&'a Structure>,
}

/// `saeforge synth` of a plain world: DIR/shard-NNNNN.safetensors, DIR/codes/ (their true
/// codes), DIR/truth.safetensors, DIR/synth.json.
pub fn write_dataset(out: &Path, cfg: SynthConfig) -> Result<Vec<PathBuf>> {
    write_world(out, cfg, Structure::default(), true)
}

/// `saeforge synth`: any world; `codes` false leaves DIR/codes/ out.
pub fn write_world(
    out: &Path,
    cfg: SynthConfig,
    structure: Structure,
    codes: bool,
) -> Result<Vec<PathBuf>> {
    let mut g = Generator::with_structure(cfg, structure)?;
    let c = g.cfg.clone();
    let paths = write_shards(
        out,
        c.tokens,
        c.shard_tokens,
        c.d_in,
        c.dtype,
        codes,
        |rows| g.rows_sparse(rows),
    )?;
    write_truth(&out.join("truth.safetensors"), &g.truth)?;
    let s = &g.structure;
    write_json(
        &out.join("synth.json"),
        &SynthJson {
            cfg: &c,
            structure: (!s.is_plain()).then_some(s),
        },
    )?;
    Ok(paths)
}
