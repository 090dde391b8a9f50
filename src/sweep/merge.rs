//! A sweep's same-shape GPU members' encoder products in ONE launch, where that is faster
//! (the sweep issue: "members of the same shape batched into one launch where that is
//! faster").
//!
//! Members whose step has a shareable product (`GpuEngine::shared_product`: one chunk, an
//! SAE, any architecture but jumprelu) on the same device with the same (batch, d, d_sae) form a group when
//! the adapter's encoder product is the fused register kernel (`gemm::batched::batches`:
//! hardware adapters, or `SAEFORGE_FORCE_PATH=hardware`). Their xc, W_enc, b_enc,
//! pre-activations and block maxima move into pools (`Gpu::pool`), one slot per member;
//! then, unless `SAEFORGE_SWEEP_MERGE` says (`always` / `never`), both ways are timed on
//! the device — one launch per member against one launch for all — and the faster is kept,
//! said in one line. A merged group's members record their steps up to the product, the
//! one launch, then the rest (`GpuEngine::record_until_product` / `record_after_product`):
//! the same dispatches per member, so each member still equals its solo run bitwise.
//!
//! Why measured rather than assumed: on lavapipe one launch over four members is no faster
//! (the kernel bench's `sweep_encoders_*`: the CPU runs launches one after another either
//! way); on a hardware GPU a small member's product leaves most of the device idle, which
//! one launch over all of them fills, but that gain depends on the device and the shapes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::gpu::{Gpu, GpuTensor};
use crate::kernels::gemm::batched::{Pooled, batches, gemm_block_max_batched};
use crate::kernels::gemm::{GemmSpec, gemm_block_max};
use crate::sae::gpu::EncoderSlots;
use crate::sae::train::Member;
use crate::{Error, Result};

/// `SAEFORGE_SWEEP_MERGE`: how a group's encoder products are launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Time both on the device, keep the faster (the default).
    Auto,
    Always,
    Never,
}

impl Policy {
    pub fn from_env() -> Result<Policy> {
        match std::env::var("SAEFORGE_SWEEP_MERGE").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(Policy::Auto),
            Ok("always") => Ok(Policy::Always),
            Ok("never") => Ok(Policy::Never),
            Ok(v) => Err(Error::Input(format!(
                "SAEFORGE_SWEEP_MERGE={v}: expected auto, always or never"
            ))),
        }
    }
}

/// One group of members whose encoder products run as one launch.
pub struct Shared {
    /// The members, in slot order.
    pub names: Vec<String>,
    gpu: Arc<Gpu>,
    spec: GemmSpec,
    /// The pools, in `EncoderSlots` order, with the elements between their slots.
    pools: Vec<(GpuTensor, usize)>,
}

impl Shared {
    /// The device of the group.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Record the group's encoder products, one launch.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let p = |i: usize| Pooled {
            pool: &self.pools[i].0,
            stride: self.pools[i].1,
        };
        let (g, z) = (&self.gpu, self.names.len());
        gemm_block_max_batched(g, enc, &self.spec, z, p(0), p(1), p(2), p(3), p(4))
    }
}

/// The members at `idx` as GPU engines.
fn engines<'a>(
    members: &'a mut [(String, Member)],
    idx: &[usize],
) -> Vec<&'a mut crate::sae::gpu::GpuEngine> {
    let mut out = Vec::new();
    for (i, (_, m)) in members.iter_mut().enumerate() {
        if idx.contains(&i)
            && let Some(g) = m.engine.as_gpu()
        {
            out.push(g);
        }
    }
    out
}

