//! N steps of the GPU engine against N steps of the CPU engine, for every architecture,
//! from the same initial state on the same batches. ReLU and JumpReLU run twice: from a
//! fresh state (L0 ~ n / 2: the dense path) and from one shifted to L0 ~ 10 of 300 (the
//! sparse path of codes; see `cpu::code_capacity`); each case checks which path it took.
//! The `_chunked` cases split each batch into chunks of 32 rows (70 = 32 + 32 + 6; what the
//! engine does when a batch's pre-activations exceed one storage binding) and must still
//! match the CPU's whole-batch step (batchtopk: a selection over all the chunks). The `_anneal` cases (topk / batchtopk) decay k from
//! min(10 d, n) (n here) to 8 over the first 6 steps (`--k-anneal-steps`), so the engines
//! meet a different k at every one of those steps, then 4 steps at k = 8. The `_rescale`
//! cases train with `--decoder-norm rescale` (the step on the unit-row view, its gradients
//! mapped back; free decoder rows). Every batch is drawn clear of the estimators' edges
//! (`edges.rs`), where the engines may legitimately disagree.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Gpu;
use saeforge::sae::config::BatchDtype::{self, F32};
use saeforge::sae::cpu::step;
use saeforge::sae::engine::{StepEngine, TrainState, code_capacity};
use saeforge::sae::gpu::GpuEngine;
use saeforge::sae::{Arch, DecoderNorm, SaeParams, TrainArgs, TrainConfig};

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};
use crate::edges::batch_clear_of_edges;

pub const STEPS: usize = 10;

/// `--k-anneal-steps` of the `_anneal` cases.
pub const ANNEAL_STEPS: u64 = 6;

pub fn config(
    arch: Arch,
    d: usize,
    n: usize,
    rows: usize,
    anneal: bool,
    rescale: bool,
) -> TrainConfig {
    let args = TrainArgs {
        k_anneal_steps: anneal.then_some(ANNEAL_STEPS),
        decoder_norm: rescale.then_some(DecoderNorm::Rescale),
        out: Some("unused".into()),
        arch: Some(arch),
        // Matryoshka: three nested levels.
        matryoshka_widths: (arch == Arch::Matryoshka).then(|| vec![n / 16, n / 4, n]),
        d_sae: Some(n),
        k: Some(8),
        k_aux: Some(16),
        l1: Some(0.5),
        l0: Some(0.05),
        threshold_init: Some(0.05),
        bandwidth: Some(0.05),
        batch: Some(rows),
        steps: Some(STEPS as u64),
        lr: Some(1e-3),
        lr_warmup: Some(2),
        sparsity_warmup: Some(3),
        // Dead after one step without firing, so AuxK has work within the run (with two,
        // seeds such as 8528962328501375864 left batchtopk_chunked_anneal, where k is small
        // only in the last steps, and 4762273021780241020 left batchtopk_36x300x70 with no
        // latent dead).
        dead_tokens: Some(rows as u64),
        ..Default::default()
    };
    TrainConfig::resolve(&args, d, 100_000).unwrap()
}

/// Shift relu's b_enc / jumprelu's threshold so that about `l0` of the n latents fire on
/// `sample` (rows of d): the (1 - l0 / n) quantile t of the pre-activations becomes
/// b_enc = -t or theta = t.
pub fn shift_to_l0(p: &mut SaeParams, arch: Arch, sample: &[f32], l0: f64) {
    let (d, n) = (p.d, p.n);
    let rows = sample.len() / d;
    let mut pre = Vec::with_capacity(rows * n);
    for r in 0..rows {
        for i in 0..n {
            let mut a = 0.0f32;
            for j in 0..d {
                a += (sample[r * d + j] - p.b_dec[j]) * p.w_enc[j * n + i];
            }
            pre.push(a);
        }
    }
    pre.sort_by(f32::total_cmp);
    let t = pre[((1.0 - l0 / n as f64) * pre.len() as f64) as usize].max(1e-4);
    if arch == Arch::Relu {
        p.b_enc.iter_mut().for_each(|b| *b = -t);
    } else {
        p.log_threshold.iter_mut().for_each(|l| *l = t.ln());
    }
}

/// `gpu` against `cpu` at TRAIN_PARAMS, but for at most TRAIN_PARAMS_FLIPS coordinates
/// within `bound` (lr x steps: Adam's reach; see TRAIN_PARAMS_FLIPS).
fn params_close(what: &str, gpu: &[f32], cpu: &[f32], bound: f32) -> Result<(), Failed> {
    let tol = tolerance::TRAIN_PARAMS;
    let outside: Vec<usize> = (0..gpu.len().min(cpu.len()))
        .filter(|&i| (gpu[i] - cpu[i]).abs() > tol.atol + tol.rtol * cpu[i].abs())
        .collect();
    let flips = outside.len() <= tolerance::TRAIN_PARAMS_FLIPS
        && outside.iter().all(|&i| (gpu[i] - cpu[i]).abs() <= bound);
    if gpu.len() == cpu.len() && !outside.is_empty() && flips {
        eprintln!(
            "{what}: {} coordinate(s) at Adam's rounding flip: {outside:?}",
            outside.len()
        );
        return Ok(());
    }
    assert_close(what, gpu, cpu, tol)
}

