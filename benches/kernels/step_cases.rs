//! The bandwidth-bound cases of a training step's other launchers (activations, top-k,
//! sparse, reductions, optimizer, ops) at the production shape, rated in bytes against the
//! copy ceiling; the rule for the bytes is above `B` in ../kernels.rs.

use super::*;

pub(super) fn activation_cases(t: &Inputs) -> Vec<Case> {
    let bn = format!("B={B}, n={N}");
    let mut v = Vec::new();
    // read pre (B n), write z (B n)
    let (pre, z) = (t.pre.clone(), t.out_bn.clone());
    v.push(bytes_case(
        "relu_forward",
        "-",
        bn.clone(),
        b4(2 * B * N),
        Box::new(move |g, e| relu_forward(g, e, &pre, &z)),
    ));
    // read pre, dz (2 B n), write dpre (B n)
    let (pre, dz, dpre) = (t.pre.clone(), t.dz.clone(), t.out_bn.clone());
    v.push(bytes_case(
        "relu_backward",
        "-",
        bn.clone(),
        b4(3 * B * N),
        Box::new(move |g, e| relu_backward(g, e, &pre, &dz, &dpre)),
    ));
    // read pre (B n), log_theta (n), write z (B n)
    let (pre, lt, z) = (t.pre.clone(), t.log_theta.clone(), t.out_bn.clone());
    v.push(bytes_case(
        "jumprelu_forward",
        "-",
        bn.clone(),
        b4(2 * B * N + N),
        Box::new(move |g, e| activations::jumprelu_forward(g, e, &pre, B, N, &lt, &z)),
    ));
    // read pre, dz (2 B n), log_theta (n), write dpre (B n), dlog_theta (n)
    let (pre, dz, lt, dpre, dlt) = (
        t.pre.clone(),
        t.dz.clone(),
        t.log_theta.clone(),
        t.out_bn.clone(),
        t.out_n.clone(),
    );
    v.push(bytes_case(
        "jumprelu_backward",
        "vec4",
        bn,
        b4(3 * B * N + 2 * N),
        Box::new(move |g, e| {
            activations::jumprelu_backward(g, e, &pre, &dz, B, N, &lt, 0.05, 1e-3, &dpre, &dlt)
        }),
    ));
    v
}

pub(super) fn topk_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let mut v = Vec::new();
    // read pre (B n), write row_ptr (B + 1), idx, val (2 B k), threshold (1); the kernel
    // reads pre five times (three radix levels, count, scatter): not counted
    let pre = t.pre.clone();
    let row_ptr = zeros_u32("bt row_ptr", &[B + 1])?;
    let (idx, val) = (zeros_u32("bt idx", &[B * K])?, zeros("bt val", &[B * K])?);
    let thr = zeros("bt threshold", &[1])?;
    let scratch = zeros_u32("bt scratch", &[topk::batchtopk_scratch_len(B, N, B * K)])?;
    v.push(bytes_case(
        "batchtopk",
        "radix",
        format!("B={B}, n={N}, k_total={}", B * K),
        b4(B * N + (B + 1) + 2 * B * K + 1),
        Box::new(move |g, e| topk::batchtopk(g, e, &pre, &row_ptr, &idx, &val, &thr, &scratch)),
    ));
    Ok(v)
}

