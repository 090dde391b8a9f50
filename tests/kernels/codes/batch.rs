//! BatchTopK's codes against their twins: the selection by candidates over the whole
//! batch (batch_threshold, the candidate lists, batchtopk_codes, whole and in row chunks)
//! and csr_rows (a chunk's rows of the batch's codes).

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::codes as kc;
use saeforge::reference;
use saeforge::reference::codes as rc;

use super::{Input, bits, input, poison};
use crate::common::{assert_same, fail, gpu_test, randn};

/// csr_rows (a chunk's rows of a batch's BatchTopK codes) against its twin, bit for bit;
/// the slots past the chunk's count keep their poison on both sides.
fn csr_rows_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    (rows_all, row0, rows, cap): (usize, usize, usize, usize),
) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let mut row_ptr = vec![0u32; rows_all + 1];
    for r in 0..rows_all {
        row_ptr[r + 1] = row_ptr[r] + rng.random_range(0..6u32);
    }
    let total = row_ptr[rows_all] as usize;
    let idx: Vec<u32> = (0..total).map(|_| rng.random_range(0..1000u32)).collect();
    let val = randn(rng, total, 1.0);
    let (mut c_rp, mut c_idx, mut c_val) = (
        vec![u32::MAX; rows + 1],
        vec![u32::MAX; cap],
        vec![f32::NAN; cap],
    );
    rc::csr_rows(
        &row_ptr, &idx, &val, row0, rows, &mut c_rp, &mut c_idx, &mut c_val,
    );
    let up = |w: &str, v: &[u32]| gpu.upload_u32(w, &[v.len().max(1)], v).map_err(m);
    let (rp_d, idx_d) = (up("row_ptr", &row_ptr)?, up("idx", &idx)?);
    let val_d = gpu.upload("val", &[total.max(1)], &val).map_err(m)?;
    let (rp_c, idx_c) = (
        up("row_ptr_c", &vec![u32::MAX; rows + 1])?,
        up("idx_c", &vec![u32::MAX; cap])?,
    );
    let val_c = gpu
        .upload("val_c", &[cap], &vec![f32::NAN; cap])
        .map_err(m)?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    kc::batch_topk::csr_rows(gpu, &mut enc, &rp_d, &idx_d.prefix(&[total]), &val_d.prefix(&[total]), row0, &rp_c, &idx_c, &val_c).map_err(m)?;
    gpu.submit(enc);
    assert_same(
        "csr_rows row_ptr_c",
        &gpu.read_u32(&rp_c).map_err(m)?,
        &c_rp,
    )?;
    assert_same("csr_rows idx_c", &gpu.read_u32(&idx_c).map_err(m)?, &c_idx)?;
    let v = gpu.read_f32(&val_c).map_err(m)?;
    assert_same("csr_rows val_c", &bits(&v), &bits(&c_val))
}