/// Group the members whose products can share a launch, pool their tensors, decide per
/// group (see the module doc) and say so; the groups that run as one launch.
pub fn plan(members: &mut [(String, Member)], policy: Policy) -> Result<Vec<Shared>> {
    // (device, batch, d, d_sae) -> member indices
    let mut groups: HashMap<(usize, usize, usize, usize), Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (i, (_, m)) in members.iter_mut().enumerate() {
        let Some(g) = m.engine.as_gpu() else { continue };
        let Some(spec) = g.shared_product() else {
            continue;
        };
        if !batches(g.gpu(), &spec) {
            continue;
        }
        let key = (Arc::as_ptr(g.gpu()) as usize, spec.m, spec.k, spec.n);
        let e = groups.entry(key).or_default();
        if e.is_empty() {
            order.push(key);
        }
        e.push(i);
    }
    let mut out = Vec::new();
    for key in order {
        let idx = &groups[&key];
        // As many members per launch as the device's bindings hold.
        let per = {
            let g = engines(members, &idx[..1]).remove(0);
            let gpu = g.gpu();
            let slot = |t: &GpuTensor| 4 * gpu.slot_stride(t.len()) as u64;
            let most = g
                .encoder_slots()
                .iter()
                .map(|t| gpu.max_binding() / slot(t))
                .min();
            (most.unwrap_or(0) as usize).max(1)
        };
        for part in idx.chunks(per) {
            if part.len() < 2 {
                continue;
            }
            if let Some(s) = pool_group(members, part, policy)? {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Pool one group's tensors and decide whether it runs as one launch.
fn pool_group(
    members: &mut [(String, Member)],
    idx: &[usize],
    policy: Policy,
) -> Result<Option<Shared>> {
    let names: Vec<String> = idx.iter().map(|&i| members[i].0.clone()).collect();
    let mut es = engines(members, idx);
    let gpu = es[0].gpu().clone();
    let spec = es[0].shared_product().expect("grouped by it");
    let z = es.len();
    let (m, k, n) = (spec.m, spec.k, spec.n);
    let what = format!(
        "sweep: members {} ({k} -> {n} latents, batch {m}) on {}",
        names.join(", "),
        gpu.info.name
    );
    if policy == Policy::Never {
        println!("{what}: one encoder launch per member (SAEFORGE_SWEEP_MERGE=never)");
        return Ok(None);
    }
    // One pool per tensor of the product, shaped as the first member's.
    let labels = ["xc", "W_enc", "b_enc", "pre", "pre block maxima"];
    let mut pools = Vec::new();
    let mut slots: Vec<Vec<GpuTensor>> = (0..z).map(|_| Vec::new()).collect();
    for (what, t) in labels.iter().zip(es[0].encoder_slots()) {
        let what = format!("{what} (members)");
        let (pool, s, stride) = gpu.pool(&what, z, &t.shape, t.dtype)?;
        for (mine, t) in slots.iter_mut().zip(s) {
            mine.push(t);
        }
        pools.push((pool, stride));
    }
    let mut enc = gpu.encoder();
    for (e, s) in es.iter_mut().zip(slots) {
        let Ok(s) = EncoderSlots::try_from(s) else {
            unreachable!("one slot of each of the five pools")
        };
        e.adopt_encoder_slots(&mut enc, s)?;
    }
    gpu.submit(enc);
    gpu.wait()?;
    let shared = Shared {
        names,
        gpu: gpu.clone(),
        spec,
        pools,
    };
    // `never` returned above: `always`, or time both.
    let keep = if policy == Policy::Always {
        println!("{what}: one encoder launch for all {z} (SAEFORGE_SWEEP_MERGE=always)");
        true
    } else {
        let slots: Vec<EncoderSlots> = es.iter().map(|e| e.encoder_slots()).collect();
        let separate = time(&gpu, |enc| {
            for [xc, w, b, pre, bmax] in &slots {
                gemm_block_max(&gpu, enc, &spec, xc, w, Some(b), pre, None, bmax)?;
            }
            Ok(())
        })?;
        let one = time(&gpu, |enc| shared.record(enc))?;
        let faster = one < separate;
        println!(
            "{what}: one encoder launch for all {z} took {:.3} ms, one per member {:.3} ms: {}",
            one * 1e3,
            separate * 1e3,
            if faster {
                "one launch"
            } else {
                "one launch per member"
            }
        );
        faster
    };
    Ok(keep.then_some(shared))
}

/// Seconds per run of what `record` records: the median of 5 submissions (after one
/// unmeasured), each recording it as many times as fill about 2 ms (so that a small
/// product is not lost in a submission's own cost), divided by that count.
fn time(gpu: &Gpu, record: impl Fn(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<f64> {
    let run = |reps: usize| -> Result<f64> {
        let mut enc = gpu.encoder();
        for _ in 0..reps {
            record(&mut enc)?;
        }
        let t = Instant::now();
        gpu.submit(enc);
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    let first = run(1)?;
    let reps = ((2e-3 / first.max(1e-7)).ceil() as usize).clamp(1, 64);
    let mut runs = (0..5).map(|_| run(reps)).collect::<Result<Vec<f64>>>()?;
    runs.sort_by(f64::total_cmp);
    Ok(runs[2])
}