pub(super) fn sparse_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let u = t.distinct;
    let cap = B * K;
    let codes = format!("B={B}, k={K}, n={N}, d={D}");
    let mut v = Vec::new();
    // read row_ptr (B + 1), idx, val (2 B k), the u rows of W_dec the codes name (u d),
    // b_dec (d); write x_hat (B d)
    let (rp, idx, val, w, bd) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.val.clone(),
        t.w_dec.clone(),
        t.b_dec.clone(),
    );
    let x_hat = zeros("x_hat out", &[B, D])?;
    v.push(bytes_case(
        "sparse_decode",
        "vec4",
        codes.clone(),
        b4((B + 1) + 2 * cap + u * D + D + B * D),
        Box::new(move |g, e| {
            sparse::sparse_decode(g, e, &rp, &idx, &val, &w, Some(&bd), B, N, D, &x_hat)
        }),
    ));
    // read row_ptr (B + 1), idx (B k), dy (B d), the u rows of W_dec (u d); write g (B k)
    let (rp, idx, dy, w) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.dy.clone(),
        t.w_dec.clone(),
    );
    let gs = zeros("gslot out", &[cap])?;
    v.push(bytes_case(
        "sparse_dot",
        "vec4",
        codes.clone(),
        b4((B + 1) + cap + B * D + u * D + cap),
        Box::new(move |g, e| sparse::sparse_dot(g, e, &rp, &idx, &dy, &w, B, N, D, &gs)),
    ));
    // read row_ptr (B + 1), idx (B k); write lat_ptr (n + 1), lat_row, lat_slot (2 B k)
    let (rp, idx) = (t.row_ptr.clone(), t.idx.clone());
    let lp = zeros_u32("lat_ptr out", &[N + 1])?;
    let lr = zeros_u32("lat_row out", &[cap])?;
    let ls = zeros_u32("lat_slot out", &[cap])?;
    let marks_len = sparse::transpose_marks_len(B, N, cap);
    let mk = zeros_u32("transpose marks", &[marks_len])?;
    v.push(bytes_case(
        "build_transpose",
        "5 pass",
        format!("B={B}, k={K}, n={N}"),
        // row_ptr, idx and the outputs; the masks: zeroed, set, read twice; the counts
        // written and read; each slot's row written and read
        b4((B + 1) + cap + (N + 1) + 2 * cap + 6 * (marks_len - cap) / 2 + 2 * cap),
        Box::new(move |g, e| sparse::build_transpose(g, e, &rp, &idx, B, N, &mk, &lp, &lr, &ls)),
    ));
    // read lat_ptr (n + 1), lat_row, lat_slot, val (3 B k), dy (B d); write dw_dec (n d)
    let (lp, lr, ls, val, dy) = (
        t.lat_ptr.clone(),
        t.lat_row.clone(),
        t.lat_slot.clone(),
        t.val.clone(),
        t.dy.clone(),
    );
    let dw = zeros("dW_dec out", &[N, D])?;
    v.push(bytes_case(
        "gather_dw_dec",
        "vec4",
        codes.clone(),
        b4((N + 1) + 3 * cap + B * D + N * D),
        Box::new(move |g, e| {
            sparse::gather_dw_dec(g, e, &lp, &lr, &ls, &val, &dy, N, D, false, &dw)
        }),
    ));
    // read lat_ptr (n + 1), lat_row, lat_slot, dval (3 B k), xc (B d); write dw_enc (d n)
    let (lp, lr, ls, dval, xc) = (
        t.lat_ptr.clone(),
        t.lat_row.clone(),
        t.lat_slot.clone(),
        t.dval.clone(),
        t.xc.clone(),
    );
    let dw = zeros("dW_enc out", &[D, N])?;
    v.push(bytes_case(
        "gather_dw_enc",
        "vec4",
        codes.clone(),
        b4((N + 1) + 3 * cap + B * D + D * N),
        Box::new(move |g, e| {
            sparse::gather_dw_enc(g, e, &lp, &lr, &ls, &dval, &xc, N, D, false, &dw)
        }),
    ));
    // read lat_ptr (n + 1), lat_slot, dval (2 B k); write db_enc (n)
    let (lp, ls, dval, db) = (
        t.lat_ptr.clone(),
        t.lat_slot.clone(),
        t.dval.clone(),
        t.out_n.clone(),
    );
    v.push(bytes_case(
        "gather_db_enc",
        "-",
        format!("B={B}, k={K}, n={N}"),
        b4((N + 1) + 2 * cap + N),
        Box::new(move |g, e| sparse::gather_db_enc(g, e, &lp, &ls, &dval, N, false, &db)),
    ));
    Ok(v)
}