/// BatchTopK by candidates: batch_threshold against its twin on the device's block maxima,
/// the candidate lists batchtopk_gather handed to the selection against
/// reference::codes::topk_candidates at that bound (each row's run, in latent order), and
/// batchtopk_codes against reference::topk::batchtopk on the whole matrix, exactly. Heavy
/// ties overflow the lists, and the selection must then read x. The scratch is made for
/// `rows * scratch_k` >= k_total (the training step's, for its largest k while annealing).
/// `chunks` > 1: x uploaded as that many row chunks, each with its block maxima, and
/// selected by batchtopk_codes_chunks (the batch's codes all the same).
fn batch_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    (rows, n, k, kind, scratch_k): (usize, usize, usize, Input, usize),
    chunks: usize,
) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let x = input(rng, kind, rows * n);
    let k_total = rows * k;
    let nb = rc::blocks(n, rc::BLOCK);
    let sizes = crate::topk::chunk_sizes(rows, chunks);
    let (mut parts, mut bmaxs, mut row0) = (Vec::new(), Vec::new(), 0);
    for &r in &sizes {
        let part = &x[row0 * n..(row0 + r) * n];
        parts.push(gpu.upload("x chunk", &[r, n], part).map_err(m)?);
        bmaxs.push(gpu.zeros_u32("bmax chunk", &[r * nb]).map_err(m)?);
        row0 += r;
    }
    let xd = &parts[0];
    let sc =
        kc::batch_topk::BatchScratch::new(gpu, rows, n, rows * scratch_k, sizes[0]).map_err(m)?;
    let row_ptr = gpu.zeros_u32("row_ptr", &[rows + 1]).map_err(m)?;
    let idx = gpu.zeros_u32("idx", &[k_total]).map_err(m)?;
    let val = gpu.zeros("val", &[k_total]).map_err(m)?;
    let thr = gpu.zeros("threshold", &[1]).map_err(m)?;
    for t in [&row_ptr, &idx, &val, &thr, &sc.select] {
        poison(gpu, t).map_err(m)?;
    }
    let mut enc = gpu.encoder();
    if chunks == 1 {
        #[rustfmt::skip]
        kc::batch_topk::batchtopk_codes(gpu, &mut enc, xd, &sc, &row_ptr, &idx, &val, &thr).map_err(m)?;
    } else {
        for (x, b) in parts.iter().zip(&bmaxs) {
            kc::selection::block_max(gpu, &mut enc, x, rc::BLOCK, None, None, b).map_err(m)?;
        }
        let (xs, bs): (Vec<&GpuTensor>, Vec<&GpuTensor>) =
            (parts.iter().collect(), bmaxs.iter().collect());
        #[rustfmt::skip]
        kc::batch_topk::batchtopk_codes_chunks(gpu, &mut enc, &xs, &bs, &sc, &row_ptr, &idx, &val, &thr).map_err(m)?;
    }
    gpu.submit(enc);
    let r = |t: &GpuTensor| gpu.read_u32(t).map_err(m);

    // The stages on the device's intermediates (with more entries than blocks per row the
    // chain runs batchtopk on x alone).
    let candidates = k_total <= rows * nb;
    let over = if candidates {
        let g_bmax = if chunks == 1 {
            r(&sc.bmax)?
        } else {
            let mut all = Vec::new();
            for b in &bmaxs {
                all.extend(r(b)?);
            }
            all
        };
        let state = r(&sc.state)?;
        let t = rc::batch_threshold(&g_bmax, k_total);
        assert_same("batch_threshold T", &state[..1], &[t])?;
        assert_same("batch_threshold thr", &r(&sc.thr)?, &vec![t; rows])?;
        let (mut cand, mut key) = (vec![0u32; rows * rc::CAND], vec![0u32; rows * rc::CAND]);
        let mut cand_n = vec![0u32; rows];
        #[rustfmt::skip]
        rc::topk_candidates(&x, rows, n, rc::BLOCK, None, &g_bmax, &vec![t; rows], &mut cand, &mut key, &mut cand_n);
        let lay = saeforge::kernels::topk::scratch_layout(rows, n, k_total);
        let s = r(&sc.select)?;
        let over = cand_n.iter().any(|&c| c as usize > rc::CAND);
        assert_same(
            "batchtopk_gather overflow",
            &s[lay.over..=lay.over],
            &[over as u32],
        )?;
        for row in (0..rows).filter(|_| !over) {
            let (off, cnt) = (s[lay.off + row] as usize, s[lay.cnt + row] as usize);
            let w = row * rc::CAND..row * rc::CAND + cand_n[row] as usize;
            let what = format!("batchtopk_gather row {row}");
            assert_same(&what, &s[lay.keys + off..][..cnt], &key[w.clone()])?;
            assert_same(&what, &s[lay.latents + off..][..cnt], &cand[w])?;
        }
        over
    } else {
        false
    };

    // The result against batchtopk on the whole matrix.
    let mut c_row_ptr = vec![0u32; rows + 1];
    let mut c_idx = vec![0u32; k_total];
    let mut c_val = vec![0.0f32; k_total];
    let mut c_thr = [0.0f32];
    #[rustfmt::skip]
    reference::topk::batchtopk(&x, rows, n, k_total, &mut c_row_ptr, &mut c_idx, &mut c_val, &mut c_thr);
    assert_same("batchtopk_codes row_ptr", &r(&row_ptr)?, &c_row_ptr)?;
    assert_same("batchtopk_codes idx", &r(&idx)?, &c_idx)?;
    let v = gpu.read_f32(&val).map_err(m)?;
    assert_same("batchtopk_codes val", &bits(&v), &bits(&c_val))?;
    let t = gpu.read_f32(&thr).map_err(m)?;
    assert_same("batchtopk_codes threshold", &bits(&t), &bits(&c_thr))?;
    let want_overflow = matches!(kind, Input::SmallInts) && n >= 9000;
    if want_overflow != over {
        return Err(format!("overflow {over}, expected {want_overflow}").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    #[rustfmt::skip]
    let cases = [
        (37, 1000, 7, Input::Normal, 7),
        (70, 300, 9, Input::Inf, 9),
        (29, 777, 5, Input::SmallInts, 5),
        (37, 9000, 3, Input::SmallInts, 3),
        (512, 16384, 32, Input::Normal, 32),
        // Scratch for a larger k (k annealing): the candidate path, then the whole-matrix
        // one (k above the blocks per row), and k = n with n < CAND.
        (37, 1000, 7, Input::Normal, 400),
        (64, 96, 4, Input::Normal, 96),
        (64, 96, 96, Input::Normal, 96),
    ];
    let mut t = Vec::new();
    for c in cases {
        let scratch = if c.4 == c.2 {
            String::new()
        } else {
            format!("/scratch_k{}", c.4)
        };
        // Each case whole, and (a batch whose pre-activations exceed one binding) as 3
        // uneven row chunks.
        for chunks in [1, 3] {
            let split = if chunks == 1 { "" } else { "/chunks3" };
            t.push(gpu_test(
                format!(
                    "codes::batchtopk/{}x{}/k{}/{:?}{scratch}{split}",
                    c.0, c.1, c.2, c.3
                )
                .to_lowercase(),
                move |gpu, rng| batch_case(gpu, rng, c, chunks),
            ));
        }
    }
    // (rows_all, row0, rows, cap): a middle chunk, the last chunk, a cap below the count.
    for c in [(50, 13, 20, 200), (50, 30, 20, 200), (9, 0, 9, 4)] {
        t.push(gpu_test(
            format!("codes::csr_rows/{}x{}+{}/cap{}", c.0, c.1, c.2, c.3),
            move |gpu, rng| csr_rows_case(gpu, rng, c),
        ));
    }
    t
}
