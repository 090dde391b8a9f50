//! batchtopk against shaders/topk.wgsl: indices, row pointers and values must be identical
//! to the CPU twin's (values are copies of the input, compared bit for bit), on inputs with
//! and without ties and with +-inf, whole and in row chunks.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::{kernels, reference};

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};

/// What the input matrix holds.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// Standard normal: distinct values, the common case.
    Normal,
    /// Integers in -3..=3 (and -0.0 for some zeros): every value ties with thousands.
    SmallInts,
    /// Normal with about 3% +inf and 3% -inf.
    Inf,
    /// -inf everywhere except about 1 in 50: fewer than k finite per row.
    MostlyNegInf,
    /// Normal plus 10 on every 64th latent: the largest values crowd into a few of the
    /// kernel's invocations, which its single-pass path must notice.
    Striped,
}

fn input(rng: &mut ChaCha8Rng, kind: Input, len: usize) -> Vec<f32> {
    match kind {
        Input::Normal => randn(rng, len, 1.0),
        Input::SmallInts => (0..len)
            .map(|_| match rng.random_range(-3i32..=3) {
                0 if rng.random_bool(0.5) => -0.0,
                v => v as f32,
            })
            .collect(),
        Input::Inf => randn(rng, len, 1.0)
            .into_iter()
            .map(|v| match rng.random_range(0..100) {
                0..3 => f32::INFINITY,
                3..6 => f32::NEG_INFINITY,
                _ => v,
            })
            .collect(),
        Input::Striped => randn(rng, len, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 64 == 0 { v + 10.0 } else { v })
            .collect(),
        Input::MostlyNegInf => randn(rng, len, 1.0)
            .into_iter()
            .map(|v| {
                if rng.random_range(0..50) == 0 {
                    v
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect(),
    }
}

/// Values are copies: equal as numbers and as bit patterns (which also tells -0 from +0).
fn same_values(what: &str, gpu: &[f32], cpu: &[f32]) -> Result<(), Failed> {
    assert_close(what, gpu, cpu, tolerance::TOPK)?;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_same(&format!("{what} (bits)"), &bits(gpu), &bits(cpu))
}

#[allow(clippy::too_many_arguments)]
/// Row counts of `chunks` uneven chunks of `rows` (the first the largest).
pub fn chunk_sizes(rows: usize, chunks: usize) -> Vec<usize> {
    let base = rows / chunks;
    let mut sizes = vec![base; chunks];
    sizes[0] += rows - base * chunks;
    sizes
}

/// `chunks` > 1: x uploaded as that many row chunks and selected by batchtopk_chunks.
fn batchtopk_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    (rows, n, k_total, kind): (usize, usize, usize, Input),
    chunks: usize,
) -> Result<(), Failed> {
    let x_h = input(rng, kind, rows * n);
    let mut parts = Vec::new();
    let mut row0 = 0;
    for rc in chunk_sizes(rows, chunks) {
        let part = &x_h[row0 * n..(row0 + rc) * n];
        parts.push(gpu.upload("x chunk", &[rc, n], part).map_err(fail)?);
        row0 += rc;
    }
    let row_ptr = gpu.zeros_u32("row_ptr", &[rows + 1]).map_err(fail)?;
    let idx = gpu.zeros_u32("idx", &[k_total]).map_err(fail)?;
    let val = gpu.zeros("val", &[k_total]).map_err(fail)?;
    let threshold = gpu.zeros("threshold", &[1]).map_err(fail)?;
    let scratch = gpu
        .zeros_u32(
            "scratch",
            &[kernels::topk::batchtopk_scratch_len(rows, n, k_total)],
        )
        .map_err(fail)?;
    gpu.write(&row_ptr, &vec![u32::MAX; rows + 1])
        .map_err(fail)?;
    gpu.write(&idx, &vec![u32::MAX; k_total]).map_err(fail)?;
    gpu.fill(&val, f32::NAN);
    gpu.fill(&threshold, f32::NAN);
    // Scratch left over from an earlier use must not matter.
    gpu.write(&scratch, &vec![0xdead_beefu32; scratch.len()])
        .map_err(fail)?;
    let mut enc = gpu.encoder();
    let (rp, thr) = (&row_ptr, &threshold);
    if chunks == 1 {
        let x = &parts[0];
        kernels::topk::batchtopk(gpu, &mut enc, x, rp, &idx, &val, thr, &scratch)
    } else {
        let xs: Vec<&GpuTensor> = parts.iter().collect();
        kernels::topk::batchtopk_chunks(gpu, &mut enc, &xs, None, rp, &idx, &val, thr, &scratch)
    }
    .map_err(fail)?;
    gpu.submit(enc);

    let mut row_ptr_ref = vec![0u32; rows + 1];
    let mut idx_ref = vec![0u32; k_total];
    let mut val_ref = vec![0f32; k_total];
    let mut threshold_ref = [0f32; 1];
    reference::topk::batchtopk(
        &x_h,
        rows,
        n,
        k_total,
        &mut row_ptr_ref,
        &mut idx_ref,
        &mut val_ref,
        &mut threshold_ref,
    );
    assert_same(
        "batchtopk row_ptr",
        &gpu.read_u32(&row_ptr).map_err(fail)?,
        &row_ptr_ref,
    )?;
    assert_same(
        "batchtopk idx",
        &gpu.read_u32(&idx).map_err(fail)?,
        &idx_ref,
    )?;
    same_values(
        "batchtopk val",
        &gpu.read_f32(&val).map_err(fail)?,
        &val_ref,
    )?;
    same_values(
        "batchtopk threshold",
        &gpu.read_f32(&threshold).map_err(fail)?,
        &threshold_ref,
    )
}

/// (rows, n, k_total, input): one entry, all entries, ties across rows, fewer lane maxima
/// than k_total (3 x 1000), more tied candidates than the fast path holds (64 x 2000, and
/// the -inf ties of MostlyNegInf), and the production shape (512, 16384, 32 * 512).
const BATCHTOPK_CASES: &[(usize, usize, usize, Input)] = &[
    (1, 1, 1, Input::Normal),
    (3, 37, 5, Input::Normal),
    (3, 37, 111, Input::Normal),
    (7, 100, 350, Input::SmallInts),
    (17, 1000, 17 * 32, Input::Normal),
    (17, 1000, 17 * 32, Input::SmallInts),
    (33, 777, 5000, Input::SmallInts),
    (64, 2000, 100, Input::SmallInts),
    (3, 1000, 2000, Input::Normal),
    (5, 4099, 100, Input::Inf),
    (40, 1024, 40 * 16, Input::Striped),
    (9, 2000, 700, Input::MostlyNegInf),
    (512, 16384, 32 * 512, Input::Normal),
];

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for &c in BATCHTOPK_CASES {
        let (rows, n, k_total, kind) = c;
        t.push(gpu_test(
            format!("topk::batchtopk/{rows}x{n}/k{k_total}/{kind:?}"),
            move |gpu, rng| batchtopk_case(gpu, rng, c, 1),
        ));
        // The same batch as row chunks (a batch whose x exceeds one binding).
        if rows >= 3 {
            t.push(gpu_test(
                format!("topk::batchtopk_chunks/{rows}x{n}/k{k_total}/{kind:?}/3"),
                move |gpu, rng| batchtopk_case(gpu, rng, c, 3),
            ));
        }
    }
    t
}