pub(super) fn reduce_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let u = t.distinct;
    let cap = B * K;
    let bd = format!("B={B}, d={D}");
    let bn = format!("B={B}, n={N}");
    let nd = format!("n={N}, d={D}");
    let metrics = zeros("metrics", &[reduce::METRIC_SLOTS])?;
    let fired = zeros_u32("fired", &[N])?;
    let mut v = Vec::new();
    // read x (B d), b (d); write out (B d)
    let (x, b) = (t.x.clone(), t.b_dec.clone());
    let out = zeros("sub_row out", &[B, D])?;
    v.push(bytes_case(
        "sub_row",
        "-",
        bd.clone(),
        b4(2 * B * D + D),
        Box::new(move |g, e| reduce::sub_row(g, e, &x, &b, B, D, &out)),
    ));
    // --batch-dtype f16's widening: read B d halves (2 bytes each); write x (B d)
    let halves = zeros_u32("batch as f16", &[B * D / 2])?;
    let x = zeros("unpacked", &[B, D])?;
    v.push(bytes_case(
        "unpack_f16",
        "-",
        bd.clone(),
        b4(B * D) * 1.5,
        Box::new(move |g, e| saeforge::kernels::ops::unpack_f16(g, e, &halves, &x)),
    ));
    // read a, b (2 B d); write out (B d)
    let (a, b) = (t.x.clone(), t.x_hat.clone());
    let out = zeros("sub out", &[B, D])?;
    v.push(bytes_case(
        "sub",
        "-",
        bd.clone(),
        b4(3 * B * D),
        Box::new(move |g, e| reduce::sub(g, e, &a, &b, &out)),
    ));
    // read target, pred (2 B d); write grad (B d); metrics SSE, SST read-write (4)
    let (x, xh, m) = (t.x.clone(), t.x_hat.clone(), metrics.clone());
    let grad = zeros("mse grad", &[B, D])?;
    v.push(bytes_case(
        "mse_backward",
        "+SST",
        bd.clone(),
        b4(3 * B * D + 4),
        Box::new(move |g, e| {
            reduce::mse_backward(
                g,
                e,
                &x,
                &xh,
                B,
                D,
                2.0 / B as f32,
                &grad,
                &m,
                reduce::slot::SSE,
                Some(reduce::slot::SST),
            )
        }),
    ));
    // read w (n d); write norms (n)
    let (w, norms) = (t.w_dec.clone(), t.out_n.clone());
    v.push(bytes_case(
        "row_norms",
        "vec4",
        nd.clone(),
        b4(N * D + N),
        Box::new(move |g, e| reduce::row_norms(g, e, &w, N, D, &norms)),
    ));
    // read row_ptr (B + 1), idx, val (2 B k), the u norms the codes name (u); fired of
    // those u latents read-write (2 u); metrics L0, L1 read-write (4)
    let (rp, idx, val, norms, f, m) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.val.clone(),
        t.norms.clone(),
        fired.clone(),
        metrics.clone(),
    );
    v.push(bytes_case(
        "sparse_stats",
        "-",
        format!("B={B}, k={K}, n={N}"),
        b4((B + 1) + 2 * cap + u + 2 * u + 4),
        Box::new(move |g, e| reduce::sparse_stats(g, e, &rp, &idx, &val, B, N, &norms, &f, &m)),
    ));
    // read z (B n), norms (n); fired read-write (2 n); metrics L0, L1 read-write (4)
    let (z, norms, f, m) = (t.z.clone(), t.norms.clone(), fired.clone(), metrics.clone());
    v.push(bytes_case(
        "dense_stats",
        "-",
        bn.clone(),
        b4(B * N + N + 2 * N + 4),
        Box::new(move |g, e| reduce::dense_stats(g, e, &z, B, N, &norms, &f, &m)),
    ));
    // read a (B cols); write out (cols): over the latents (the dense path's b_enc), and
    // over d (b_dec's gradient, every step's)
    let out_d = Rc::new(gpu.zeros("col_sum out", &[D])?);
    for (a, cols, out, shape) in [(&t.dz, N, &t.out_n, &bn), (&t.dy, D, &out_d, &bd)] {
        let (a, out) = (a.clone(), out.clone());
        v.push(bytes_case(
            "col_sum",
            "vec4",
            shape.clone(),
            b4(B * cols + cols),
            Box::new(move |g, e| reduce::col_sum(g, e, &a, B, cols, &out, false)),
        ));
    }
    // fired, since, total read-write (6 n); metrics DEAD written (1)
    let since = Rc::new(gpu.upload_u32("since copy", &[N], &gpu.read_u32(&t.since)?)?);
    let total = zeros_u32("fire_total", &[N])?;
    let (f, m) = (fired.clone(), metrics.clone());
    v.push(bytes_case(
        "update_dead",
        "-",
        format!("n={N}"),
        b4(6 * N + 1),
        Box::new(move |g, e| reduce::update_dead(g, e, &f, &since, &total, B, DEAD_AFTER, &m)),
    ));
    // read since (n); write mask (n)
    let since = t.since.clone();
    let mask = zeros_u32("mask out", &[N])?;
    v.push(bytes_case(
        "dead_mask",
        "-",
        format!("n={N}"),
        b4(2 * N),
        Box::new(move |g, e| reduce::dead_mask(g, e, &since, DEAD_AFTER, &mask)),
    ));
    // read z (B n), norms (n); dz read-write (2 B n)
    let (z, norms, dz) = (t.z.clone(), t.norms.clone(), t.out_bn2.clone());
    v.push(bytes_case(
        "l1_backward",
        "-",
        bn.clone(),
        b4(3 * B * N + N),
        Box::new(move |g, e| reduce::l1_backward(g, e, &z, B, N, &norms, 1e-4, &dz)),
    ));
    // read zsum (n), w_dec (n d), norms (n); dw_dec read-write (2 n d)
    let zsum = Rc::new(gpu.upload("zsum", &[N], &vec![1.0; N])?);
    let (w, norms) = (t.w_dec.clone(), t.norms.clone());
    let dw = zeros("l1 dW_dec", &[N, D])?;
    v.push(bytes_case(
        "l1_decoder_grad",
        "-",
        nd,
        b4(3 * N * D + 2 * N),
        Box::new(move |g, e| reduce::l1_decoder_grad(g, e, &zsum, &w, &norms, N, D, 1e-4, &dw)),
    ));
    Ok(v)
}

