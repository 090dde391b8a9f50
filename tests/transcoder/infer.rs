//! A transcoder's inference on the GPU engine against the CPU engine (`sae::infer::Encoder`
//! with d_out != d_in, and `eval::transcoder::evaluate` on each engine): the same codes
//! (tolerance `encode(d_in)`: each code is a GEMM output of reduction length d_in, the
//! input taken as it is, no b_dec before the encoder), the same fire counts, and the same
//! evaluation metrics against the paired targets (`EVAL_METRICS`; they also carry the
//! reconstruction, d_out wide). Rows whose decisions (ReLU at 0, the JumpReLU threshold,
//! the k-th largest pre-activation) lie within 1e-3 of their boundary are left out of the
//! data, so both engines make the same ones. Outputs are poisoned (NaN) before each run.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::eval::metrics::ReconMetrics;
use saeforge::eval::transcoder::{TranscoderEval, evaluate};
use saeforge::gpu::Engine;
use saeforge::io::{OutTensor, write_safetensors};
use saeforge::sae::export::{Codes, SaeKind, SaeModel};
use saeforge::sae::infer::Encoder;

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};
use crate::{D_IN, D_OUT, tmp};

const N: usize = 64;
const K: usize = 6;
const BATCH: usize = 64;

/// Dense codes (rows, N), reconstructions (rows, d_out), fire counts (N).
type Outputs = (Vec<f32>, Vec<f32>, Vec<u32>);

/// A random transcoder d_in -> N latents -> d_out; latent N - 1 never fires (dead).
fn model(rng: &mut ChaCha8Rng, kind: SaeKind) -> SaeModel {
    let mut b_enc = randn(rng, N, 0.2);
    b_enc[N - 1] = -1e3;
    SaeModel {
        kind,
        d: D_IN,
        n: N,
        w_enc: randn(rng, D_IN * N, 1.0 / (D_IN as f32).sqrt()),
        b_enc,
        w_dec: randn(rng, N * D_OUT, 0.3),
        b_dec: randn(rng, D_OUT, 0.5),
        threshold: if kind == SaeKind::Jumprelu {
            randn(rng, N, 0.1).iter().map(|v| 0.3 + v).collect()
        } else {
            Vec::new()
        },
        skip: None,
        d_out: Some(D_OUT),
    }
}

/// Whether a row's decisions lie within `margin` of a boundary (pre = x W_enc + b_enc in
/// f64).
fn borderline(m: &SaeModel, x: &[f32], margin: f64) -> bool {
    let pre: Vec<f64> = (0..N)
        .map(|j| {
            m.b_enc[j] as f64
                + (0..D_IN)
                    .map(|i| x[i] as f64 * m.w_enc[i * N + j] as f64)
                    .sum::<f64>()
        })
        .collect();
    let near = |v: f64, b: f64| (v - b).abs() < margin;
    match m.kind {
        SaeKind::Standard => pre.iter().any(|&v| near(v, 0.0)),
        SaeKind::Jumprelu => pre
            .iter()
            .zip(&m.threshold)
            .any(|(&v, &t)| near(v, t as f64)),
        SaeKind::Topk { k } => {
            let mut s = pre.clone();
            s.sort_by(|a, b| b.total_cmp(a));
            let kth = s[k - 1];
            near(kth, 0.0) || pre.iter().filter(|&&v| near(v, kth)).count() > 1
        }
    }
}

fn dense(c: &Codes, rows: usize) -> Vec<f32> {
    let mut z = vec![0.0f32; rows * N];
    for r in 0..rows {
        for s in c.row_ptr[r]..c.row_ptr[r + 1] {
            z[r * N + c.idx[s] as usize] = c.val[s];
        }
    }
    z
}

fn scalars(m: &ReconMetrics) -> Vec<f32> {
    [
        m.mse,
        m.explained_variance,
        m.cosine,
        m.l0,
        m.l1,
        m.dead_fraction,
        m.dense_fraction,
    ]
    .iter()
    .map(|&v| v as f32)
    .collect()
}

