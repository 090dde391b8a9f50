//! Sparse codes from dense pre-activations against the codes module (shaders/codes*.wgsl): each stage of the
//! row top-k (block_max, topk_threshold, topk_candidates, topk_select, csr_scan, csr_pack) on
//! the device's own previous outputs against its CPU twin, and the whole chain
//! (`topk_codes`) against the plain twin, on both paths (one invocation per row, and the
//! hardware GPUs' workgroup per row: topk_threshold_group, topk_select_group); all compared
//! exactly (values are copies of the
//! input, compared bit for bit). Inputs with distinct values, with heavy ties (small
//! integers, -0.0: the candidate lists overflow and rows are selected from the whole row),
//! with +-inf; all latents or a list of eligible ones; k above the positive count.
//! Plus dead_list, and the codes of a ReLU / JumpReLU activation (threshold_offsets,
//! block_max of pre - offsets, compact_count, csr_scan, compact_write, and the
//! `activation_codes` launcher against its plain twin) at low and high L0, with the
//! capacity overflowing.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::codes as kc;
use saeforge::kernels::codes::selection::RowPath::{Group, Lane};
use saeforge::reference::codes as rc;

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};

mod batch;

#[derive(Clone, Copy, Debug)]
enum Input {
    /// Standard normal.
    Normal,
    /// Integers in -3..=3 with some -0.0: thousands of ties per row.
    SmallInts,
    /// Normal with ~3% +inf and ~3% -inf.
    Inf,
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
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn poison(gpu: &Gpu, t: &GpuTensor) -> saeforge::Result<()> {
    gpu.write(t, &vec![u32::MAX; t.len()])
}

/// One case: rows x n of `kind`, top-k over all latents or over `listed` of them.
#[derive(Clone, Copy, Debug)]
struct Case {
    rows: usize,
    n: usize,
    k: usize,
    kind: Input,
    /// Some(m): a random ascending list of m eligible latents.
    listed: Option<usize>,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{}x{}/k{}/{:?}{}",
            self.rows,
            self.n,
            self.k,
            self.kind,
            self.listed.map_or(String::new(), |m| format!("/listed{m}"))
        )
        .to_lowercase()
    }
}

