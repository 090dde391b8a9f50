//! A sweep's encoders (issue: members of the same shape batched into one launch where that
//! is faster): the encoder products of 4 same-shape members that read the same batch,
//! recorded as each member's own launch (`..._separate`, what a GPU sweep records today)
//! against one launch over the members' weights side by side (`..._fused`: x times
//! [W_enc^1 | ... | W_enc^4], the merged launch), each with the block maxima the code
//! stages read (`gemm::gemm_block_max`). Same FLOPs; main prints the time ratio of each
//! pair, which says on this adapter whether merging would pay.

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
