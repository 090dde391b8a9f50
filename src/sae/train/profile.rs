//! `saeforge train --profile`: one step of the run (its third, when pipelines are built
//! and caches warm) timed stage by stage (on the CPU engine: each stage's wall time through
//! `cpu::step_marked`) and, on the GPU engine, kernel by kernel through the dispatch profiler
//! (`crate::gpu::DispatchTime`): per stage of the step (`GpuEngine::record_step`'s marks:
//! prepare, encode, codes, decode, loss, backward, ...) and per entry point the calls, the
//! GPU time from timestamp queries where the adapter has them, and the wall time of
//! submitting and waiting for each dispatch on its own. Printed to stderr and written to
//! OUT/profile.json. The profiled step computes exactly what an unprofiled one does; only
//! its submissions differ.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::Result;
use crate::data::Batch;
use crate::gpu::{DispatchTime, Gpu};
use crate::sae::TrainConfig;
use crate::sae::cpu::{CpuEngine, step_marked};
use crate::sae::gpu::GpuEngine;

/// The step of a run (counted from the run's first step in this process) that is profiled.
pub const PROFILED_STEP: u64 = 2;

/// The dispatches of one entry point, or of one stage, in the profiled step.
#[derive(Debug, Serialize)]
pub struct KernelTime {
    /// The entry point, or the stage.
    pub entry: String,
    pub calls: usize,
    /// Summed GPU time; None where the adapter has no timestamp queries.
    pub gpu_ms: Option<f64>,
    pub wall_ms: f64,
}

/// OUT/profile.json.
#[derive(Debug, Serialize)]
pub struct StepProfile {
    /// The profiled step (0-based, as in training.jsonl's `step` - 1).
    pub step: u64,
    pub adapter: String,
    pub driver: String,
    /// Whether `gpu_ms` holds the GPU's timestamps.
    pub timestamps: bool,
    pub total_gpu_ms: Option<f64>,
    pub total_wall_ms: f64,
    /// The step's stages in order (a stage that runs per chunk: summed over the chunks).
    pub stages: Vec<KernelTime>,
    /// Largest GPU time (else wall time) first.
    pub kernels: Vec<KernelTime>,
}

/// Step `e` on `batch` with every dispatch timed on its own, and the times by stage and by
/// kernel.
pub fn profile_step(
    e: &mut GpuEngine,
    cfg: &TrainConfig,
    batch: &Batch,
    step: u64,
) -> Result<StepProfile> {
    let g = e.gpu().clone();
    g.wait()?;
    g.profile_dispatches(true);
    let mut stages: Vec<(&'static str, Vec<DispatchTime>)> = Vec::new();
    let r = e.step_marked(cfg, &batch.data, batch.rows, &mut |name, _| {
        stages.push((name, g.take_dispatch_profile()));
        Ok(())
    });
    // Past the last mark: whatever the step records after its stages.
    let rest = g.take_dispatch_profile();
    g.profile_dispatches(false);
    r?;
    if !rest.is_empty() {
        stages.push(("after the stages", rest));
    }
    Ok(StepProfile::new(&g, step, &stages))
}

/// Step the CPU engine on `batch` with each stage's wall time (`cpu::step_marked`); it has
/// no kernels to list.
pub fn profile_cpu_step(
    e: &mut CpuEngine,
    cfg: &TrainConfig,
    batch: &Batch,
    step: u64,
) -> StepProfile {
    let mut times = Vec::new();
    let mut clock = Instant::now();
    step_marked(
        cfg,
        &mut e.st,
        &mut e.scratch,
        &batch.data,
        batch.rows,
        &mut |name| {
            times.push((name.to_string(), clock.elapsed().as_secs_f64(), None));
            clock = Instant::now();
        },
    );
    let stages = sum_by(times.into_iter());
    StepProfile {
        step,
        adapter: "the CPU engine".into(),
        driver: format!("{} threads", rayon::current_num_threads()),
        timestamps: false,
        total_gpu_ms: None,
        total_wall_ms: stages.iter().map(|k| k.wall_ms).sum(),
        stages,
        kernels: Vec::new(),
    }
}

/// `times` summed per name, in order of first appearance.
fn sum_by(times: impl Iterator<Item = (String, f64, Option<f64>)>) -> Vec<KernelTime> {
    let mut out: Vec<KernelTime> = Vec::new();
    for (name, wall_s, gpu_s) in times {
        let i = match out.iter().position(|k| k.entry == name) {
            Some(i) => i,
            None => {
                out.push(KernelTime {
                    entry: name,
                    calls: 0,
                    gpu_ms: Some(0.0),
                    wall_ms: 0.0,
                });
                out.len() - 1
            }
        };
        let k = &mut out[i];
        k.calls += 1;
        k.gpu_ms = k.gpu_ms.zip(gpu_s).map(|(a, b)| a + b * 1e3);
        k.wall_ms += wall_s * 1e3;
    }
    out
}

impl StepProfile {
    /// From the dispatches of each stage, in step order.
    pub fn new(gpu: &Gpu, step: u64, stages: &[(&'static str, Vec<DispatchTime>)]) -> StepProfile {
        let all = || {
            stages
                .iter()
                .flat_map(|(s, d)| d.iter().map(move |t| (s, t)))
        };
        let mut kernels = sum_by(all().map(|(_, t)| (t.entry.clone(), t.wall_s, t.gpu_s)));
        let stages = sum_by(all().map(|(s, t)| (s.to_string(), t.wall_s, t.gpu_s)));
        let key = |k: &KernelTime| k.gpu_ms.unwrap_or(k.wall_ms);
        kernels.sort_by(|a, b| key(b).total_cmp(&key(a)));
        StepProfile {
            step,
            adapter: gpu.info.name.clone(),
            driver: gpu.info.driver_info.clone(),
            timestamps: gpu.has_timestamps(),
            total_gpu_ms: kernels.iter().map(|k| k.gpu_ms).sum(),
            total_wall_ms: kernels.iter().map(|k| k.wall_ms).sum(),
            stages,
            kernels,
        }
    }

    /// The table on stderr, then OUT/profile.json.
    pub fn report(&self, out: &Path) -> Result<()> {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        eprintln!(
            "profile of step {} on {} ({}): {}",
            self.step + 1,
            self.adapter,
            self.driver,
            if self.timestamps {
                "GPU ms from timestamp queries"
            } else if self.kernels.is_empty() {
                "wall time per stage"
            } else {
                "no GPU ms (the adapter has no timestamp queries)"
            }
        );
        for (head, rows) in [("stage", &self.stages), ("kernel", &self.kernels)] {
            if rows.is_empty() {
                continue;
            }
            eprintln!(
                "  {head:<30} {:>5} {:>10} {:>10}",
                "calls", "GPU ms", "wall ms"
            );
            for k in rows {
                eprintln!(
                    "  {:<30} {:>5} {:>10} {:>10.3}",
                    k.entry,
                    k.calls,
                    ms(k.gpu_ms),
                    k.wall_ms
                );
            }
        }
        eprintln!(
            "  {:<30} {:>5} {:>10} {:>10.3}",
            "total",
            self.stages.iter().map(|k| k.calls).sum::<usize>(),
            ms(self.total_gpu_ms),
            self.total_wall_ms
        );
        let path = out.join("profile.json");
        crate::io::write_json(&path, self)?;
        eprintln!("  written to {}", path.display());
        Ok(())
    }
}