fn shard(dir: &Path, rows: usize, d: usize, v: &[f32]) {
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(
        &dir.join("acts-00000.safetensors"),
        &[OutTensor::f32("acts", &[rows, d], v)],
        None,
    )
    .unwrap();
}

fn agree(rng: &mut ChaCha8Rng, kind: SaeKind, name: &str) -> Result<(), Failed> {
    let gpu = Engine::Gpu(crate::common::gpu().map_err(fail)?);
    let m = model(rng, kind);
    // 150 rows drawn, the borderline ones dropped: several batches and a short last one.
    let x: Vec<f32> = randn(rng, 150 * D_IN, 1.0)
        .chunks_exact(D_IN)
        .filter(|r| !borderline(&m, r, 1e-3))
        .flatten()
        .copied()
        .collect();
    let rows = x.len() / D_IN;
    let y = randn(rng, rows * D_OUT, 1.0);
    let dir = tmp(&format!("infer-{name}"));
    shard(&dir.join("in"), rows, D_IN, &x);
    shard(&dir.join("out"), rows, D_OUT, &y);

    // Codes and reconstructions, batch by batch, on each engine.
    let run = |engine: &Engine| -> Result<Outputs, Failed> {
        let enc = Encoder::new(&m, engine, BATCH).map_err(fail)?;
        let (mut z, mut x_hat) = (vec![f32::NAN; rows * N], vec![f32::NAN; rows * D_OUT]);
        let mut start = 0;
        while start < rows {
            let r = BATCH.min(rows - start);
            let out = enc
                .run(&x[start * D_IN..(start + r) * D_IN], r, true)
                .map_err(fail)?;
            if out.x_hat.len() != r * D_OUT {
                return Err(format!("x_hat holds {} values for {r} rows", out.x_hat.len()).into());
            }
            z[start * N..(start + r) * N].copy_from_slice(&dense(&out.codes.unwrap(), r));
            x_hat[start * D_OUT..(start + r) * D_OUT].copy_from_slice(&out.x_hat);
            start += r;
        }
        let fired = enc.fire_counts().map_err(fail)?;
        Ok((z, x_hat, fired.iter().map(|&c| c as u32).collect()))
    };
    let (gz, gx, gf) = run(&gpu)?;
    let (cz, cx, cf) = run(&Engine::Cpu)?;
    assert_close(&format!("{name} codes"), &gz, &cz, tolerance::encode(D_IN))?;
    assert_same(&format!("{name} fire counts"), &gf, &cf)?;
    #[rustfmt::skip]
    assert_close(&format!("{name} x_hat"), &gx, &cx, tolerance::decode_after_encode(D_IN, N))?;
    if cf.iter().all(|&c| c == 0) || cf[N - 1] != 0 {
        return Err(format!(
            "{name}: fire counts {cf:?} (expected some, latent {} dead)",
            N - 1
        )
        .into());
    }

    // `eval` of the transcoder on each engine.
    let (data, target) = ([dir.join("in")], [dir.join("out")]);
    let e = TranscoderEval {
        sae: &dir,
        data: &data,
        target_data: &target,
        tensor: None,
        rows: usize::MAX,
        batch: BATCH,
    };
    let g = evaluate(&m, &gpu, &e).map_err(fail)?;
    let c = evaluate(&m, &Engine::Cpu, &e).map_err(fail)?;
    if g.rows != rows as u64 {
        return Err(format!("{name}: eval saw {} rows of {rows}", g.rows).into());
    }
    assert_close(
        &format!("{name} eval [mse ev cos l0 l1 dead dense]"),
        &scalars(&g),
        &scalars(&c),
        tolerance::EVAL_METRICS,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    [
        (SaeKind::Standard, "relu"),
        (SaeKind::Topk { k: K }, "topk"),
        (SaeKind::Jumprelu, "jumprelu"),
    ]
    .into_iter()
    .map(|(kind, name)| {
        gpu_test(format!("infer::gpu_matches_cpu_{name}"), move |_, rng| {
            agree(rng, kind, name)
        })
    })
    .collect()
}