fn stage_case(gpu: &Gpu, rng: &mut ChaCha8Rng, c: Case) -> Result<(), Failed> {
    let Case { rows, n, k, .. } = c;
    let block = if c.listed.is_some() {
        rc::BLOCK_LISTED
    } else {
        rc::BLOCK
    };
    let nb = rc::blocks(n, block);
    let x = input(rng, c.kind, rows * n);
    let list: Option<(Vec<u32>, Vec<u32>)> = c.listed.map(|m| {
        let mut l: Vec<u32> = (0..n as u32).collect();
        for i in 0..n {
            let j = rng.random_range(i..n);
            l.swap(i, j);
        }
        l.truncate(m);
        l.sort_unstable();
        let count = l.len() as u32;
        // Garbage past the count must never be read: valid indices, wrong latents.
        l.resize(n, (n - 1) as u32);
        (l, vec![count])
    });
    let cols_h = list.as_ref().map(|(l, c)| (&l[..], &c[..]));
    let m = |e: saeforge::Error| fail(e);
    let xd = gpu.upload("x", &[rows, n], &x).map_err(m)?;
    let listd = match &list {
        Some((l, cnt)) => Some((
            gpu.upload_u32("cols", &[n], l).map_err(m)?,
            gpu.upload_u32("ncols", &[1], cnt).map_err(m)?,
        )),
        None => None,
    };
    let cols_d = listd.as_ref().map(|(a, b)| (a, b));
    let u = |name: &str, len: usize| gpu.zeros_u32(name, &[len]);
    let bmax = u("bmax", rows * nb).map_err(m)?;
    let thr = u("thr", rows).map_err(m)?;
    let cand = u("cand", rows * kc::CAND).map_err(m)?;
    let cand_key = u("cand_key", rows * kc::CAND).map_err(m)?;
    let cand_n = u("cand_n", rows).map_err(m)?;
    let sel = u("sel", rows * k).map_err(m)?;
    let sel_val = gpu.zeros("sel_val", &[rows * k]).map_err(m)?;
    let sel_n = u("sel_n", rows).map_err(m)?;
    let row_ptr = u("row_ptr", rows + 1).map_err(m)?;
    let cap = rows * k + 3;
    let idx = u("idx", cap).map_err(m)?;
    let val = gpu.zeros("val", &[cap]).map_err(m)?;
    for t in [
        &bmax, &thr, &cand, &cand_key, &cand_n, &sel, &sel_val, &sel_n, &row_ptr, &idx, &val,
    ] {
        poison(gpu, t).map_err(m)?;
    }
    let mut enc = gpu.encoder();
    let e = &mut enc;
    kc::selection::block_max(gpu, e, &xd, block, cols_d, None, &bmax).map_err(m)?;
    kc::selection::topk_threshold(gpu, e, Lane, &bmax, rows, nb, k, &thr).map_err(m)?;
    #[rustfmt::skip]
    kc::selection::topk_candidates(gpu, e, Lane, &xd, block, cols_d, &bmax, &thr, &cand, &cand_key, &cand_n).map_err(m)?;
    #[rustfmt::skip]
    kc::selection::topk_select(gpu, e, Lane, &xd, k, cols_d, &cand, &cand_key, &cand_n, &thr, &sel, &sel_val, &sel_n).map_err(m)?;
    kc::selection::csr_scan(gpu, e, &sel_n, &row_ptr).map_err(m)?;
    kc::selection::csr_pack(gpu, e, &sel, &sel_val, &row_ptr, rows, k, &idx, &val).map_err(m)?;
    gpu.submit(enc);
    let r = |t: &GpuTensor| gpu.read_u32(t).map_err(m);

    // Each stage against its twin, fed the device's previous outputs.
    let g_bmax = r(&bmax)?;
    let mut c_bmax = vec![0u32; rows * nb];
    rc::block_max(&x, rows, n, block, cols_h, None, &mut c_bmax);
    assert_same("block_max bmax", &g_bmax, &c_bmax)?;
    let g_thr = r(&thr)?;
    let mut c_thr = vec![0u32; rows];
    rc::topk_threshold(&g_bmax, rows, nb, k, &mut c_thr);
    assert_same("topk_threshold thr", &g_thr, &c_thr)?;
    let (g_cand, g_key, g_n) = (r(&cand)?, r(&cand_key)?, r(&cand_n)?);
    let mut c_cand = vec![0u32; rows * rc::CAND];
    let mut c_key = vec![0u32; rows * rc::CAND];
    let mut c_n = vec![0u32; rows];
    #[rustfmt::skip]
    rc::topk_candidates(&x, rows, n, block, cols_h, &g_bmax, &g_thr, &mut c_cand, &mut c_key, &mut c_n);
    assert_same("topk_candidates cand_n", &g_n, &c_n)?;
    // Only the stored candidates are defined; the slots past them keep the poison.
    let stored = |v: &[u32]| -> Vec<u32> {
        (0..rows)
            .flat_map(|r| {
                let len = (g_n[r] as usize).min(rc::CAND);
                v[r * rc::CAND..r * rc::CAND + len].to_vec()
            })
            .collect()
    };
    assert_same("topk_candidates cand", &stored(&g_cand), &stored(&c_cand))?;
    assert_same("topk_candidates cand_key", &stored(&g_key), &stored(&c_key))?;
    let (g_sel, g_sel_n) = (r(&sel)?, r(&sel_n)?);
    let g_sel_val = gpu.read_f32(&sel_val).map_err(m)?;
    let mut c_sel = vec![0u32; rows * k];
    let mut c_sel_val = vec![0.0f32; rows * k];
    let mut c_sel_n = vec![0u32; rows];
    #[rustfmt::skip]
    rc::topk_select(&x, rows, n, k, cols_h, &g_cand, &g_key, &g_n, &g_thr, &mut c_sel, &mut c_sel_val, &mut c_sel_n);
    assert_same("topk_select sel_n", &g_sel_n, &c_sel_n)?;
    assert_same("topk_select sel", &g_sel, &c_sel)?;
    assert_same(
        "topk_select sel_val (bits)",
        &bits(&g_sel_val),
        &bits(&c_sel_val),
    )?;
    let g_row_ptr = r(&row_ptr)?;
    let mut c_row_ptr = vec![0u32; rows + 1];
    rc::csr_scan(&g_sel_n, &mut c_row_ptr);
    assert_same("csr_scan row_ptr", &g_row_ptr, &c_row_ptr)?;
    let g_idx = r(&idx)?;
    let g_val = gpu.read_f32(&val).map_err(m)?;
    let mut c_idx = vec![u32::MAX; cap];
    let mut c_val = vec![f32::from_bits(u32::MAX); cap];
    rc::csr_pack(
        &g_sel, &g_sel_val, &g_row_ptr, rows, k, &mut c_idx, &mut c_val,
    );
    assert_same("csr_pack idx", &g_idx, &c_idx)?;
    assert_same("csr_pack val (bits)", &bits(&g_val), &bits(&c_val))?;

    // The chain's result against the plain twin.
    let mut p_row_ptr = vec![0u32; rows + 1];
    let mut p_idx = vec![0u32; rows * k];
    let mut p_val = vec![0.0f32; rows * k];
    #[rustfmt::skip]
    rc::topk_codes(&x, rows, n, k, cols_h, &mut p_row_ptr, &mut p_idx, &mut p_val);
    assert_same(
        "topk_codes row_ptr (stages vs plain)",
        &g_row_ptr,
        &p_row_ptr,
    )?;
    let nnz = p_row_ptr[rows] as usize;
    assert_same("topk_codes idx", &g_idx[..nnz], &p_idx[..nnz])?;
    assert_same(
        "topk_codes val (bits)",
        &bits(&g_val[..nnz]),
        &bits(&p_val[..nnz]),
    )?;

    // And the launcher that records the chain on scratch buffers.
    for t in [&row_ptr, &idx, &val] {
        poison(gpu, t).map_err(m)?;
    }
    let mut enc = gpu.encoder();
    kc::selection::topk_codes(gpu, &mut enc, Lane, &xd, k, cols_d, &row_ptr, &idx, &val)
        .map_err(m)?;
    gpu.submit(enc);
    assert_same("topk_codes (launcher) row_ptr", &r(&row_ptr)?, &p_row_ptr)?;
    assert_same("topk_codes (launcher) idx", &r(&idx)?[..nnz], &p_idx[..nnz])?;
    let v = gpu.read_f32(&val).map_err(m)?;
    assert_same(
        "topk_codes (launcher) val",
        &bits(&v[..nnz]),
        &bits(&p_val[..nnz]),
    )?;
    // The workgroup-per-row path (hardware GPUs'): its stages against the same twins, fed
    // the block maxima checked above, then its chain against the plain twin.
    for t in [
        &thr, &cand, &cand_key, &cand_n, &sel, &sel_val, &sel_n, &row_ptr, &idx, &val,
    ] {
        poison(gpu, t).map_err(m)?;
    }
    let mut enc = gpu.encoder();
    let e = &mut enc;
    kc::selection::topk_threshold(gpu, e, Group, &bmax, rows, nb, k, &thr).map_err(m)?;
    #[rustfmt::skip]
    kc::selection::topk_candidates(gpu, e, Group, &xd, block, cols_d, &bmax, &thr, &cand, &cand_key, &cand_n).map_err(m)?;
    #[rustfmt::skip]
    kc::selection::topk_select(gpu, e, Group, &xd, k, cols_d, &cand, &cand_key, &cand_n, &thr, &sel, &sel_val, &sel_n).map_err(m)?;
    gpu.submit(enc);
    assert_same("topk_threshold_group thr", &r(&thr)?, &c_thr)?;
    let g_n = r(&cand_n)?;
    assert_same("topk_candidates_group cand_n", &g_n, &c_n)?;
    let g_cand = stored(&r(&cand)?);
    assert_same("topk_candidates_group cand", &g_cand, &stored(&c_cand))?;
    let g_key = stored(&r(&cand_key)?);
    assert_same("topk_candidates_group cand_key", &g_key, &stored(&c_key))?;
    assert_same("topk_select_group sel_n", &r(&sel_n)?, &c_sel_n)?;
    assert_same("topk_select_group sel", &r(&sel)?, &c_sel)?;
    let v = gpu.read_f32(&sel_val).map_err(m)?;
    assert_same(
        "topk_select_group sel_val (bits)",
        &bits(&v),
        &bits(&c_sel_val),
    )?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    kc::selection::topk_codes(gpu, &mut enc, Group, &xd, k, cols_d, &row_ptr, &idx, &val).map_err(m)?;
    gpu.submit(enc);
    assert_same("topk_codes (group) row_ptr", &r(&row_ptr)?, &p_row_ptr)?;
    assert_same("topk_codes (group) idx", &r(&idx)?[..nnz], &p_idx[..nnz])?;
    let v = gpu.read_f32(&val).map_err(m)?;
    assert_same(
        "topk_codes (group) val",
        &bits(&v[..nnz]),
        &bits(&p_val[..nnz]),
    )?;
    // The inputs must have exercised what the case is for.
    let eligible = c.listed.unwrap_or(n);
    if matches!(c.kind, Input::SmallInts)
        && eligible >= 9000
        && !g_n.iter().any(|&v| v as usize > rc::CAND)
    {
        return Err("no row overflowed its candidate list".into());
    }
    Ok(())
}

