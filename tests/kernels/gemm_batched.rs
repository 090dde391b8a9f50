//! gemm_reg_bmax_batched (`kernels::gemm::batched`, a sweep's same-shape members' encoders
//! in one launch) against its CPU twin (reference::gemm::gemm within the GEMM tolerance,
//! reference::codes::block_max of the stored C exactly) and against gemm_block_max on the
//! register path run once per product: each pool slot's C and block maxima bit for bit
//! what the product's own launch writes (the same tiles, the same arithmetic), for every transpose, shapes off the tile and block
//! sizes, and other tiles. The pools are poisoned first (C NaN, bmax u32::MAX) and the
//! padding between slots must stay poisoned: nothing is written outside a slot. Also the
//! pooled tensors themselves (`Gpu::pool`): writes, reads and copies land in their slot.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::{DType, Gpu, GpuTensor};
use saeforge::kernels::gemm::batched::{Pooled, gemm_block_max_batched_tuned};
use saeforge::kernels::gemm::{self as kg, GemmPath, GemmSpec, GemmTuning};
use saeforge::kernels::gemm_reg::RegTiles;
use saeforge::reference;
use saeforge::reference::codes as rc;

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};
use crate::gemm::spec;

type Rng = rand_chacha::ChaCha8Rng;

/// Products per launch in these cases.
const Z: usize = 3;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One pool of Z slots of `shape`, each slot filled with fresh values (None: poison).
fn pool(
    gpu: &Gpu,
    what: &str,
    shape: &[usize],
    dtype: DType,
    fill: Option<&[Vec<f32>]>,
) -> Result<(GpuTensor, Vec<GpuTensor>, usize), Failed> {
    let (p, slots, stride) = gpu.pool(what, Z, shape, dtype).map_err(fail)?;
    match dtype {
        DType::F32 => gpu.fill(&p, f32::NAN),
        DType::U32 => gpu.write(&p, &vec![u32::MAX; p.len()]).map_err(fail)?,
    }
    if let Some(data) = fill {
        for (s, d) in slots.iter().zip(data) {
            gpu.write(s, d).map_err(fail)?;
        }
    }
    Ok((p, slots, stride))
}

fn check(gpu: &Gpu, rng: &mut Rng, spec: GemmSpec, t: &GemmTuning) -> Result<(), Failed> {
    let GemmSpec { m, n, k, .. } = spec;
    let nb = rc::blocks(n, kg::BMAX_BLOCK);
    let data = |rng: &mut Rng, len| (0..Z).map(|_| randn(rng, len, 1.0)).collect::<Vec<_>>();
    let (a_h, b_h, bias_h) = (data(rng, m * k), data(rng, k * n), data(rng, n));
    let (a, _, sa) = pool(gpu, "a", &spec.a_shape(), DType::F32, Some(&a_h))?;
    let (b, _, sb) = pool(gpu, "b", &spec.b_shape(), DType::F32, Some(&b_h))?;
    let (bias, _, sbias) = pool(gpu, "bias", &[n], DType::F32, Some(&bias_h))?;
    let (c, c_slots, sc) = pool(gpu, "c", &[m, n], DType::F32, None)?;
    let (bmax, bmax_slots, sbmax) = pool(gpu, "bmax", &[m * nb], DType::U32, None)?;
    let p = |pool, stride| Pooled { pool, stride };
    let operands = [
        p(&a, sa),
        p(&b, sb),
        p(&bias, sbias),
        p(&c, sc),
        p(&bmax, sbmax),
    ];
    let mut enc = gpu.encoder();
    gemm_block_max_batched_tuned(gpu, &mut enc, &spec, Z, operands, t).map_err(fail)?;
    gpu.submit(enc);
    let what = format!(
        "gemm_reg_bmax_batched {:?} {} {m}x{n}x{k}",
        t.rg,
        spec.op_name()
    );
    for i in 0..Z {
        // The product alone, on its own tensors.
        let up = |what, shape: &[usize], h: &[f32]| gpu.upload(what, shape, h).map_err(fail);
        let a1 = up("a", &spec.a_shape(), &a_h[i])?;
        let b1 = up("b", &spec.b_shape(), &b_h[i])?;
        let bias1 = up("bias", &[n], &bias_h[i])?;
        let c1 = up("c", &[m, n], &vec![f32::NAN; m * n])?;
        let bmax1 = gpu.zeros_u32("bmax", &[m * nb]).map_err(fail)?;
        let mut enc = gpu.encoder();
        #[rustfmt::skip]
        kg::gemm_block_max_tuned(gpu, &mut enc, &spec, &a1, &b1, Some(&bias1), &c1, None, &bmax1, GemmPath::Reg, t).map_err(fail)?;
        gpu.submit(enc);
        let solo = bits(&gpu.read_f32(&c1).map_err(fail)?);
        let c_gpu = gpu.read_f32(&c_slots[i]).map_err(fail)?;
        let mut c_ref = vec![0.0; m * n];
        reference::gemm::gemm(&spec, &a_h[i], &b_h[i], Some(&bias_h[i]), &mut c_ref);
        let tol = tolerance::gemm(k);
        assert_close(&format!("{what}: C of product {i}"), &c_gpu, &c_ref, tol)?;
        let mut bmax_ref = vec![0u32; m * nb];
        rc::block_max(&c_gpu, m, n, kg::BMAX_BLOCK, None, None, &mut bmax_ref);
        let bmax_gpu = gpu.read_u32(&bmax_slots[i]).map_err(fail)?;
        assert_same(
            &format!("{what}: bmax of product {i} against the reference"),
            &bmax_gpu,
            &bmax_ref,
        )?;
        let batched = bits(&c_gpu);
        assert_same(&format!("{what}: C of product {i}"), &batched, &solo)?;
        let solo = gpu.read_u32(&bmax1).map_err(fail)?;
        let batched = gpu.read_u32(&bmax_slots[i]).map_err(fail)?;
        assert_same(&format!("{what}: bmax of product {i}"), &batched, &solo)?;
    }
    // The padding after each slot: still poison.
    let all = gpu.read_u32(&c).map_err(fail)?;
    for i in 0..Z {
        let pad = &all[i * sc + m * n..(i + 1) * sc];
        if let Some(j) = pad.iter().position(|&v| v != f32::NAN.to_bits()) {
            return Err(format!("{what}: C's padding after slot {i} written at {j}").into());
        }
    }
    let all = gpu.read_u32(&bmax).map_err(fail)?;
    for i in 0..Z {
        let pad = &all[i * sbmax + m * nb..(i + 1) * sbmax];
        if pad.iter().any(|&v| v != u32::MAX) {
            return Err(format!("{what}: bmax's padding after slot {i} written").into());
        }
    }
    Ok(())
}