pub(super) fn optim_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let mut up = |what: &str, shape: &[usize], scale: f32| -> saeforge::Result<T> {
        let data = gaussian(&mut rng, shape.iter().product(), scale);
        Ok(Rc::new(gpu.upload(what, shape, &data)?))
    };
    let dn = format!("W_enc: d={D} x n={N}");
    let nd = format!("W_dec: n={N} x d={D}");
    let param = up("W_enc", &[D, N], 0.05)?;
    let grad = up("grad W_enc", &[D, N], 1e-3)?;
    let m = up("adam m", &[D, N], 1e-4)?;
    let v2 = Rc::new(gpu.upload("adam v", &[D, N], &vec![1e-6; D * N])?);
    let clip = Rc::new(gpu.upload("clip", &[2], &[1.0, 1.0])?);
    let acc = up("grad sumsq", &[5], 1.0)?;
    let hyper = Rc::new(optim::hyper_buffer(gpu));
    optim::write_hyper(
        gpu,
        &hyper,
        &optim::AdamHyper::at_step(1e-4, 0.9, 0.999, 1e-8, 0.0, 100),
    );
    let mut v = Vec::new();
    // param, m, v read-write (6 d n), grad read (d n), clip[0] read (1)
    let (p, gr, mm, vv, h, c) = (
        param.clone(),
        grad.clone(),
        m.clone(),
        v2.clone(),
        hyper.clone(),
        clip.clone(),
    );
    v.push(bytes_case(
        "adam",
        "vec4",
        dn.clone(),
        b4(7 * D * N + 1),
        Box::new(move |g, e| optim::adam(g, e, &p, &gr, &mm, &vv, &h, &c)),
    ));
    // read g (d n); write acc[slot] (1)
    let (gr, a) = (grad.clone(), acc.clone());
    v.push(bytes_case(
        "sumsq",
        "vec4",
        dn,
        b4(D * N + 1),
        Box::new(move |g, e| optim::sumsq(g, e, &gr, &a, 0)),
    ));
    // read acc (5); write clip (2)
    // (into its own output, so that adam's clip stays 1)
    let a = acc.clone();
    let clip_out = Rc::new(gpu.zeros("clip out", &[2])?);
    v.push(bytes_case(
        "clip_scale",
        "-",
        "5 slots".to_string(),
        b4(5 + 2),
        Box::new(move |g, e| optim::clip_scale(g, e, &a, 5, 1.0, &clip_out)),
    ));
    // The unit-norm decoder's pair, as the step records it. decoder_grad_prep: read w, g
    // (2 n d); write coef, part (2 n). sum_slot: read part (n). adam_unit_rows: param, m, v
    // read-write (6 n d), grad read (n d), the row re-read for the normalisation (n d),
    // coef read (n).
    let w = Rc::new(gpu.upload("W_dec copy", &[N, D], &gpu.read_f32(&t.w_dec)?)?);
    let gd = up("grad W_dec", &[N, D], 1e-3)?;
    let md = up("adam m W_dec", &[N, D], 1e-4)?;
    let vd = Rc::new(gpu.upload("adam v W_dec", &[N, D], &vec![1e-6; N * D])?);
    let coef = Rc::new(gpu.zeros("decoder coef", &[N])?);
    let part = Rc::new(gpu.zeros("decoder part", &[N])?);
    let (w2, g2, c2, p2) = (w.clone(), gd.clone(), coef.clone(), part.clone());
    v.push(bytes_case(
        "decoder_grad_prep",
        "vec4",
        nd.clone(),
        b4(2 * N * D + 2 * N),
        Box::new(move |g, e| optim::decoder_grad_prep(g, e, &w2, &g2, N, D, &c2, &p2)),
    ));
    let (p2, a) = (part.clone(), acc.clone());
    v.push(bytes_case(
        "sum_slot",
        "-",
        format!("n={N}"),
        b4(N + 1),
        Box::new(move |g, e| optim::sum_slot(g, e, &p2, &a, 1)),
    ));
    v.push(bytes_case(
        "adam_unit_rows",
        "vec4",
        nd,
        b4(8 * N * D + N + 1),
        Box::new(move |g, e| {
            optim::adam_unit_rows(g, e, &w, &gd, &coef, &md, &vd, &hyper, &clip, N, D)
        }),
    ));
    Ok(v)
}

pub(super) fn ops_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut v = Vec::new();
    // write a (b d): the AuxK reconstruction a gated path clears
    let a = Rc::new(gpu.upload("e_hat", &[B, D], &gaussian(&mut rng, B * D, 1.0))?);
    v.push(bytes_case(
        "zero",
        "-",
        format!("e_hat: b={B} x d={D}"),
        b4(B * D),
        Box::new(move |g, e| ops::zero(g, e, &a)),
    ));
    // read thr (1); state read-write (2)
    let thr = Rc::new(gpu.upload("batch threshold", &[1], &[0.5])?);
    let state = Rc::new(gpu.upload("threshold", &[1], &[0.4])?);
    v.push(bytes_case(
        "threshold_ema",
        "-",
        "1 value".to_string(),
        b4(3),
        Box::new(move |g, e| ops::threshold_ema(g, e, &thr, &state, 0.99, false)),
    ));
    Ok(v)
}