fn dead_case(gpu: &Gpu, rng: &mut ChaCha8Rng, n: usize, frac: f64) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let dead_after = 1000u32;
    let since: Vec<u32> = (0..n)
        .map(|_| {
            if rng.random_bool(frac) {
                rng.random_range(dead_after..dead_after + 5)
            } else {
                rng.random_range(0..dead_after)
            }
        })
        .collect();
    let s = gpu.upload_u32("since", &[n], &since).map_err(m)?;
    let cols = gpu.zeros_u32("cols", &[n]).map_err(m)?;
    let ncols = gpu.zeros_u32("ncols", &[1]).map_err(m)?;
    poison(gpu, &cols).map_err(m)?;
    poison(gpu, &ncols).map_err(m)?;
    let mut enc = gpu.encoder();
    kc::selection::dead_list(gpu, &mut enc, &s, dead_after, &cols, &ncols).map_err(m)?;
    gpu.submit(enc);
    let mut c_cols = vec![0u32; n];
    let mut c_n = [0u32];
    rc::dead_list(&since, dead_after, &mut c_cols, &mut c_n);
    assert_same("dead_list ncols", &gpu.read_u32(&ncols).map_err(m)?, &c_n)?;
    assert_same("dead_list cols", &gpu.read_u32(&cols).map_err(m)?, &c_cols)
}

