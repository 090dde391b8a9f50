//! `--device auto`'s model against the steps it predicts: calibrates both engines as
//! `saeforge train --device auto` does (`engine_choice::calibrate`, not the cached file)
//! for the architecture, then times real steps of it (k 32 where it takes one, random
//! data) on both at each shape and prints the model's and the measured milliseconds per
//! step, whether the model picks the faster engine, and whether the calibration's first
//! stage (the CPU engine's fit against the GPU engine's product alone) already decides the
//! shape (`1st stage`: cpu, or `-` when the GPU engine's steps are needed). For another
//! architecture than topk it also prints what the topk calibration (every architecture's
//! model before 2026-12-07) predicts for the same steps (`topk model`, cpu / gpu).
//!
//!     cargo bench --bench auto [-- [--arch relu|topk|batchtopk|jumprelu|matryoshka] B,D,N ...]
//!
//! Default shapes: 1024,128,1024  512,384,6144  4096,512,16384  4096,2048,16384 (the last
//! is the one the former model, whose product weight came from the probe steps, sent to
//! lavapipe). Each engine: one warm-up step, then the best of 2. Needs a wgpu adapter
//! (lavapipe is the case the model is for; on a hardware adapter `--device auto` does not
//! consult it).

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use saeforge::gpu::Gpu;
use saeforge::sae::cpu::CpuEngine;
use saeforge::sae::engine::{StepEngine, TrainState};
use saeforge::sae::engine_choice::{Shape, calibrate, probe_config};
use saeforge::sae::gpu::GpuEngine;
use saeforge::sae::{Arch, SaeParams, TrainConfig};

fn step_s(e: &mut dyn StepEngine, cfg: &TrainConfig, x: &[f32]) -> saeforge::Result<f64> {
    e.step(cfg, x, cfg.batch)?;
    e.take_metrics()?;
    let mut best = f64::MAX;
    for _ in 0..2 {
        let t0 = Instant::now();
        e.step(cfg, x, cfg.batch)?;
        e.take_metrics()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// The value of `--arch` (default topk).
fn arch() -> Arch {
    let args: Vec<String> = std::env::args().collect();
    let v = args
        .iter()
        .position(|a| a == "--arch")
        .and_then(|i| args.get(i + 1));
    v.map_or(Arch::Topk, |v| {
        <Arch as clap::ValueEnum>::from_str(v, false).unwrap_or_else(|e| panic!("--arch {v}: {e}"))
    })
}

fn shapes() -> Vec<Shape> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.contains(','))
        .collect();
    let given: Vec<Shape> = args
        .iter()
        .filter_map(|a| {
            let v: Vec<usize> = a.split(',').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| Shape {
                batch: v[0],
                d: v[1],
                n: v[2],
            })
        })
        .collect();
    if !given.is_empty() {
        return given;
    }
    [
        (1024, 128, 1024),
        (512, 384, 6144),
        (4096, 512, 16384),
        (4096, 2048, 16384),
    ]
    .map(|(batch, d, n)| Shape { batch, d, n })
    .to_vec()
}

fn main() -> saeforge::Result<()> {
    saeforge::gpu::quiet_headless_probe();
    let gpu = Arc::new(Gpu::new(std::env::var("SAEFORGE_ADAPTER").ok().as_deref())?);
    println!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
    let arch = arch();
    let cal = calibrate(&gpu, "bench", arch)?;
    let gpu_fit = cal.gpu.expect("calibrate times the GPU engine's steps");
    println!("{} steps", arch.name());
    println!("cpu engine: {:?}\ngpu engine: {gpu_fit:?}", cal.cpu);
    let topk = if arch == Arch::Topk {
        None
    } else {
        let t = calibrate(&gpu, "bench", Arch::Topk)?;
        let g = t.gpu.expect("calibrate times the GPU engine's steps");
        println!(
            "topk model: cpu engine {:?}\ntopk model: gpu engine {g:?}",
            t.cpu
        );
        Some((t.cpu, g))
    };
    println!(
        "B, d -> n                cpu model  cpu measured   gpu model  gpu measured  1st stage  pick             topk model"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for s in shapes() {
        let cfg = probe_config(&s, arch, 32)?;
        let x: Vec<f32> = (0..s.batch * s.d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let st = TrainState::new(SaeParams::init(&cfg, &x));
        let measured_gpu = match GpuEngine::check_capacity(&gpu, &cfg) {
            Ok(()) => {
                let mut g = GpuEngine::new(gpu.clone(), &cfg, &st)?;
                Some(step_s(&mut g, &cfg, &x)?)
            }
            Err(_) => None,
        };
        let measured_cpu = step_s(&mut CpuEngine::new(st), &cfg, &x)?;
        let (mc, mg) = (cal.cpu.step_s(&s), gpu_fit.step_s(&s));
        let first = if cal.decided_without_gpu_steps(&s) {
            "cpu"
        } else {
            "-"
        };
        let pick = |cpu_faster: bool| if cpu_faster { "cpu" } else { "gpu" };
        let verdict = match measured_gpu {
            Some(g) => {
                let (model, truth) = (pick(mc <= mg), pick(measured_cpu <= g));
                format!(
                    "{model} ({})",
                    if model == truth { "right" } else { "WRONG" }
                )
            }
            None => "cpu (does not fit the GPU)".into(),
        };
        let old = topk.map_or(String::new(), |(c, g)| {
            format!("{:.1} / {:.1}", c.step_s(&s) * 1e3, g.step_s(&s) * 1e3)
        });
        println!(
            "{:<22} {:>10.1} {:>13.1} {:>11.1} {:>13} {first:>10}  {verdict:<16} {old}",
            format!("{}, {} -> {}", s.batch, s.d, s.n),
            mc * 1e3,
            measured_cpu * 1e3,
            mg * 1e3,
            measured_gpu.map_or("-".into(), |g| format!("{:.1}", g * 1e3)),
        );
    }
    Ok(())
}
