//! Cases for the rest of what a training step (and the FISTA and toy-model drivers)
//! launches: the sparse-code chains of the codes module (shaders/codes*.wgsl) (each case records a whole chain,
//! so every stage kernel runs: block_max, topk_threshold, topk_candidates, topk_select and
//! topk_select_row, csr_scan, csr_pack; threshold_offsets, compact_count, compact_write;
//! key_init, key_hist, key_find, topk_candidates, batchtopk on the candidate lists
//! (batchtopk_gather, its radix levels, count, scan, scatter); csr_rows), dead_list, FISTA's two kernels and the toy-model kernels.

use std::rc::Rc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Gpu;
use saeforge::kernels::codes::selection::RowPath;
use saeforge::kernels::{codes, fista, toy};

use super::{B, Case, DEAD_AFTER, Inputs, K, K_AUX, N, T, b4, bytes_case, gaussian};

/// Slots of the ReLU / JumpReLU code buffers in the compaction cases (pre - 2.5 keeps
/// ~0.6% of N(0, 1) entries, ~100 per row).
const CAP_PER_ROW: usize = 256;

pub fn codes_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let nb = codes::blocks(N, codes::BLOCK);
    let bn = format!("B={B}, n={N}");
    let mut v = Vec::new();

    // read pre (B n), write bmax (B nb)
    let (pre, bmax) = (t.pre.clone(), zeros_u32("bmax", &[B * nb])?);
    let bm = bmax.clone();
    v.push(bytes_case(
        "block_max",
        "vec4",
        format!("{bn}, block={}", codes::BLOCK),
        b4(B * N + B * nb),
        Box::new(move |g, e| {
            codes::selection::block_max(g, e, &pre, codes::BLOCK, None, None, &bm)
        }),
    ));
    // TopK codes: read pre (B n) at least, write row_ptr (B + 1), idx, val (2 B k).
    let topk_out = |tag: &str| -> saeforge::Result<(T, T, T)> {
        Ok((
            zeros_u32(&format!("{tag} row_ptr"), &[B + 1])?,
            zeros_u32(&format!("{tag} idx"), &[B * K_AUX])?,
            zeros(&format!("{tag} val"), &[B * K_AUX])?,
        ))
    };
    let pre = t.pre.clone();
    let (rp, idx, val) = topk_out("topk_codes")?;
    v.push(bytes_case(
        "topk_codes",
        "chain",
        format!("{bn}, k={K}"),
        b4(B * N + (B + 1) + 2 * B * K),
        Box::new(move |g, e| {
            codes::selection::topk_codes(g, e, RowPath::of(g), &pre, K, None, &rp, &idx, &val)
        }),
    ));
    // The same from block maxima the encoder GEMM wrote: reads bmax (B nb) and the ~k
    // blocks per row that reach the bound (not counted).
    let (pre, bm) = (t.pre.clone(), bmax.clone());
    let (rp, idx, val) = topk_out("topk_codes_from_bmax")?;
    v.push(bytes_case(
        "topk_codes_from_bmax",
        "chain",
        format!("{bn}, k={K}"),
        b4(B * nb + (B + 1) + 2 * B * K),
        Box::new(move |g, e| {
            codes::selection::topk_codes_from_bmax(g, e, &pre, K, &bm, &rp, &idx, &val)
        }),
    ));
    // dead_list: read since (n), write cols (n), ncols (1)
    let (since, cols, ncols) = (
        t.since.clone(),
        zeros_u32("dead cols", &[N])?,
        zeros_u32("dead ncols", &[1])?,
    );
    let (c2, n2) = (cols.clone(), ncols.clone());
    v.push(bytes_case(
        "dead_list",
        "-",
        format!("n={N}"),
        b4(2 * N + 1),
        Box::new(move |g, e| codes::selection::dead_list(g, e, &since, DEAD_AFTER, &c2, &n2)),
    ));
    // AuxK codes over the dead list: read pre (B n) at least, write 2 B k_aux + B + 1.
    let (since, pre) = (t.since.clone(), t.pre.clone());
    let (rp, idx, val) = topk_out("topk_codes aux")?;
    v.push(bytes_case(
        "topk_codes_aux",
        "chain",
        format!("{bn}, k={K_AUX}, dead list"),
        b4(B * N + (B + 1) + 2 * B * K_AUX),
        Box::new(move |g, e| {
            codes::selection::dead_list(g, e, &since, DEAD_AFTER, &cols, &ncols)?;
            codes::selection::topk_codes(
                g,
                e,
                RowPath::of(g),
                &pre,
                K_AUX,
                Some((&cols, &ncols)),
                &rp,
                &idx,
                &val,
            )
        }),
    ));
    // ReLU / JumpReLU codes of pre - 2.5: read x (B n) at least, write the CSR
    // (B + 1 + 3 nnz, nnz ~ 100 per row counted as CAP_PER_ROW / 2).
    let shifted: Vec<f32> = gpu.read_f32(&t.pre)?.iter().map(|v| v - 2.5).collect();
    let sparse_pre = Rc::new(gpu.upload("pre - 2.5", &[B, N], &shifted)?);
    let cap = B * CAP_PER_ROW;
    let csr_bytes = b4(B * N + (B + 1) + 3 * cap / 2);
    for (name, jump) in [
        ("activation_codes_relu", false),
        ("activation_codes_jumprelu", true),
    ] {
        let (x, lt) = (sparse_pre.clone(), t.log_theta.clone());
        let rp = zeros_u32(&format!("{name} row_ptr"), &[B + 1])?;
        let idx = zeros_u32(&format!("{name} idx"), &[cap])?;
        let (val, pv) = (zeros("codes val", &[cap])?, zeros("codes pre", &[cap])?);
        v.push(bytes_case(
            name,
            "chain",
            format!("{bn}, cap={CAP_PER_ROW}/row"),
            csr_bytes,
            Box::new(move |g, e| {
                let j = jump.then_some((&*lt, 0.05f32));
                codes::compaction::activation_codes(
                    g,
                    e,
                    RowPath::of(g),
                    &x,
                    j,
                    &rp,
                    &idx,
                    &val,
                    &pv,
                )
            }),
        ));
    }
    // BatchTopK on candidates: read pre (B n) at least, write the CSR and the threshold.
    let pre = t.pre.clone();
    let sc = Rc::new(codes::batch_topk::BatchScratch::new(gpu, B, N, B * K, B)?);
    let rp = zeros_u32("batch row_ptr", &[B + 1])?;
    let (idx, val) = (
        zeros_u32("batch idx", &[B * K])?,
        zeros("batch val", &[B * K])?,
    );
    let thr = zeros("batch threshold", &[1])?;
    v.push(bytes_case(
        "batchtopk_codes",
        "candidates",
        format!("{bn}, k_total={}", B * K),
        b4(B * N + (B + 1) + 2 * B * K + 1),
        Box::new(move |g, e| {
            codes::batch_topk::batchtopk_codes(g, e, &pre, &sc, &rp, &idx, &val, &thr)
        }),
    ));
    // A chunk's rows of the batch's codes (BatchTopK in chunks): the second half of a batch
    // with K entries per row; reads and writes its row_ptr and its slots' idx and val.
    let half = B / 2;
    let all: Vec<u32> = (0..=B as u32).map(|r| r * K as u32).collect();
    let rp_all = Rc::new(gpu.upload_u32("batch row_ptr", &[B + 1], &all)?);
    let (idx_all, val_all) = (
        zeros_u32("batch idx", &[B * K])?,
        zeros("batch val", &[B * K])?,
    );
    let rp_c = zeros_u32("chunk row_ptr", &[half + 1])?;
    let (idx_c, val_c) = (
        zeros_u32("chunk idx", &[B * K])?,
        zeros("chunk val", &[B * K])?,
    );
    v.push(bytes_case(
        "csr_rows",
        "chunk",
        format!("rows {half}..{B} of B={B}, k={K}"),
        b4(2 * (half + 1) + 4 * half * K),
        Box::new(move |g, e| {
            let (a, b) = ((&*rp_all, &*idx_all, &*val_all), (&*rp_c, &*idx_c, &*val_c));
            codes::batch_topk::csr_rows(g, e, a.0, a.1, a.2, half, b.0, b.1, b.2)
        }),
    ));
    Ok(v)
}

