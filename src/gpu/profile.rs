//! Timing dispatches one by one, a profiling aid (`saeforge train --profile`, the benches):
//! while profiling is on, every dispatch is submitted and waited for as it is recorded, and
//! its wall-clock time, the process's CPU time and, where the adapter has timestamp queries
//! (wgpu's `TIMESTAMP_QUERY`; lavapipe has them too), the GPU's own time between the start
//! and the end of its compute pass are kept. The GPU time is what a kernel costs on the
//! device; the wall time adds the submission and the wait, which dominate small kernels.
//!
//! Profiling changes when work is submitted, never what is computed: a profiled step gives
//! bitwise the results of an unprofiled one.

use std::sync::Arc;

use super::{DType, Gpu, GpuTensor};
use crate::Result;

/// One profiled dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTime {
    /// The kernel's entry point.
    pub entry: String,
    /// Submission to completion, seconds.
    pub wall_s: f64,
    /// CPU seconds of the whole process over that interval (Linux), else None.
    pub cpu_s: Option<f64>,
    /// The GPU's timestamps around the dispatch's compute pass, seconds; None where the
    /// adapter has no timestamp queries.
    pub gpu_s: Option<f64>,
}

/// What a profiling session holds: the dispatches timed so far and, where the device has
/// timestamp queries, the query set each dispatch's pass writes into.
pub(crate) struct Profile {
    dispatches: Vec<DispatchTime>,
    stamps: Option<Arc<Stamps>>,
}

/// Two timestamps (start and end of one compute pass) and the buffer they resolve into.
pub(crate) struct Stamps {
    set: wgpu::QuerySet,
    /// (4) u32: the two u64 ticks, little-endian halves.
    resolved: GpuTensor,
}

impl Stamps {
    fn new(gpu: &Gpu) -> Stamps {
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("dispatch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dispatch timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let resolved = GpuTensor {
            buf,
            offset: 0,
            shape: vec![4],
            dtype: DType::U32,
        };
        Stamps { set, resolved }
    }

    /// The pass's timestamp writes: query 0 at its start, 1 at its end.
    pub(crate) fn writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }
    }

    /// Record the resolve of both queries (after the pass has ended).
    pub(crate) fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        enc.resolve_query_set(&self.set, 0..2, &self.resolved.buf, 0);
    }

    /// Seconds between the two timestamps (after the resolve has run).
    fn seconds(&self, gpu: &Gpu) -> Result<f64> {
        let w = gpu.read_u32(&self.resolved)?;
        let tick = |lo: u32, hi: u32| (hi as u64) << 32 | lo as u64;
        let ticks = tick(w[2], w[3]).saturating_sub(tick(w[0], w[1]));
        Ok(ticks as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-9)
    }
}

/// Nanoseconds all threads of this process have spent on a CPU (Linux), or None.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

impl Gpu {
    /// Whether the device records GPU timestamps (wgpu's `TIMESTAMP_QUERY`).
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Start (or stop) timing every dispatch this thread records on its own (other threads
    /// sharing the device are not affected): while on, each launcher's dispatch is submitted and waited for as it is recorded (so the encoder a caller holds is
    /// replaced by a fresh one), and its times are kept for [`Gpu::take_dispatch_profile`].
    /// Slow; results are unchanged.
    pub fn profile_dispatches(&self, on: bool) {
        let me = std::thread::current().id();
        let mut all = self.caches.profile.lock().unwrap();
        if on {
            let stamps = self.has_timestamps().then(|| Arc::new(Stamps::new(self)));
            all.insert(
                me,
                Profile {
                    dispatches: Vec::new(),
                    stamps,
                },
            );
        } else {
            all.remove(&me);
        }
    }

    /// The dispatches timed since profiling started (or since the last take), in order.
    /// Profiling stays on.
    pub fn take_dispatch_profile(&self) -> Vec<DispatchTime> {
        let me = std::thread::current().id();
        let mut all = self.caches.profile.lock().unwrap();
        all.get_mut(&me)
            .map(|p| std::mem::take(&mut p.dispatches))
            .unwrap_or_default()
    }

    /// The timestamps a dispatch's pass writes while profiling, where the device has them.
    pub(crate) fn profile_stamps(&self) -> Option<Arc<Stamps>> {
        let me = std::thread::current().id();
        let all = self.caches.profile.lock().unwrap();
        all.get(&me).and_then(|p| p.stamps.clone())
    }

    /// Called by every launcher right after it records a dispatch of `entry` (and, with
    /// `stamps`, the resolve of its timestamps): when profiling, submit what `enc` holds,
    /// wait, and record the times.
    pub(crate) fn after_dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        entry: &str,
        stamps: Option<&Stamps>,
    ) -> Result<()> {
        let me = std::thread::current().id();
        if !self.caches.profile.lock().unwrap().contains_key(&me) {
            return Ok(());
        }
        let done = std::mem::replace(enc, self.encoder());
        let c0 = process_cpu_ns();
        let t0 = std::time::Instant::now();
        self.submit(done);
        self.wait()?;
        let wall_s = t0.elapsed().as_secs_f64();
        let cpu_s = c0
            .zip(process_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
        let gpu_s = stamps.map(|s| s.seconds(self)).transpose()?;
        if let Some(p) = self.caches.profile.lock().unwrap().get_mut(&me) {
            p.dispatches.push(DispatchTime {
                entry: entry.to_string(),
                wall_s,
                cpu_s,
                gpu_s,
            });
        }
        Ok(())
    }
}
