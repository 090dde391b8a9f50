//! Sparse codes from dense pre-activations against shaders/codes.wgsl: each stage of the
//! row top-k (block_max, topk_threshold, topk_candidates, topk_select, csr_scan, csr_pack) on
//! the device's own previous outputs against its CPU twin, and the whole chain
//! (`topk_codes`) against the plain twin; all compared exactly (values are copies of the
//! input, compared bit for bit). Inputs with distinct values, with heavy ties (small
//! integers, -0.0: the candidate lists overflow and rows are selected from the whole row),
//! with +-inf; all latents or a list of eligible ones; k above the positive count.
//! Plus dead_list.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::codes as kc;
use saeforge::reference::codes as rc;

use crate::common::{assert_same, fail, gpu_test, randn};

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
    kc::block_max(gpu, e, &xd, block, cols_d, &bmax).map_err(m)?;
    kc::topk_threshold(gpu, e, &bmax, rows, nb, k, &thr).map_err(m)?;
    #[rustfmt::skip]
    kc::topk_candidates(gpu, e, &xd, block, cols_d, &bmax, &thr, &cand, &cand_key, &cand_n).map_err(m)?;
    #[rustfmt::skip]
    kc::topk_select(gpu, e, &xd, k, cols_d, &cand, &cand_key, &cand_n, &thr, &sel, &sel_val, &sel_n).map_err(m)?;
    kc::csr_scan(gpu, e, &sel_n, &row_ptr).map_err(m)?;
    kc::csr_pack(gpu, e, &sel, &sel_val, &row_ptr, rows, k, &idx, &val).map_err(m)?;
    gpu.submit(enc);
    let r = |t: &GpuTensor| gpu.read_u32(t).map_err(m);

    // Each stage against its twin, fed the device's previous outputs.
    let g_bmax = r(&bmax)?;
    let mut c_bmax = vec![0u32; rows * nb];
    rc::block_max(&x, rows, n, block, cols_h, &mut c_bmax);
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
    assert_same("topk_candidates cand", &g_cand, &c_cand)?;
    assert_same("topk_candidates cand_key", &g_key, &c_key)?;
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
    kc::topk_codes(gpu, &mut enc, &xd, k, cols_d, &row_ptr, &idx, &val).map_err(m)?;
    gpu.submit(enc);
    assert_same("topk_codes (launcher) row_ptr", &r(&row_ptr)?, &p_row_ptr)?;
    assert_same("topk_codes (launcher) idx", &r(&idx)?[..nnz], &p_idx[..nnz])?;
    let v = gpu.read_f32(&val).map_err(m)?;
    assert_same(
        "topk_codes (launcher) val",
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
    kc::dead_list(gpu, &mut enc, &s, dead_after, &cols, &ncols).map_err(m)?;
    gpu.submit(enc);
    let mut c_cols = vec![0u32; n];
    let mut c_n = [0u32];
    rc::dead_list(&since, dead_after, &mut c_cols, &mut c_n);
    assert_same("dead_list ncols", &gpu.read_u32(&ncols).map_err(m)?, &c_n)?;
    assert_same("dead_list cols", &gpu.read_u32(&cols).map_err(m)?, &c_cols)
}

/// Shapes off every block (32), workgroup (64) and scan (256) size; k above n; a list
/// holding fewer than k latents; the production TopK (512 x 16384, k 32) and AuxK (k 256
/// over ~3000 dead latents) cases.
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
    Case { rows: 512, n: 16384, k: 32, kind: Input::Normal, listed: None },
    Case { rows: 512, n: 16384, k: 256, kind: Input::Normal, listed: Some(3000) },
    Case { rows: 40, n: 16384, k: 256, kind: Input::SmallInts, listed: Some(12000) },
];

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
    t
}