pub fn fista_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let mut up = |what: &str, scale: f32| -> saeforge::Result<T> {
        Ok(Rc::new(gpu.upload(
            what,
            &[B, N],
            &gaussian(&mut rng, B * N, scale),
        )?))
    };
    let (g, z_old, y, z_new) = (
        up("g", 0.1)?,
        up("z_old", 1.0)?,
        up("y", 1.0)?,
        up("z_new", 1.0)?,
    );
    let out = Rc::new(gpu.zeros("row change", &[B, 2])?);
    let bn = format!("B={B}, n={N}");
    let mut v = Vec::new();
    // read g, z_old, y (3 B n); write y, z_new (2 B n)
    let (g2, zo, y2, zn) = (g.clone(), z_old.clone(), y.clone(), z_new.clone());
    v.push(bytes_case(
        "fista_step",
        "vec4",
        bn.clone(),
        b4(5 * B * N),
        Box::new(move |gp, e| fista::fista_step(gp, e, &g2, &zo, B, N, 0.1, 0.01, 0.5, &y2, &zn)),
    ));
    // read z_new, z_old (2 B n); write out (2 B)
    v.push(bytes_case(
        "fista_row_change",
        "vec4",
        bn,
        b4(2 * B * N + 2 * B),
        Box::new(move |gp, e| fista::fista_row_change(gp, e, &z_new, &z_old, B, N, &out)),
    ));
    Ok(v)
}

