//! Whether the members of a sweep fit together: every member's engine is built before the
//! first step, so their parameters, Adam moments and step buffers
//! (`TrainConfig::estimate_bytes`) are held at once. Members are counted in spec order on
//! their engine's memory (a software adapter's and the CPU engine's: the host's available
//! memory; a hardware adapter's: SAEFORGE_DEVICE_MEMORY_MIB, since wgpu does not report
//! device memory); a sweep that does not fit is refused before any work, naming the
//! members past the budget and by how much.

use crate::gpu::Engine;
use crate::sae::TrainConfig;
use crate::{Error, Result};

/// The memory budget of an engine in bytes, if known.
fn budget(engine: &Engine) -> Option<u128> {
    match engine {
        Engine::Gpu(g) => g.memory_budget(),
        Engine::Cpu => crate::io::available_memory().map(|b| b as u128),
    }
}

/// Check `members` (name, config, engine) together; see the module docs.
pub fn check_together(members: &[(&str, &TrainConfig, &Engine)]) -> Result<()> {
    // One budget per engine: the CPU, and each adapter by name.
    let mut names: Vec<String> = Vec::new();
    for (_, _, e) in members {
        let n = e.name();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    for engine_name in names {
        let on: Vec<&(&str, &TrainConfig, &Engine)> = members
            .iter()
            .filter(|m| m.2.name() == engine_name)
            .collect();
        let Some(limit) = budget(on[0].2) else {
            continue;
        };
        let mut used = 0u128;
        let mut over: Vec<String> = Vec::new();
        for (name, cfg, _) in &on {
            let need = cfg.estimate_bytes();
            used += need;
            if used > limit {
                over.push(format!("{name} ({:.1} MiB)", need as f64 / 1048576.0));
            }
        }
        if !over.is_empty() {
            let mib = |b: u128| b as f64 / 1048576.0;
            return Err(Error::Device(format!(
                "the sweep's members need about {:.1} MiB together on the {engine_name}, {:.1} MiB more than its {:.1} MiB; these do not fit: {}. Train them apart (saeforge sweep --only NAMES, or --emit slurm), or lower --d-sae / --batch",
                mib(used),
                mib(used - limit),
                mib(limit),
                over.join(", ")
            )));
        }
    }
    Ok(())
}
