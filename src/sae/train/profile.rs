//! `saeforge train --profile`: one step of the run (its third, when pipelines are built
//! and caches warm) timed kernel by kernel on the GPU engine, through the dispatch profiler
//! (`crate::gpu::DispatchTime`): per entry point the calls, the GPU time from timestamp
//! queries where the adapter has them, and the wall time of submitting and waiting for each
//! dispatch on its own. Printed to stderr and written to OUT/profile.json. The profiled
//! step computes exactly what an unprofiled one does; only its submissions differ.

use std::path::Path;

use serde::Serialize;

use crate::Result;
use crate::gpu::{DispatchTime, Gpu};

/// The step of a run (counted from the run's first step in this process) that is profiled.
pub const PROFILED_STEP: u64 = 2;

/// One entry point's dispatches in the profiled step.
#[derive(Debug, Serialize)]
pub struct KernelTime {
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
    /// Largest GPU time (else wall time) first.
    pub kernels: Vec<KernelTime>,
}

impl StepProfile {
    pub fn new(gpu: &Gpu, step: u64, dispatches: &[DispatchTime]) -> StepProfile {
        let mut kernels: Vec<KernelTime> = Vec::new();
        for t in dispatches {
            let i = match kernels.iter().position(|k| k.entry == t.entry) {
                Some(i) => i,
                None => {
                    kernels.push(KernelTime {
                        entry: t.entry.clone(),
                        calls: 0,
                        gpu_ms: Some(0.0),
                        wall_ms: 0.0,
                    });
                    kernels.len() - 1
                }
            };
            let k = &mut kernels[i];
            k.calls += 1;
            k.gpu_ms = k.gpu_ms.zip(t.gpu_s).map(|(a, b)| a + b * 1e3);
            k.wall_ms += t.wall_s * 1e3;
        }
        let key = |k: &KernelTime| k.gpu_ms.unwrap_or(k.wall_ms);
        kernels.sort_by(|a, b| key(b).total_cmp(&key(a)));
        StepProfile {
            step,
            adapter: gpu.info.name.clone(),
            driver: gpu.info.driver_info.clone(),
            timestamps: gpu.has_timestamps(),
            total_gpu_ms: kernels.iter().map(|k| k.gpu_ms).sum(),
            total_wall_ms: kernels.iter().map(|k| k.wall_ms).sum(),
            kernels,
        }
    }

    /// The table on stderr, then OUT/profile.json.
    pub fn report(&self, out: &Path) -> Result<()> {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        eprintln!(
            "profile of step {} on {} ({}): GPU ms from {}",
            self.step + 1,
            self.adapter,
            self.driver,
            if self.timestamps {
                "timestamp queries"
            } else {
                "nothing (the adapter has no timestamp queries)"
            }
        );
        eprintln!(
            "  {:<30} {:>5} {:>10} {:>10}",
            "kernel", "calls", "GPU ms", "wall ms"
        );
        for k in &self.kernels {
            eprintln!(
                "  {:<30} {:>5} {:>10} {:>10.3}",
                k.entry,
                k.calls,
                ms(k.gpu_ms),
                k.wall_ms
            );
        }
        eprintln!(
            "  {:<30} {:>5} {:>10} {:>10.3}",
            "total",
            self.kernels.iter().map(|k| k.calls).sum::<usize>(),
            ms(self.total_gpu_ms),
            self.total_wall_ms
        );
        let path = out.join("profile.json");
        crate::io::write_json(&path, self)?;
        eprintln!("  written to {}", path.display());
        Ok(())
    }
}