pub fn toy_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    // The paper's n = 20 -> m = 5 models, 64 instances (density levels), batch 1024.
    let s = toy::ToyShape {
        instances: 64,
        rows: 1024,
        n: 20,
        m: 5,
    };
    let chunk = 128;
    let chunks = s.chunks(chunk);
    let (e, r, n, m) = (s.instances, s.rows, s.n, s.m);
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let mut up = |what: &str, shape: &[usize], scale: f32| -> saeforge::Result<T> {
        let data = gaussian(&mut rng, shape.iter().product(), scale);
        Ok(Rc::new(gpu.upload(what, shape, &data)?))
    };
    let density = Rc::new(gpu.upload("density", &[e], &vec![0.1; e])?);
    let importance = Rc::new(gpu.upload("importance", &[e, n], &vec![1.0; e * n])?);
    let x = up("toy x", &[e, r, n], 1.0)?;
    let w = up("toy w", &[e, n, m], 0.3)?;
    let b = up("toy b", &[e, n], 0.1)?;
    let h = up("toy h", &[e, r, m], 1.0)?;
    let g = up("toy g", &[e, r, n], 1.0)?;
    let dh = up("toy dh", &[e, r, m], 1.0)?;
    let loss = up("toy loss", &[e, r], 1.0)?;
    let pw = up("toy pw", &[e, chunks, n, m], 1.0)?;
    let pb = up("toy pb", &[e, chunks, n], 1.0)?;
    let dw = up("toy dw", &[e, n, m], 1.0)?;
    let step = Rc::new(toy::step_buffer(gpu));
    toy::write_step(gpu, &step, 7);
    let shape = format!("{e} instances, rows={r}, n={n}, m={m}");
    let mut v = Vec::new();
    // read density (e); write x (e r n)
    let (dn, x2) = (density.clone(), x.clone());
    v.push(bytes_case(
        "toy_data",
        "-",
        shape.clone(),
        b4(e + e * r * n),
        Box::new(move |gp, en| toy::toy_data(gp, en, s, 5, &step, &dn, &x2)),
    ));
    // read x (e r n), w (e n m), b, importance (2 e n); write h, dh (2 e r m), g (e r n),
    // loss (e r)
    let (x2, w2, b2, i2, h2, g2, dh2, l2) = (
        x.clone(),
        w.clone(),
        b.clone(),
        importance.clone(),
        h.clone(),
        g.clone(),
        dh.clone(),
        loss.clone(),
    );
    v.push(bytes_case(
        "toy_forward",
        "-",
        shape.clone(),
        b4(2 * e * r * n + e * n * m + 2 * e * n + 2 * e * r * m + e * r),
        Box::new(move |gp, en| {
            toy::toy_forward(gp, en, s, true, &x2, &w2, &b2, &i2, &h2, &g2, &dh2, &l2)
        }),
    ));
    // read x, g (2 e r n), h, dh (2 e r m); write pw (e chunks n m), pb (e chunks n)
    let (pw2, pb2) = (pw.clone(), pb.clone());
    v.push(bytes_case(
        "toy_grad",
        "-",
        format!("{shape}, chunk={chunk}"),
        b4(2 * e * r * n + 2 * e * r * m + e * chunks * (n * m + n)),
        Box::new(move |gp, en| toy::toy_grad(gp, en, s, chunk, &x, &g, &h, &dh, &pw2, &pb2)),
    ));
    // read pw (e chunks n m); write dw (e n m)
    v.push(bytes_case(
        "toy_sum_chunks",
        "-",
        format!("{e} x {chunks} chunks x {}", n * m),
        b4(e * chunks * n * m + e * n * m),
        Box::new(move |gp, en| toy::toy_sum_chunks(gp, en, &pw, e, chunks, n * m, &dw)),
    ));
    Ok(v)
}

