//! `saeforge demo` end to end at a reduced size (the default run is measured by hand; see
//! docs/demo-steer.md): every file is written, the numbers are sane, the folder is reused,
//! and a folder that is not a demo's is refused.

use libtest_mimic::{Failed, Trial};
use saeforge::cli::EngineArgs;
use saeforge::cli::demo::{DemoArgs, DemoConfig, run};
use saeforge::gpu::DeviceChoice;

use crate::common::{cpu_test, fail, gpu_test};
use crate::support::tmp;

pub fn small(out: &std::path::Path, device: DeviceChoice) -> DemoArgs {
    DemoArgs {
        engine: EngineArgs {
            device,
            adapter: std::env::var("SAEFORGE_ADAPTER").ok(),
        },
        features: Some(96),
        d_in: Some(24),
        active: Some(2.0),
        d_sae: Some(192),
        k: Some(3),
        tokens: Some(24_576),
        heldout: Some(2048),
        steps: Some(120),
        batch: Some(256),
        ..DemoArgs::new(out)
    }
}

fn demo(device: DeviceChoice) -> Result<(), Failed> {
    let dir = tmp(&format!("demo-{device:?}"));
    let out = dir.join("demo");
    let s = run(small(&out, device)).map_err(fail)?;
    for f in [
        "demo.json",
        "report.md",
        "summary.json",
        "data/truth.safetensors",
        "data/shard-00000.safetensors",
        "heldout/shard-00000.safetensors",
        "sae/cfg.json",
        "sae/sae_weights.safetensors",
        "sae/plots/loss.png",
        "heldout-codes.safetensors",
        "steer/ablate.safetensors",
        "steer/clamp.safetensors",
        "plots/recovery.png",
        "plots/steering.svg",
    ] {
        if !out.join(f).is_file() {
            return Err(format!("{f} was not written").into());
        }
    }
    let st = &s.steer;
    eprintln!(
        "demo on {device:?}: EV {:.3}, MMCS {:.3}, feature {} -> latent {} (|cos| {:.3}); projection active rows {:?}, fires {:?}",
        s.heldout_explained_variance,
        s.recovery.mmcs,
        st.feature,
        st.latent,
        st.cosine,
        st.proj_active,
        st.fires
    );
    if !(s.heldout_explained_variance > 0.5 && s.recovery.mmcs > 0.7) {
        return Err(format!(
            "EV {:.3}, MMCS {:.3}: training did not work",
            s.heldout_explained_variance, s.recovery.mmcs
        )
        .into());
    }
    // Ablation changes exactly the rows where the latent fired; clamping changes every row
    // and makes the feature's projection large everywhere.
    let fired = (st.fires[0] * st.ablate.rows as f64).round() as u64;
    if st.ablate.rows_changed != fired || st.clamped.rows_changed != st.clamped.rows {
        return Err(format!(
            "rows changed: ablate {} (fired {fired}), clamp {} of {}",
            st.ablate.rows_changed, st.clamped.rows_changed, st.clamped.rows
        )
        .into());
    }
    if !(st.proj_active[1] < st.proj_active[0] && st.proj_inactive[2] > 1.0) {
        return Err(format!(
            "projections: active {:?}, inactive {:?}",
            st.proj_active, st.proj_inactive
        )
        .into());
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    if !report.contains(&format!("--ablate {}", st.latent)) {
        return Err("report.md lacks the steer command".into());
    }
    // A demo folder is reused; a foreign non-empty folder is refused.
    if device == DeviceChoice::Cpu {
        run(small(&out, device)).map_err(fail)?;
        let other = dir.join("mine");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "keep me").unwrap();
        match run(small(&other, device)) {
            Ok(_) => return Err("wrote into a non-demo folder".into()),
            Err(e) if e.to_string().contains("not a saeforge demo folder") => {}
            Err(e) => return Err(format!("unexpected error: {e}").into()),
        }
        if std::fs::read_dir(&other).unwrap().count() != 1 {
            return Err("the refused folder was touched".into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// --full is the 512 -> 16384 scale; overrides win; bad sizes are refused with the flag.
fn full_config() -> Result<(), Failed> {
    let mut a = DemoArgs::new(std::path::Path::new("unused"));
    a.full = true;
    let c = DemoConfig::resolve(&a).map_err(fail)?;
    if (c.d_in, c.d_sae, c.k, c.batch) != (512, 16384, 32, 4096) {
        return Err(format!("--full resolves to {c:?}").into());
    }
    a.k = Some(8);
    if DemoConfig::resolve(&a).map_err(fail)?.k != 8 {
        return Err("--k does not override --full".into());
    }
    a.k = Some(20000);
    match DemoConfig::resolve(&a) {
        Err(e) if e.to_string().starts_with("--k 20000") => Ok(()),
        other => Err(format!("--k 20000 with d_sae 16384: {other:?}").into()),
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("demo::full_config", |_| full_config()),
        cpu_test("demo::end_to_end_small_cpu", |_| demo(DeviceChoice::Cpu)),
        gpu_test("demo::end_to_end_small_gpu", |_, _| demo(DeviceChoice::Gpu)),
    ]
}