fn trial(base: GemmSpec, label: &'static str, tiles: Option<RegTiles>) -> Trial {
    let GemmSpec { m, n, k, .. } = base;
    gpu_test(
        format!("gemm_batched::{label}/{}/{m}x{n}x{k}", base.op_name()),
        move |gpu, rng| {
            let mut t = GemmTuning::of(gpu);
            if let Some(r) = tiles {
                t.rg = r;
            }
            t.rg = t.rg.fitted(&gpu.limits);
            check(gpu, rng, base, &t)
        },
    )
}

pub fn trials() -> Vec<Trial> {
    let mut out = Vec::new();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        out.push(trial(spec(130, 70, 29, ta, tb), "own", None));
    }
    // Whole tiles; a last partial block of one column; the encoder's shape, small.
    for (m, n, k) in [(128, 128, 64), (37, 33, 64), (64, 1024, 128)] {
        out.push(trial(spec(m, n, k, false, false), "own", None));
    }
    let small = RegTiles {
        wx: 4,
        wy: 4,
        bk: 4,
    };
    out.push(trial(
        spec(37, 100, 29, false, false),
        "32x32x4",
        Some(small),
    ));
    out.push(gpu_test("gemm_batched::pool_slots", |gpu, rng| {
        // Each slot's write, read and copy stay in the slot.
        let (p, slots, stride) = gpu.pool("p", Z, &[5, 3], DType::F32).map_err(fail)?;
        let align = gpu.limits.min_storage_buffer_offset_alignment as usize / 4;
        if stride < 15 || !stride.is_multiple_of(align) || p.len() != Z * stride {
            return Err(format!("stride {stride}, pool of {} elements", p.len()).into());
        }
        gpu.fill(&p, f32::NAN);
        let data: Vec<Vec<f32>> = (0..Z).map(|_| randn(rng, 15, 1.0)).collect();
        for (s, d) in slots.iter().zip(&data) {
            gpu.write(s, d).map_err(fail)?;
        }
        let copy = gpu.zeros("copy", &[5, 3]).map_err(fail)?;
        let mut enc = gpu.encoder();
        gpu.copy_into(&mut enc, &slots[1], 0, &copy).map_err(fail)?;
        gpu.submit(enc);
        for (i, d) in data.iter().enumerate() {
            let back = gpu.read_f32(&slots[i]).map_err(fail)?;
            assert_same(&format!("slot {i}"), &bits(&back), &bits(d))?;
        }
        let back = gpu.read_f32(&copy).map_err(fail)?;
        assert_same("copy of slot 1", &bits(&back), &bits(&data[1]))?;
        let all = gpu.read_f32(&p).map_err(fail)?;
        if all[15..stride].iter().any(|v| !v.is_nan()) {
            return Err("slot 0's write spilled past its 15 elements".into());
        }
        Ok(())
    }));
    out
}
