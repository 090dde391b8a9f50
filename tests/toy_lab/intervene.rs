//! `toy --experiment intervene`: an SAE trained (through `saeforge train`'s entry) on the
//! hidden layer of a toy model in superposition finds the features' directions; ablating a
//! feature's latent in the hidden layer (the SAE's error kept) removes that feature's
//! output where it was on and leaves the other outputs nearly untouched; clamping it turns
//! the output on everywhere.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::{DeviceChoice, Engine};
use saeforge::toy::Schedule;
use saeforge::toy::lab::intervene::{InterveneConfig, run, summary, table};

use crate::common::{self, fail};

fn check(engine: &Engine, device: DeviceChoice, name: &str) -> Result<(), Failed> {
    let dir = common::tmp_dir("toy-lab", &format!("intervene-{name}"));
    let cfg = InterveneConfig {
        n: 8,
        m: 3,
        density: 0.05,
        schedule: Schedule {
            steps: 3000,
            batch: 256,
            ..Schedule::notebook()
        },
        capture_rows: 16_384,
        test_rows: 4096,
        sae_latents: 16,
        sae_steps: 1000,
        sae_batch: 512,
        sae_device: device,
        ..InterveneConfig::default_size()
    };
    let r = run(engine, &cfg, &dir, 0, &mut |_| {});
    let _ = std::fs::remove_dir_all(&dir);
    let r = r.map_err(fail)?;
    eprint!("{}", table(&r));
    let (cos, before, after, _, others) = summary(&r, "ablate");
    if cos < 0.9 {
        return Err(format!("mean cos(latent, feature) {cos:.3}: the SAE missed features").into());
    }
    if !(after < 0.3 * before && others < 0.1 * before) {
        return Err(format!(
            "ablation: x'_i {before:.4} -> {after:.4}, other outputs moved {others:.4}; \
             expected x'_i gone and the others nearly untouched"
        )
        .into());
    }
    let (_, before, after, on, _) = summary(&r, "clamp");
    if !(on > 0.8 && after > before + 0.25) {
        return Err(format!(
            "clamp: x'_i {before:.4} -> {after:.4}, on in {on:.3} of the rows; expected on \
             everywhere"
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("lab::intervene/cpu", || {
            check(&Engine::Cpu, DeviceChoice::Cpu, "cpu")
        }),
        common::gpu_test("lab::intervene/gpu", |_, _| {
            check(
                &Engine::Gpu(common::gpu().map_err(fail)?),
                DeviceChoice::Gpu,
                "gpu",
            )
        }),
    ]
}