/// Matryoshka's level-aware kernels on the TopK codes with widths N/16, N/4, N (each timed
/// on its own; bytes: what each must read and write at least).
pub fn matryoshka_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    use saeforge::kernels::matryoshka as km;
    let d = super::D;
    let widths = [N as u32 / 16, N as u32 / 4, N as u32];
    let lv = widths.len();
    let w = Rc::new(gpu.upload_u32("widths", &[lv], &widths)?);
    let levels = Rc::new(gpu.zeros("x_hat levels", &[lv * B, d])?);
    let dy = Rc::new(gpu.zeros("dy levels", &[lv * B, d])?);
    let shape = format!("B={B}, n={N}, d={d}, k={K}, widths {widths:?}");
    let mut v = Vec::new();
    let (rp, idx, val, wd, bd) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.val.clone(),
        t.w_dec.clone(),
        t.b_dec.clone(),
    );
    let (w1, l1) = (w.clone(), levels.clone());
    v.push(bytes_case(
        "matryoshka_decode",
        "levels",
        shape.clone(),
        b4(B * K * (2 + d) + lv * B * d),
        Box::new(move |g, e| {
            km::matryoshka_decode(g, e, &rp, &idx, &val, &wd, &bd, &w1, B, N, d, &l1)
        }),
    ));
    let (x, w2, l2, dy2) = (t.x.clone(), w.clone(), levels.clone(), dy.clone());
    v.push(bytes_case(
        "matryoshka_residuals",
        "levels",
        shape.clone(),
        b4(B * d * (1 + 2 * lv)),
        Box::new(move |g, e| km::matryoshka_residuals(g, e, &x, &l2, &w2, B, d, 0.5, &dy2)),
    ));
    let (rp, idx, wd, w3, dy3, out) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.w_dec.clone(),
        w.clone(),
        dy.clone(),
        t.dval.clone(),
    );
    v.push(bytes_case(
        "sparse_dot_levels",
        "levels",
        shape.clone(),
        b4(B * K * (3 + 2 * d)),
        Box::new(move |g, e| km::sparse_dot_levels(g, e, &rp, &idx, &dy3, &wd, &w3, B, N, d, &out)),
    ));
    let (lp, lr, ls, val, w4, dy4, dw) = (
        t.lat_ptr.clone(),
        t.lat_row.clone(),
        t.lat_slot.clone(),
        t.val.clone(),
        w.clone(),
        dy.clone(),
        t.out_bn.clone(),
    );
    v.push(bytes_case(
        "gather_dw_dec_levels",
        "levels",
        shape,
        b4(B * K * (3 + d) + N * d),
        Box::new(move |g, e| {
            let dw = dw.prefix(&[N, d]);
            km::gather_dw_dec_levels(
                g,
                e,
                (&lp, &lr, &ls),
                &val,
                &dy4,
                &w4,
                (B, N, d),
                false,
                &dw,
            )
        }),
    ));
    Ok(v)
}