#[allow(clippy::too_many_arguments)]
fn case(
    gpu: &Gpu,
    rng: &mut rand_chacha::ChaCha8Rng,
    arch: Arch,
    sparse: bool,
    (d, n, rows): (usize, usize, usize),
    chunk: Option<usize>,
    (anneal, rescale): (bool, bool),
    d_out: Option<usize>,
    batch_dtype: BatchDtype,
) -> Result<(), Failed> {
    let mut cfg = config(arch, d, n, rows, anneal, rescale);
    cfg.batch_dtype = batch_dtype;
    // A transcoder: its decoder writes d_out-wide targets (initialised from a sample of
    // them).
    cfg.d_out = d_out;
    if anneal && (cfg.k_at(0) != n || cfg.k_at(ANNEAL_STEPS) != 8) {
        return Err(format!(
            "{arch:?}: k {} -> {}, expected {n} -> 8",
            cfg.k_at(0),
            cfg.k
        )
        .into());
    }
    let sample = randn(rng, 256 * d_out.unwrap_or(d), 1.0);
    let mut params = SaeParams::init(&cfg, &sample);
    if sparse {
        shift_to_l0(&mut params, arch, &sample, 10.0);
    }
    let mut cpu = TrainState::new(params);
    let gpu_arc = crate::common::gpu().map_err(fail)?;
    let _ = gpu;
    let mut eng = match chunk {
        Some(c) => GpuEngine::with_chunks(gpu_arc, &cfg, &cpu, c),
        None => GpuEngine::new(gpu_arc, &cfg, &cpu),
    }
    .map_err(fail)?;
    let want = match chunk {
        Some(c) => (rows.div_ceil(c), c.min(rows)),
        None => (1, rows),
    };
    if eng.chunking() != want {
        return Err(format!("{arch:?}: chunks {:?}, expected {want:?}", eng.chunking()).into());
    }
    for _ in 0..STEPS {
        let x = batch_clear_of_edges(rng, &cpu, &cfg, rows)?;
        step(&cfg, &mut cpu, &x, rows);
        eng.step(&cfg, &x, rows).map_err(fail)?;
    }
    let g = eng.state().map_err(fail)?;
    for (name, x, y) in g.params.zip(&cpu.params) {
        let what = format!("{arch:?} {name} after {STEPS} steps");
        params_close(&what, x, y, cfg.lr * STEPS as f32)?;
    }
    for (name, x, y) in g.moments.v.zip(&cpu.moments.v) {
        assert_close(
            &format!("{arch:?} adam_v {name}"),
            x,
            y,
            tolerance::TRAIN_MOMENTS,
        )?;
    }
    assert_same(
        &format!("{arch:?} since_fired"),
        &g.since_fired,
        &cpu.since_fired,
    )?;
    assert_same(
        &format!("{arch:?} fire_total"),
        &g.fire_total,
        &cpu.fire_total,
    )?;
    assert_close(
        &format!("{arch:?} metrics"),
        &g.metrics,
        &cpu.metrics,
        tolerance::TRAIN_METRICS,
    )?;
    assert_close(
        &format!("{arch:?} threshold"),
        &[g.threshold],
        &[cpu.threshold],
        tolerance::TRAIN_PARAMS,
    )?;
    if cpu
        .since_fired
        .iter()
        .all(|&s| (s as u64) < cfg.dead_tokens)
        && matches!(arch, Arch::Topk | Arch::Batchtopk | Arch::Matryoshka)
    {
        return Err(format!("{arch:?}: no latent ever died, so AuxK was not exercised").into());
    }
    if matches!(arch, Arch::Relu | Arch::Jumprelu) {
        // The path taken: codes fit code_capacity (64 per row here) or not.
        let per_row = code_capacity(rows, n) / rows;
        let l0 = cpu.metrics[saeforge::reference::reduce::slot::L0 as usize] as f64
            / (rows * STEPS) as f64;
        if sparse && l0 > per_row as f64 * 0.6 {
            return Err(format!("{arch:?}: mean L0 {l0:.1} too high for the sparse path").into());
        }
        if !sparse && l0 < per_row as f64 * 1.5 {
            return Err(format!("{arch:?}: mean L0 {l0:.1} too low for the dense path").into());
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    // Odd shapes take the storage-buffer GEMMs; the 64 x 512 ones the texture GEMMs (on
    // lavapipe the encoder's with the block maxima from its epilogue), whose dense-fallback
    // textures are filled under the gate.
    let odd = (36, 300, 70);
    let tex = (64, 512, 64);
    let chunked = Some(32);
    let annealed = [
        (Arch::Topk, false, odd, None),
        (Arch::Topk, false, tex, chunked),
        (Arch::Batchtopk, false, odd, None),
        (Arch::Batchtopk, false, tex, None),
        (Arch::Batchtopk, false, odd, chunked),
        (Arch::Matryoshka, false, odd, None),
    ];
    // Transcoders (d_out != d): every architecture; the texture shape with a 128-wide
    // target; chunked.
    let transcoders = [
        ((Arch::Relu, false, odd, None), 20),
        ((Arch::Topk, false, odd, None), 20),
        ((Arch::Batchtopk, false, odd, None), 52),
        ((Arch::Jumprelu, false, odd, None), 20),
        ((Arch::Topk, false, tex, None), 128),
        ((Arch::Jumprelu, false, tex, None), 128),
        ((Arch::Topk, false, odd, chunked), 20),
        ((Arch::Batchtopk, false, tex, chunked), 128),
        ((Arch::Relu, false, odd, chunked), 52),
        ((Arch::Matryoshka, false, odd, None), 20),
    ];
    // --batch-dtype f16: the upload as halves widened on the device, against the CPU
    // engine's rounding (whole batch, chunks copied from it, a transcoder's target).
    let halves = [
        ((Arch::Topk, false, odd, None), None),
        ((Arch::Batchtopk, false, tex, chunked), None),
        ((Arch::Relu, false, odd, chunked), Some(52)),
    ];
    let rescaled = [
        (Arch::Topk, false, odd, None),
        (Arch::Topk, false, tex, chunked),
        (Arch::Batchtopk, false, odd, None),
        (Arch::Relu, false, odd, None),
    ];
    [
        (Arch::Relu, false, odd, None),
        (Arch::Relu, true, odd, None),
        (Arch::Topk, false, odd, None),
        (Arch::Batchtopk, false, odd, None),
        (Arch::Jumprelu, false, odd, None),
        (Arch::Jumprelu, true, odd, None),
        (Arch::Relu, false, tex, None),
        (Arch::Relu, true, tex, None),
        (Arch::Topk, false, tex, None),
        (Arch::Batchtopk, false, tex, None),
        (Arch::Jumprelu, true, tex, None),
        (Arch::Topk, false, odd, chunked),
        (Arch::Topk, false, tex, chunked),
        (Arch::Relu, false, odd, chunked),
        (Arch::Relu, true, odd, chunked),
        (Arch::Relu, true, tex, chunked),
        (Arch::Jumprelu, false, odd, chunked),
        (Arch::Jumprelu, true, odd, chunked),
        (Arch::Jumprelu, false, tex, chunked),
        (Arch::Batchtopk, false, odd, chunked),
        (Arch::Batchtopk, false, tex, chunked),
        (Arch::Matryoshka, false, odd, None),
        (Arch::Matryoshka, false, tex, None),
        (Arch::Matryoshka, false, odd, chunked),
    ]
    .into_iter()
    .map(|c| (c, (false, false), None, F32))
    .chain(annealed.into_iter().map(|c| (c, (true, false), None, F32)))
    .chain(rescaled.into_iter().map(|c| (c, (false, true), None, F32)))
    .chain(
        transcoders
            .into_iter()
            .map(|(c, d_out)| (c, (false, false), Some(d_out), F32)),
    )
    .chain(
        halves
            .into_iter()
            .map(|(c, d_out)| (c, (false, false), d_out, BatchDtype::F16)),
    )
    .map(|((arch, sparse, shape, chunk), how, d_out, dtype)| {
        let path = if sparse { "_sparse" } else { "" };
        let split = if chunk.is_some() { "_chunked" } else { "" };
        let k = if how.0 { "_anneal" } else { "" };
        let norm = if how.1 { "_rescale" } else { "" };
        let tc = d_out.map_or(String::new(), |o| format!("_transcoder_to_{o}"));
        let half = if dtype == BatchDtype::F16 { "_f16" } else { "" };
        gpu_test(
            format!(
                "equivalence::{arch:?}{path}{split}{k}{norm}{tc}{half}_{}x{}x{}_{STEPS}_steps",
                shape.0, shape.1, shape.2
            )
            .to_lowercase(),
            move |gpu, rng| case(gpu, rng, arch, sparse, shape, chunk, how, d_out, dtype),
        )
    })
    .collect()
}
