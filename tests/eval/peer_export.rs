//! saeforge's BatchTopK and Matryoshka exports (JumpReLU with the learned threshold, as
//! SAELens saves both) loaded by SAELens (`SAE.load_from_disk`) and encoding the same rows
//! as saeforge's encoder. Runs when SAEFORGE_PEER_PYTHON names a python with sae_lens;
//! otherwise reported as ignored, with that reason.

use std::process::Command;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use saeforge::data::FloatType;
use saeforge::gpu::{DeviceChoice, Engine};
use saeforge::sae::export::SaeModel;
use saeforge::sae::infer::Encoder;
use saeforge::sae::{Arch, TrainArgs, train};
use saeforge::synth::{SynthConfig, write_dataset};

use crate::common::{fail, tolerance};
use crate::metrics::tmp;

/// JumpReLU gate edge: entries whose pre-activation is this close to the threshold may
/// fall on either side in two f32 products summed in different orders (~1e-6 here); they
/// are skipped and counted.
const GATE_EDGE: f32 = 1e-4;

fn one(arch: Arch, py: &str, seed: u64) -> Result<(), Failed> {
    let dir = tmp(&format!("peer-export-{arch:?}"));
    let data = dir.join("data");
    let (n, d) = (96, 16);
    write_dataset(
        &data,
        SynthConfig {
            features: 64,
            d_in: d,
            active: 3.0,
            tokens: 3000,
            shard_tokens: 3000,
            dtype: FloatType::F32,
            seed,
            ..SynthConfig::default()
        },
    )
    .map_err(fail)?;
    let out = dir.join("sae");
    let args = TrainArgs {
        data: Some(vec![data.clone()]),
        out: Some(out.clone()),
        arch: Some(arch),
        d_sae: Some(n),
        k: Some(4),
        batch: Some(128),
        steps: Some(60),
        seed: Some(seed),
        matryoshka_widths: (arch == Arch::Matryoshka).then(|| vec![8, 32, n]),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    };
    train::run(&args).map_err(fail)?;
    let shard = data.join("shard-00000.safetensors");
    let peer_out = dir.join("peer.safetensors");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eval/saelens_encode.py");
    let run = Command::new(py)
        .arg(script)
        .arg(&out)
        .arg(&shard)
        .arg(&peer_out)
        .output()
        .map_err(fail)?;
    if !run.status.success() {
        return Err(format!(
            "SAELens could not load or encode the {arch:?} export:\n{}",
            String::from_utf8_lossy(&run.stderr)
        )
        .into());
    }
    let bytes = std::fs::read(&peer_out).map_err(fail)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(fail)?;
    let f32s = |name: &str| -> Result<Vec<f32>, Failed> {
        let t = st.tensor(name).map_err(fail)?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(t.data()))
    };
    let (peer, pre, thr) = (f32s("codes")?, f32s("pre")?, f32s("threshold")?);
    let x_bytes = std::fs::read(&shard).map_err(fail)?;
    let xs = safetensors::SafeTensors::deserialize(&x_bytes).map_err(fail)?;
    let (_, xt) = xs.tensors().into_iter().next().ok_or("empty shard")?;
    let x: Vec<f32> = bytemuck::pod_collect_to_vec::<u8, f32>(xt.data());
    let rows = x.len() / d;
    let model = SaeModel::load(&out).map_err(fail)?;
    let enc = Encoder::new(&model, &Engine::Cpu, rows).map_err(fail)?;
    let codes = enc
        .run(&x, rows, true)
        .map_err(fail)?
        .codes
        .ok_or("no codes")?;
    let mut ours = vec![0.0f32; rows * n];
    for r in 0..rows {
        for s in codes.row_ptr[r]..codes.row_ptr[r + 1] {
            ours[r * n + codes.idx[s] as usize] = codes.val[s];
        }
    }
    let tol = tolerance::PEER_EXPORT_CODES;
    let (mut worst, mut edge, mut fired) = (0.0f32, 0usize, 0usize);
    for (e, (&a, &b)) in ours.iter().zip(&peer).enumerate() {
        if (pre[e] - thr[e % n]).abs() < GATE_EDGE {
            edge += 1;
            continue;
        }
        fired += (b != 0.0) as usize;
        worst = worst.max((a - b).abs());
    }
    eprintln!(
        "{arch:?} export: {rows} rows x {n} latents, {fired} codes fired, max |saeforge - SAELens| {worst:.2e}, {edge} entries at the gate skipped"
    );
    if worst > tol.atol || edge > rows || fired == 0 {
        return Err(format!(
            "{arch:?}: max abs difference {worst} ({}), {edge} edge entries, {fired} fired",
            tol.name
        )
        .into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    [Arch::Batchtopk, Arch::Matryoshka]
        .into_iter()
        .map(|arch| {
            let name = format!("peer::saelens_loads_{arch:?}_export").to_lowercase();
            crate::common::peer_test(name, "import sae_lens", move |rng, py| {
                one(arch, py, rng.random())
            })
        })
        .collect()
}
