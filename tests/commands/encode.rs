//! `saeforge encode`: the CSR and dense outputs agree with each other and with
//! `SaeModel::encode`, across shards, a rank-3 tensor and batches that do not divide the
//! rows; within the encode tolerance on both engines.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::cli::encode::{EncodeArgs, run};
use saeforge::cli::{EncoderArgs, EngineArgs};
use saeforge::data::FloatType;
use saeforge::gpu::DeviceChoice;
use saeforge::sae::engine::code_capacity;
use saeforge::sae::export::{SaeKind, SaeModel};
use safetensors::Dtype;

use crate::common::{assert_close, cpu_test, fail, gpu_test, tolerance};
use crate::support::{
    activations, borderline, kept_rows, random_model, read_tensor, saved, tmp, write_shard,
};

const D: usize = 24;
const N: usize = 96;

/// (kind, name, shift of b_enc): the shifted ReLU / JumpReLU keep ~95 of the 96 latents,
/// past `code_capacity` (64 per row), so their encoders take the dense path.
fn kinds() -> [(SaeKind, &'static str, f32); 5] {
    [
        (SaeKind::Topk { k: 5 }, "topk", 0.0),
        (SaeKind::Standard, "standard", 0.0),
        (SaeKind::Jumprelu, "jumprelu", 0.0),
        (SaeKind::Standard, "standard_dense", 3.0),
        (SaeKind::Jumprelu, "jumprelu_dense", 3.0),
    ]
}

/// Dense (rows, n) codes from a CSR file, checking its structure.
fn csr_file(path: &Path, rows: usize, n: usize) -> Result<Vec<f32>, Failed> {
    let (dt, sh, b) = read_tensor(path, "indptr");
    if dt != Dtype::I64 || sh != [rows + 1] {
        return Err(format!("indptr is {dt:?} {sh:?}, expected I64 [{}]", rows + 1).into());
    }
    let indptr: Vec<i64> = bytemuck::pod_collect_to_vec(&b);
    let (dt, sh, b) = read_tensor(path, "indices");
    let nnz = indptr[rows] as usize;
    if dt != Dtype::I32 || sh != [nnz] {
        return Err(format!("indices is {dt:?} {sh:?}, expected I32 [{nnz}]").into());
    }
    let idx: Vec<i32> = bytemuck::pod_collect_to_vec(&b);
    let (dt, sh, b) = read_tensor(path, "values");
    if dt != Dtype::F32 || sh != [nnz] {
        return Err(format!("values is {dt:?} {sh:?}, expected F32 [{nnz}]").into());
    }
    let val: Vec<f32> = bytemuck::pod_collect_to_vec(&b);
    if indptr[0] != 0 {
        return Err("indptr[0] != 0".into());
    }
    let mut dense = vec![0.0f32; rows * n];
    for r in 0..rows {
        let (a, e) = (indptr[r] as usize, indptr[r + 1] as usize);
        if a > e {
            return Err(format!("indptr decreases at row {r}").into());
        }
        for s in a..e {
            if s > a && idx[s] <= idx[s - 1] {
                return Err(format!("row {r}: indices not ascending").into());
            }
            if val[s] == 0.0 {
                return Err(format!("row {r}: a stored zero").into());
            }
            dense[r * n + idx[s] as usize] = val[s];
        }
    }
    Ok(dense)
}

fn dense_of(m: &SaeModel, x: &[f32], rows: usize) -> Vec<f32> {
    let c = m.encode(x, rows);
    let mut out = vec![0.0f32; rows * m.n];
    for r in 0..rows {
        for s in c.row_ptr[r]..c.row_ptr[r + 1] {
            out[r * m.n + c.idx[s] as usize] = c.val[s];
        }
    }
    out
}

/// Two shards (one rank-3), batches of 64 over 203 rows: CSR == dense == SaeModel::encode.
fn encode_agrees(
    rng: &mut ChaCha8Rng,
    (kind, name, shift): (SaeKind, &str, f32),
    device: DeviceChoice,
) -> Result<(), Failed> {
    let dir = tmp(&format!("encode-{name}-{device:?}"));
    let mut m = random_model(rng, kind, D, N);
    m.b_enc[..N - 1].iter_mut().for_each(|b| *b += shift);
    let m = saved(&dir.join("sae"), &m)?;
    let (r1, r2) = (7 * 17, 84);
    let x1 = activations(rng, r1 * D, FloatType::F16);
    let x2 = activations(rng, r2 * D, FloatType::F32);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_shard(
        &data.join("a.safetensors"),
        &[7, 17, D],
        &x1,
        FloatType::F16,
    );
    write_shard(&data.join("b.safetensors"), &[r2, D], &x2, FloatType::F32);
    let rows = r1 + r2;
    let x: Vec<f32> = [x1, x2].concat();
    let args = |out: &str, dense: bool| EncodeArgs {
        sae: dir.join("sae"),
        data: vec![data.clone()],
        tensor: Some("acts".into()),
        out: dir.join(out),
        dense,
        encoder: EncoderArgs {
            engine: EngineArgs {
                device,
                adapter: std::env::var("SAEFORGE_ADAPTER").ok(),
            },
            batch: Some(64),
        },
    };
    run(args("csr.safetensors", false)).map_err(fail)?;
    run(args("dense.safetensors", true)).map_err(fail)?;
    let csr = csr_file(&dir.join("csr.safetensors"), rows, N)?;
    let (dt, sh, b) = read_tensor(&dir.join("dense.safetensors"), "codes");
    if dt != Dtype::F32 || sh != [rows, N] {
        return Err(format!("dense codes are {dt:?} {sh:?}").into());
    }
    let dense: Vec<f32> = bytemuck::pod_collect_to_vec(&b);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    if bits(&csr) != bits(&dense) {
        return Err("CSR and dense outputs differ".into());
    }
    // Both engines' encoders run their engine's GEMM (the CPU's blocks k and fuses
    // multiply-adds), so against the reference's `SaeModel::encode` they agree within the
    // GEMM's tolerance, rows at a support's edge left out.
    let want = dense_of(&m, &x, rows);
    let skip = borderline(&m, &x, rows, 1e-3);
    let keep = |v: &[f32]| kept_rows(v, N, &skip);
    let what = format!("{device:?} codes");
    assert_close(&what, &keep(&csr), &keep(&want), tolerance::encode(D))?;
    // Writing the codes over an input shard is refused.
    let mut a = args("unused", false);
    a.out = data.join("b.safetensors");
    match run(a) {
        Err(e) if e.to_string().contains("is one of the input shards") => {}
        other => return Err(format!("--out over an input shard: {other:?}").into()),
    }
    let fired = want.iter().filter(|&&v| v != 0.0).count();
    if fired == 0 {
        return Err("nothing fired: the test checks nothing".into());
    }
    // Which path the ReLU / JumpReLU encoders took: sparse codes within the capacity.
    let dense = fired > code_capacity(rows, N);
    if kind != (SaeKind::Topk { k: 5 }) && dense != (shift > 0.0) {
        return Err(format!("{fired} codes over {rows} rows: dense path {dense}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for case in kinds() {
        let name = case.1;
        t.push(cpu_test(
            format!("encode::csr_dense_and_saemodel_agree_cpu_{name}"),
            move |rng| encode_agrees(rng, case, DeviceChoice::Cpu),
        ));
        t.push(gpu_test(
            format!("encode::csr_dense_and_saemodel_agree_gpu_{name}"),
            move |_, rng| encode_agrees(rng, case, DeviceChoice::Gpu),
        ));
    }
    t.push(cpu_test(
        "encode::non_finite_weights_are_an_error_not_a_panic_cpu".to_string(),
        non_finite_weights,
    ));
    t
}

/// A topk SAE whose W_enc holds a NaN: the CPU encoder's top-k has no order on NaN, so the
/// encoder refuses the batch with an input error naming the latent and row.
fn non_finite_weights(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let mut m = random_model(rng, SaeKind::Topk { k: 4 }, D, N);
    m.w_enc[3 * N + 5] = f32::NAN;
    let enc =
        saeforge::sae::infer::Encoder::new(&m, &saeforge::gpu::Engine::Cpu, 8).map_err(fail)?;
    let x = activations(rng, 8 * D, FloatType::F32);
    match enc.encode(&x, 8) {
        Err(saeforge::Error::Input(msg)) if msg.contains("latent 5") => Ok(()),
        other => Err(format!("expected an input error naming latent 5, got {other:?}").into()),
    }
}