/// Shapes off every block (32), workgroup (64) and scan (256) size; k above n; a list
/// holding fewer than k latents; the production TopK (512 x 16384, k 32) and AuxK (k 256
/// over ~3000 dead latents) cases; a k whose blocks take several rounds of the vec4
/// candidates' list.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { rows: 3, n: 5, k: 2, kind: Input::Normal, listed: None },
    Case { rows: 5, n: 33, k: 40, kind: Input::Normal, listed: None },
    Case { rows: 37, n: 1000, k: 7, kind: Input::Normal, listed: None },
    Case { rows: 37, n: 9000, k: 7, kind: Input::SmallInts, listed: None },
    Case { rows: 70, n: 300, k: 9, kind: Input::Inf, listed: None },
    Case { rows: 70, n: 301, k: 9, kind: Input::Normal, listed: Some(123) },
    Case { rows: 29, n: 777, k: 30, kind: Input::SmallInts, listed: Some(600) },
    Case { rows: 300, n: 100, k: 64, kind: Input::Normal, listed: Some(10) },
    // Ties at the k-th key with larger keys after them, in candidate lists that fit: which
    // ties are taken, and where the entries after them land.
    Case { rows: 70, n: 300, k: 60, kind: Input::SmallInts, listed: None },
    Case { rows: 40, n: 2000, k: 100, kind: Input::SmallInts, listed: Some(700) },
    // The same in rows whose candidates overflow (topk_select_row).
    Case { rows: 20, n: 9000, k: 2000, kind: Input::SmallInts, listed: None },
    // n % 128 == 0: the vec4 threshold and candidate entry points (ties; infinities).
    Case { rows: 37, n: 1024, k: 7, kind: Input::SmallInts, listed: None },
    Case { rows: 70, n: 384, k: 9, kind: Input::Inf, listed: None },
    Case { rows: 512, n: 16384, k: 32, kind: Input::Normal, listed: None },
    // k 200: more qualifying blocks per row than topk_candidates_vec4 lists at a time.
    Case { rows: 64, n: 16384, k: 200, kind: Input::Normal, listed: None },
    Case { rows: 512, n: 16384, k: 256, kind: Input::Normal, listed: Some(3000) },
    Case { rows: 40, n: 16384, k: 256, kind: Input::SmallInts, listed: Some(12000) },
];

