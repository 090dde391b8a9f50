//! The GEMM cases: every product of a training step on every path the adapter can take,
//! and gemm_reg's tile sizes, rated in FLOPs against the FMA ceiling (see ../kernels.rs).

use super::*;

// ------------------------------------------------------------------ GEMM cases

pub(super) fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub(super) fn stored(rows: usize, cols: usize, t: bool) -> String {
    if t {
        format!("({cols}x{rows})^T")
    } else {
        format!("{rows}x{cols}")
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_case(
    gpu: &Gpu,
    name: &str,
    spec: GemmSpec,
    a: &Rc<GpuTensor>,
    b: &Rc<GpuTensor>,
    bias: Option<&Rc<GpuTensor>>,
    c: &Rc<GpuTensor>,
    path: GemmPath,
) -> Case {
    gemm_case_tuned(gpu, name, spec, a, b, bias, c, path, GemmTuning::of(gpu))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_case_tuned(
    gpu: &Gpu,
    name: &str,
    spec: GemmSpec,
    a: &Rc<GpuTensor>,
    b: &Rc<GpuTensor>,
    bias: Option<&Rc<GpuTensor>>,
    c: &Rc<GpuTensor>,
    path: GemmPath,
    tuning: GemmTuning,
) -> Case {
    let shape = format!(
        "{} * {}{}",
        stored(spec.m, spec.k, spec.trans_a),
        stored(spec.k, spec.n, spec.trans_b),
        if bias.is_some() { " + bias" } else { "" }
    );
    let resolved = match path {
        GemmPath::Auto => gemm::auto_path(gpu, &spec),
        p => p,
    };
    let variant = match resolved {
        GemmPath::TextureSubgroup if path == GemmPath::Auto && spec.m <= 8 => "sg8".to_string(),
        GemmPath::TextureSubgroup => format!("sg{}", tuning.sg_rows),
        p => p.name().to_string(),
    };
    let (a, b, bias, c) = (a.clone(), b.clone(), bias.cloned(), c.clone());
    Case {
        name: name.to_string(),
        shape,
        variant,
        work: Work::Flops(spec.flops()),
        record: Box::new(move |g, e| {
            gemm::gemm_tuned(g, e, &spec, &a, &b, bias.as_deref(), &c, path, &tuning)
        }),
    }
}

/// The GEMMs of a training step at batch 1024, d_in 512, d_sae 16384 (the encoder first),
/// plus the encoder at d_sae 256 on each kernel path for comparison.
pub(super) fn gemm_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    let (bsz, d, n) = (1024, 512, 16384);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut up = |what: &str, shape: &[usize]| -> saeforge::Result<Rc<GpuTensor>> {
        let data = random(&mut rng, shape.iter().product());
        Ok(Rc::new(gpu.upload(what, shape, &data)?))
    };
    let x = up("x", &[bsz, d])?;
    let w_enc = up("W_enc", &[d, n])?;
    let b_enc = up("b_enc", &[n])?;
    let z = up("z", &[bsz, n])?;
    let w_dec = up("W_dec", &[n, d])?;
    let b_dec = up("b_dec", &[d])?;
    let w_small = up("W_enc[:, :256]", &[d, 256])?;
    let b_small = up("b_enc[:256]", &[256])?;
    let out_bn = Rc::new(gpu.zeros("out (B, n)", &[bsz, n])?);
    let out_bd = Rc::new(gpu.zeros("out (B, d)", &[bsz, d])?);
    let out_nd = Rc::new(gpu.zeros("out (n, d)", &[n, d])?);
    let out_dn = Rc::new(gpu.zeros("out (d, n)", &[d, n])?);
    let out_1n = Rc::new(gpu.zeros("out (1, n)", &[1, n])?);
    let out_small = Rc::new(gpu.zeros("out (B, 256)", &[bsz, 256])?);
    let x1 = up("x[0]", &[1, d])?;
    let sp = |m, nn, k, ta, tb| GemmSpec {
        m,
        n: nn,
        k,
        trans_a: ta,
        trans_b: tb,
        alpha: 1.0,
        beta: 0.0,
    };
    let auto = GemmPath::Auto;
    let mut cases = vec![
        // pre = x W_enc + b_enc: the one dense product of a TopK step
        gemm_case(
            gpu,
            "gemm_encoder",
            sp(bsz, n, d, false, false),
            &x,
            &w_enc,
            Some(&b_enc),
            &out_bn,
            auto,
        ),
        // x_hat = z W_dec + b_dec, dense (ReLU / JumpReLU SAEs)
        gemm_case(
            gpu,
            "gemm_decoder",
            sp(bsz, d, n, false, false),
            &z,
            &w_dec,
            Some(&b_dec),
            &out_bd,
            auto,
        ),
        // dz = dx_hat W_dec^T
        gemm_case(
            gpu,
            "gemm_dz",
            sp(bsz, n, d, false, true),
            &x,
            &w_dec,
            None,
            &out_bn,
            auto,
        ),
        // dW_dec = z^T dx_hat
        gemm_case(
            gpu,
            "gemm_dw_dec",
            sp(n, d, bsz, true, false),
            &z,
            &x,
            None,
            &out_nd,
            auto,
        ),
        // dW_enc = x^T dpre
        gemm_case(
            gpu,
            "gemm_dw_enc",
            sp(d, n, bsz, true, false),
            &x,
            &z,
            None,
            &out_dn,
            auto,
        ),
        // one row against W_dec^T
        gemm_case(
            gpu,
            "gemm_row_nt",
            sp(1, n, d, false, true),
            &x1,
            &w_dec,
            None,
            &out_1n,
            auto,
        ),
    ];
    // The production encoder on each texture kernel (the first case is whichever Auto picks).
    let enc_spec = sp(bsz, n, d, false, false);
    if gemm::texture_fits(gpu, &enc_spec) {
        let tex = GemmTuning::of(gpu);
        let mut variants = vec![("gemm_encoder_texture", GemmPath::Texture, tex)];
        if gpu.has_subgroups(8) {
            for (name, rows) in [
                ("gemm_encoder_sg8", 8),
                ("gemm_encoder_sg16", 16),
                ("gemm_encoder_sg32", 32),
            ] {
                let t = GemmTuning {
                    sg_rows: rows,
                    ..tex
                };
                variants.push((name, GemmPath::TextureSubgroup, t));
            }
        }
        for (name, path, tuning) in variants {
            cases.push(gemm_case_tuned(
                gpu,
                name,
                enc_spec,
                &x,
                &w_enc,
                Some(&b_enc),
                &out_bn,
                path,
                tuning,
            ));
        }
    }
    // The encoder with the block maxima of its output (codes::selection::block_max, block 32; of
    // pre - off for JumpReLU) that every code stage reads: fused into the GEMM's epilogue
    // (gemm_block_max) against the GEMM then block_max; main prints the ratio of each pair.
    let nb = codes::blocks(n, codes::BLOCK);
    let bmax = Rc::new(gpu.zeros_u32("bmax (B, n / 32)", &[bsz, nb])?);
    let off = up("off", &[n])?;
    for (label, with_off) in [
        ("gemm_encoder_bmax", false),
        ("gemm_encoder_bmax_off", true),
    ] {
        for fused in [true, false] {
            let mut case = gemm_case(
                gpu,
                &format!("{label}_{}", if fused { "fused" } else { "separate" }),
                enc_spec,
                &x,
                &w_enc,
                Some(&b_enc),
                &out_bn,
                auto,
            );
            let (x, w, b, c, bm) = (
                x.clone(),
                w_enc.clone(),
                b_enc.clone(),
                out_bn.clone(),
                bmax.clone(),
            );
            let off = with_off.then(|| off.clone());
            let is_fused =
                fused && gemm::fuses_block_max(gpu, &enc_spec, auto, &GemmTuning::of(gpu));
            // "fused" when one kernel does both, else the GEMM's path (then block_max).
            if is_fused {
                case.variant = "fused".to_string();
            }
            case.record = Box::new(move |g, e| {
                let o = off.as_deref();
                if fused {
                    gemm::gemm_block_max(g, e, &enc_spec, &x, &w, Some(&b), &c, o, &bm)
                } else {
                    gemm::gemm(g, e, &enc_spec, &x, &w, Some(&b), &c)?;
                    codes::selection::block_max(g, e, &c, codes::BLOCK, None, o, &bm)
                }
            });
            cases.push(case);
        }
    }
    for path in [
        GemmPath::Texture,
        GemmPath::Reg,
        GemmPath::Tiled,
        GemmPath::General,
    ] {
        let s = sp(bsz, 256, d, false, false);
        if path == GemmPath::Texture && !gemm::texture_fits(gpu, &s) {
            continue;
        }
        cases.push(gemm_case(
            gpu,
            &format!("gemm_encoder_n256_{}", path.name()),
            s,
            &x,
            &w_small,
            Some(&b_small),
            &out_small,
            path,
        ));
    }
    cases.extend(reg_cases(
        gpu, &x, &w_enc, &b_enc, &out_bn, &z, &w_dec, &b_dec, &out_bd,
    )?);
    Ok(cases)
}

/// gemm_reg (GemmPath::Reg) against gemm_tiled, whatever Auto picks: the decoder shape with
/// k = 2048 on every adapter (1024 x 512 x 2048, what lavapipe can time); on hardware
/// adapters also the production encoder and decoder on both, a sweep of gemm_reg's tiles
/// on the encoder (gemm_sweep_reg_<wx>x<wy>x<bk>: tile (8 wy) x (8 wx), bk k-steps per
/// stage), and 4096 x 4096 x 65536 (gemm_big_*, when the adapter binds 1 GiB).
#[allow(clippy::too_many_arguments)]
pub(super) fn reg_cases(
    gpu: &Gpu,
    x: &Rc<GpuTensor>,
    w_enc: &Rc<GpuTensor>,
    b_enc: &Rc<GpuTensor>,
    out_bn: &Rc<GpuTensor>,
    z: &Rc<GpuTensor>,
    w_dec: &Rc<GpuTensor>,
    b_dec: &Rc<GpuTensor>,
    out_bd: &Rc<GpuTensor>,
) -> saeforge::Result<Vec<Case>> {
    let [bsz, d] = [x.shape[0], x.shape[1]];
    let n = w_enc.shape[1];
    let enc = GemmSpec::nn(bsz, n, d);
    let dec = GemmSpec::nn(bsz, d, n);
    let paths = [GemmPath::Reg, GemmPath::Tiled];
    let mut cases = Vec::new();
    let k_short = 2048;
    let z_short = Rc::new(z.prefix(&[bsz, k_short]));
    let w_short = Rc::new(w_dec.prefix(&[k_short, d]));
    for path in paths {
        cases.push(gemm_case(
            gpu,
            &format!("gemm_decoder_k{k_short}_{}", path.name()),
            GemmSpec::nn(bsz, d, k_short),
            &z_short,
            &w_short,
            Some(b_dec),
            out_bd,
            path,
        ));
    }
    // The adapter's own type, not SAEFORGE_FORCE_PATH's: lavapipe would take minutes here.
    if gpu.info.device_type == wgpu::DeviceType::Cpu {
        return Ok(cases);
    }
    for path in paths {
        cases.push(gemm_case(
            gpu,
            &format!("gemm_encoder_{}", path.name()),
            enc,
            x,
            w_enc,
            Some(b_enc),
            out_bn,
            path,
        ));
        cases.push(gemm_case(
            gpu,
            &format!("gemm_decoder_{}", path.name()),
            dec,
            z,
            w_dec,
            Some(b_dec),
            out_bd,
            path,
        ));
    }
    let own = GemmTuning::of(gpu);
    for (wx, wy, bk) in [
        (16, 16, 8),
        (16, 16, 16),
        (16, 16, 32),
        (16, 8, 16),
        (8, 16, 16),
        (8, 8, 16),
        (32, 8, 16),
    ] {
        let rg = RegTiles { wx, wy, bk };
        if rg.unfit(&gpu.limits, false).is_some() {
            continue;
        }
        let mut case = gemm_case_tuned(
            gpu,
            &format!("gemm_sweep_reg_{wx}x{wy}x{bk}"),
            enc,
            x,
            w_enc,
            Some(b_enc),
            out_bn,
            GemmPath::Reg,
            GemmTuning { rg, ..own },
        );
        case.variant = format!("{}x{} bk {bk}", rg.bm(), rg.bn());
        cases.push(case);
    }
    let (bm, bk, bn) = (4096, 4096, 65536);
    let gib = (bk * bn * 4) as u64;
    if gpu.limits.max_storage_buffer_binding_size >= gib && gpu.limits.max_buffer_size >= gib {
        let a = Rc::new(gpu.zeros("big A", &[bm, bk])?);
        let b = Rc::new(gpu.zeros("big B", &[bk, bn])?);
        let c = Rc::new(gpu.zeros("big C", &[bm, bn])?);
        for path in paths {
            cases.push(gemm_case(
                gpu,
                &format!("gemm_big_{}", path.name()),
                GemmSpec::nn(bm, bn, bk),
                &a,
                &b,
                None,
                &c,
                path,
            ));
        }
    }
    Ok(cases)
}
