//! A sweep's encoders (issue: members of the same shape batched into one launch where that
//! is faster): the encoder products of 4 same-shape members that read the same batch,
//! recorded as each member's own launch (`..._separate`, what a GPU sweep records today)
//! against one launch over the members' weights side by side (`..._fused`: x times
//! [W_enc^1 | ... | W_enc^4]), each with the block maxima the code stages read
//! (`gemm::gemm_block_max`). Where the adapter's encoder product is the fused register kernel
//! (hardware adapters, or `SAEFORGE_FORCE_PATH=hardware`) also `..._batched`: what a sweep
//! records when it merges (`sweep::merge`), one gemm_reg_bmax_batched launch over the
//! members' own operands in pools, against `..._separate` on the same pooled tensors.
//! Same FLOPs; main prints the time ratio of each pair.

use super::*;

/// Members per sweep in these cases (the sweep issue's grid: k 16, 32, 64, 128).
const MEMBERS: usize = 4;

/// The sweep bench's two shapes (`tools/sweep-bench`): 128 -> 1024 and 512 -> 4096
/// latents, batch 1024.
pub(super) fn sweep_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    let bsz = 1024;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut cases = Vec::new();
    for (d, n) in [(128, 1024), (512, 4096)] {
        let mut up = |what: &str, shape: &[usize]| -> saeforge::Result<Rc<GpuTensor>> {
            let data = random(&mut rng, shape.iter().product());
            Ok(Rc::new(gpu.upload(what, shape, &data)?))
        };
        let x = up("x", &[bsz, d])?;
        let nb = codes::blocks(n, codes::BLOCK);
        // Each member's weights, output and block maxima.
        let mut members = Vec::new();
        for _ in 0..MEMBERS {
            let w = up("W_enc", &[d, n])?;
            let b = up("b_enc", &[n])?;
            let c = Rc::new(gpu.zeros("pre (B, n)", &[bsz, n])?);
            let bm = Rc::new(gpu.zeros_u32("bmax (B, n / 32)", &[bsz, nb])?);
            members.push((w, b, c, bm));
        }
        // The merged launch: the members' columns side by side.
        let wide = MEMBERS * n;
        let w_all = up("W_enc (all members)", &[d, wide])?;
        let b_all = up("b_enc (all members)", &[wide])?;
        let c_all = Rc::new(gpu.zeros("pre (B, members x n)", &[bsz, wide])?);
        let nb_all = codes::blocks(wide, codes::BLOCK);
        let bm_all = Rc::new(gpu.zeros_u32("bmax (all members)", &[bsz, nb_all])?);
        let spec = move |cols| GemmSpec::nn(bsz, cols, d);
        let label = format!("sweep_encoders_{d}x{n}");
        let flops = spec(wide).flops();
        if gemm::batched::batches(gpu, &spec(n)) {
            cases.extend(batched_cases(gpu, &mut rng, &label, spec(n))?);
        }
        let (xs, ms) = (x.clone(), members.clone());
        cases.push(Case {
            name: format!("{label}_separate"),
            shape: format!("{MEMBERS} x ({bsz}x{d} * {d}x{n} + bias)"),
            variant: "per member".to_string(),
            work: Work::Flops(flops),
            record: Box::new(move |g, e| {
                for (w, b, c, bm) in &ms {
                    gemm::gemm_block_max(g, e, &spec(n), &xs, w, Some(b), c, None, bm)?;
                }
                Ok(())
            }),
        });
        cases.push(Case {
            name: format!("{label}_fused"),
            shape: format!("{bsz}x{d} * {d}x{wide} + bias"),
            variant: "one launch".to_string(),
            work: Work::Flops(flops),
            record: Box::new(move |g, e| {
                let (w, b, c, bm) = (&w_all, &b_all, &c_all, &bm_all);
                gemm::gemm_block_max(g, e, &spec(wide), &x, w, Some(b), c, None, bm)
            }),
        });
    }
    Ok(cases)
}

/// `..._batched` and `..._separate` over the same pools: each member's xc, W_enc, b_enc,
/// pre-activations and block maxima a slot (`Gpu::pool`), as a merged sweep holds them.
fn batched_cases(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    label: &str,
    spec: GemmSpec,
) -> saeforge::Result<Vec<Case>> {
    use saeforge::gpu::DType;
    use saeforge::kernels::gemm::batched::{Pooled, gemm_block_max_batched};
    let (m, k, n) = (spec.m, spec.k, spec.n);
    let nb = codes::blocks(n, codes::BLOCK);
    let mut pools = Vec::new();
    let mut slots: Vec<Vec<GpuTensor>> = (0..MEMBERS).map(|_| Vec::new()).collect();
    for (what, len, dtype) in [
        ("xc", m * k, DType::F32),
        ("W_enc", k * n, DType::F32),
        ("b_enc", n, DType::F32),
        ("pre", m * n, DType::F32),
        ("bmax", m * nb, DType::U32),
    ] {
        let (pool, s, stride) = gpu.pool(what, MEMBERS, &[len], dtype)?;
        if dtype == DType::F32 {
            for t in &s {
                gpu.write(t, &random(rng, len))?;
            }
        }
        for (mine, t) in slots.iter_mut().zip(s) {
            mine.push(t);
        }
        pools.push((Rc::new(pool), stride));
    }
    let shape = |t: &GpuTensor, s: &[usize]| Rc::new(t.view(s));
    let members: Vec<_> = slots
        .iter()
        .map(|s| {
            let v = [&[m, k][..], &[k, n], &[n], &[m, n], &[m * nb]];
            (0..5).map(|i| shape(&s[i], v[i])).collect::<Vec<_>>()
        })
        .collect();
    let flops = MEMBERS as f64 * spec.flops();
    Ok(vec![
        Case {
            name: format!("{label}_batched"),
            shape: format!("{MEMBERS} x ({m}x{k} * {k}x{n} + bias), pooled"),
            variant: "one launch".to_string(),
            work: Work::Flops(flops),
            record: Box::new(move |g, e| {
                let p = |i: usize| Pooled {
                    pool: &pools[i].0,
                    stride: pools[i].1,
                };
                gemm_block_max_batched(g, e, &spec, MEMBERS, p(0), p(1), p(2), p(3), p(4))
            }),
        },
        Case {
            name: format!("{label}_batched_separate"),
            shape: format!("{MEMBERS} x ({m}x{k} * {k}x{n} + bias), pooled"),
            variant: "per member".to_string(),
            work: Work::Flops(flops),
            record: Box::new(move |g, e| {
                for t in &members {
                    let (x, w, b, c, bm) = (&t[0], &t[1], &t[2], &t[3], &t[4]);
                    gemm::gemm_block_max(g, e, &spec, x, w, Some(b), c, None, bm)?;
                }
                Ok(())
            }),
        },
    ])
}