/// ReLU (`jump` false) or JumpReLU codes of a rows x n matrix whose entries are kept with
/// probability about `frac`; `cap_per_row` sets the code capacity (overflowing at high
/// frac). JumpReLU inputs stay >= 1e-4 away from theta and the window's edges (WGSL's exp
/// may differ from Rust's by a few ulp there).
fn compact_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    (rows, n, jump, frac, cap_per_row): (usize, usize, bool, f64, usize),
) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let eps = 0.05f32;
    let log_thr: Vec<f32> = (0..n).map(|_| rng.random_range(0.2f32..1.0).ln()).collect();
    let theta: Vec<f32> = log_thr.iter().map(|l| l.exp()).collect();
    // Shift so that about frac of the entries are above 0 (relu) or above theta: the
    // standard normal's (1 - frac) quantile, by bisection.
    let (mut lo, mut hi) = (-6.0f64, 6.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if 0.5 * erfc(mid / std::f64::consts::SQRT_2) > frac {
            lo = mid
        } else {
            hi = mid
        }
    }
    let shift = lo as f32;
    let mut x = randn(rng, rows * n, 1.0);
    for r in 0..rows {
        for i in 0..n {
            let v = &mut x[r * n + i];
            if jump {
                *v = theta[i] + (*v - shift) * 0.5;
                for edge in [theta[i], theta[i] - 0.5 * eps, theta[i] + 0.5 * eps] {
                    let guard = tolerance::JUMPRELU_GUARD_ABS;
                    if (*v - edge).abs() < guard {
                        *v = edge + 2.0 * guard;
                    }
                }
            } else {
                *v -= shift;
            }
        }
    }
    let cap = rows * cap_per_row;
    let nb = rc::blocks(n, rc::BLOCK);
    let xd = gpu.upload("x", &[rows, n], &x).map_err(m)?;
    let ld = gpu.upload("log_thr", &[n], &log_thr).map_err(m)?;
    let jd = jump.then_some((&ld, eps));
    let off = gpu.zeros("off", &[n]).map_err(m)?;
    let bmax = gpu.zeros_u32("bmax", &[rows * nb]).map_err(m)?;
    let counts = gpu.zeros_u32("counts", &[rows]).map_err(m)?;
    let row_ptr = gpu.zeros_u32("row_ptr", &[rows + 1]).map_err(m)?;
    let idx = gpu.zeros_u32("idx", &[cap]).map_err(m)?;
    let val = gpu.zeros("val", &[cap]).map_err(m)?;
    let pre = gpu.zeros("pre_val", &[cap]).map_err(m)?;
    // Both paths: one invocation per row (software adapters), a workgroup per row (hardware).
    for path in [Lane, Group] {
        let at = |what: &str| format!("{what} ({path:?})");
        for t in [&off, &bmax, &counts, &row_ptr, &idx, &val, &pre] {
            poison(gpu, t).map_err(m)?;
        }
        let mut enc = gpu.encoder();
        let e = &mut enc;
        if jump {
            kc::compaction::threshold_offsets(gpu, e, &ld, eps, &off).map_err(m)?;
        }
        let offd = jump.then_some(&off);
        kc::selection::block_max(gpu, e, &xd, rc::BLOCK, None, offd, &bmax).map_err(m)?;
        let input = kc::compaction::CompactIn {
            path,
            x: &xd,
            block: rc::BLOCK,
            bmax: &bmax,
            jumprelu: jd,
        };
        kc::compaction::compact_count(gpu, e, input, &counts).map_err(m)?;
        kc::selection::csr_scan(gpu, e, &counts, &row_ptr).map_err(m)?;
        kc::compaction::compact_write(gpu, e, input, &row_ptr, &idx, &val, &pre).map_err(m)?;
        gpu.submit(enc);

        let jh = jump.then_some((&log_thr[..], eps));
        let mut g_off = vec![0.0f32; n];
        if jump {
            g_off = gpu.read_f32(&off).map_err(m)?;
            let mut c_off = vec![0.0f32; n];
            rc::threshold_offsets(&log_thr, eps, &mut c_off);
            assert_close(
                "threshold_offsets",
                &g_off,
                &c_off,
                tolerance::CODES_OFFSETS,
            )?;
        }
        let g_bmax = gpu.read_u32(&bmax).map_err(m)?;
        let mut c_bmax = vec![0u32; rows * nb];
        let oh = jump.then_some(&g_off[..]);
        rc::block_max(&x, rows, n, rc::BLOCK, None, oh, &mut c_bmax);
        assert_same("block_max (offsets)", &g_bmax, &c_bmax)?;
        let g_counts = gpu.read_u32(&counts).map_err(m)?;
        let mut c_counts = vec![0u32; rows];
        rc::compact_count(&x, rows, n, rc::BLOCK, &g_bmax, jh, &mut c_counts);
        assert_same(&at("compact_count"), &g_counts, &c_counts)?;
        let g_row_ptr = gpu.read_u32(&row_ptr).map_err(m)?;
        let mut c_row_ptr = vec![0u32; rows + 1];
        rc::csr_scan(&g_counts, &mut c_row_ptr);
        assert_same("csr_scan row_ptr", &g_row_ptr, &c_row_ptr)?;
        let mut c_idx = vec![u32::MAX; cap];
        let mut c_val = vec![f32::from_bits(u32::MAX); cap];
        let mut c_pre = vec![f32::from_bits(u32::MAX); cap];
        #[rustfmt::skip]
    rc::compact_write(&x, rows, n, rc::BLOCK, &g_bmax, jh, &g_row_ptr, &mut c_idx, &mut c_val, &mut c_pre);
        assert_same(
            &at("compact_write idx"),
            &gpu.read_u32(&idx).map_err(m)?,
            &c_idx,
        )?;
        let g_val = gpu.read_f32(&val).map_err(m)?;
        assert_same(&at("compact_write val"), &bits(&g_val), &bits(&c_val))?;
        let g_pre = gpu.read_f32(&pre).map_err(m)?;
        assert_same(&at("compact_write pre_val"), &bits(&g_pre), &bits(&c_pre))?;
        // The whole chain: the launcher against the plain twin.
        let (p_row_ptr, p_idx, p_val, p_pre) = rc::activation_codes(&x, rows, n, jh);
        assert_same("activation_codes row_ptr (stages)", &g_row_ptr, &p_row_ptr)?;
        for t in [&row_ptr, &idx, &val, &pre] {
            poison(gpu, t).map_err(m)?;
        }
        let mut enc = gpu.encoder();
        #[rustfmt::skip]
    kc::compaction::activation_codes(gpu, &mut enc, path, &xd, jd, &row_ptr, &idx, &val, &pre).map_err(m)?;
        gpu.submit(enc);
        let g = gpu.read_u32(&row_ptr).map_err(m)?;
        assert_same(&at("activation_codes row_ptr"), &g, &p_row_ptr)?;
        let kept = (p_row_ptr[rows] as usize).min(cap);
        let g = gpu.read_u32(&idx).map_err(m)?;
        assert_same(&at("activation_codes idx"), &g[..kept], &p_idx[..kept])?;
        let v = gpu.read_f32(&val).map_err(m)?;
        assert_same(
            &at("activation_codes val"),
            &bits(&v[..kept]),
            &bits(&p_val[..kept]),
        )?;
        let v = gpu.read_f32(&pre).map_err(m)?;
        assert_same(
            &at("activation_codes pre_val"),
            &bits(&v[..kept]),
            &bits(&p_pre[..kept]),
        )?;
        if jump && !p_val.contains(&0.0) {
            return Err("no JumpReLU entry in the window below theta".into());
        }
        if frac >= 0.5 && (p_row_ptr[rows] as usize) <= cap {
            return Err("the capacity did not overflow".into());
        }
    }
    Ok(())
}

/// erfc (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7), for the quantile above.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly =
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)));
    let y = t * poly * (-z * z).exp();
    if x >= 0.0 { y } else { 2.0 - y }
}

pub fn trials() -> Vec<Trial> {
    let mut t: Vec<Trial> = CASES
        .iter()
        .map(|&c| {
            gpu_test(
                format!("codes::topk_chain/{}", c.name()),
                move |gpu, rng| stage_case(gpu, rng, c),
            )
        })
        .collect();
    // (rows, n, jumprelu, kept fraction, capacity per row)
    #[rustfmt::skip]
    let compact = [
        (5, 7, false, 0.5, 1),      // overflows: ~17 kept of 35, capacity 5
        (37, 1000, false, 0.01, 64),
        (37, 1001, true, 0.01, 64),
        (70, 300, false, 0.5, 64),   // overflows the capacity
        (70, 300, true, 0.5, 64),    // overflows the capacity
        // n % 128 == 0: the vec4 entry points
        (37, 1024, true, 0.01, 64),
        (70, 384, false, 0.5, 64),   // overflows the capacity
        (70, 384, true, 0.5, 64),    // overflows the capacity
        (512, 16384, false, 0.003, 1024),
        (512, 16384, true, 0.003, 1024),
    ];
    for c in compact {
        let act = if c.2 { "jumprelu" } else { "relu" };
        t.push(gpu_test(
            format!("codes::compact/{}x{}/{act}/{}", c.0, c.1, c.3),
            move |gpu, rng| compact_case(gpu, rng, c),
        ));
    }
    for (n, frac) in [
        (1, 1.0),
        (300, 0.0),
        (777, 0.3),
        (16384, 0.05),
        (16384, 1.0),
    ] {
        t.push(gpu_test(
            format!("codes::dead_list/{n}/{frac}"),
            move |gpu, rng| dead_case(gpu, rng, n, frac),
        ));
    }
    t.extend(batch::trials());
    t
}
