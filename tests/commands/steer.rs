//! `saeforge steer`: without edits (or with edits that change nothing) the output is the
//! input bit for bit, other tensors and metadata included; an ablation removes exactly
//! z_I W_dec[I] from the rows where latent I fired; set / scale / add do what they say; bad
//! flags are refused with one line naming the flag.

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use rand_chacha::ChaCha8Rng;
use saeforge::cli::steer::{SteerArgs, run};
use saeforge::cli::synth::DtypeArg;
use saeforge::cli::{EncoderArgs, EngineArgs};
use saeforge::data::FloatType;
use saeforge::eval::steer::{Edit, EditOp, SteerOutput, check_edits, code_of, steer_file};
use saeforge::gpu::{DeviceChoice, Engine};
use saeforge::sae::export::{SaeKind, SaeModel};
use saeforge::sae::infer::Encoder;
use safetensors::Dtype;

use crate::common::{assert_close, cpu_test, fail, gpu_test, tolerance};
use crate::support::{
    activations, borderline, floats, kept_rows, random_model, read_metadata, read_tensor, saved,
    tmp, write_shard,
};

const D: usize = 32;
const N: usize = 128;
const ROWS: usize = 150;

struct Case {
    dir: PathBuf,
    model: SaeModel,
    data: PathBuf,
    x: Vec<f32>,
    dtype: FloatType,
}

fn case(rng: &mut ChaCha8Rng, name: &str, kind: SaeKind, dtype: FloatType) -> Result<Case, Failed> {
    let dir = tmp(name);
    let model = saved(&dir.join("sae"), &random_model(rng, kind, D, N))?;
    let x = activations(rng, ROWS * D, dtype);
    let data = dir.join("acts.safetensors");
    write_shard(&data, &[ROWS, D], &x, dtype);
    Ok(Case {
        dir,
        model,
        data,
        x,
        dtype,
    })
}

fn args(c: &Case, out: &str, edits: &[(&str, String)], device: DeviceChoice) -> SteerArgs {
    let pick = |flag: &str| -> Vec<String> {
        edits
            .iter()
            .filter(|(f, _)| *f == flag)
            .map(|(_, v)| v.clone())
            .collect()
    };
    SteerArgs {
        sae: c.dir.join("sae"),
        data: c.data.clone(),
        tensor: None,
        out: c.dir.join(out),
        set: pick("set"),
        scale: pick("scale"),
        ablate: pick("ablate"),
        add: pick("add"),
        out_dtype: None,
        out_tensor: None,
        encoder: EncoderArgs {
            engine: EngineArgs {
                device,
                adapter: std::env::var("SAEFORGE_ADAPTER").ok(),
            },
            batch: Some(64),
        },
        json: None,
    }
}

/// The steered tensor as f32, checking that dtype, shape and the other tensor and metadata
/// are kept.
fn output(c: &Case, out: &Path) -> Result<Vec<f32>, Failed> {
    let (dt, sh, b) = read_tensor(out, "acts");
    if dt != c.dtype.safetensors() || sh != [ROWS, D] {
        return Err(format!("output is {dt:?} {sh:?}, input {:?} [{ROWS}, {D}]", c.dtype).into());
    }
    if read_tensor(out, "token_ids") != read_tensor(&c.data, "token_ids") {
        return Err("token_ids was not copied unchanged".into());
    }
    if read_metadata(out) != read_metadata(&c.data) {
        return Err("metadata was not copied unchanged".into());
    }
    Ok(floats(dt, &b))
}

/// The codes `steer --device cpu` edits: the CPU engine's encoder's (its product rounds
/// as the CPU engine's GEMM does, not as `SaeModel::encode`'s reference one), so that the
/// edits below are checked bit for bit.
fn cpu_codes(m: &SaeModel, x: &[f32]) -> saeforge::sae::export::Codes {
    let encoder = Encoder::new(m, &Engine::Cpu, ROWS).expect("CPU encoder");
    encoder.encode(x, ROWS).expect("CPU codes")
}

/// The latent firing on the most rows (ties: lower index).
fn busiest(m: &SaeModel, x: &[f32]) -> (usize, usize) {
    let codes = cpu_codes(m, x);
    let mut count = vec![0usize; m.n];
    for &i in &codes.idx {
        count[i as usize] += 1;
    }
    let best = (0..m.n)
        .max_by_key(|&i| (count[i], std::cmp::Reverse(i)))
        .unwrap();
    (best, count[best])
}

/// Stored-dtype rounding of an f32 value, as the output file holds it.
fn stored(dtype: FloatType, v: f32) -> f32 {
    match dtype {
        FloatType::F32 => v,
        FloatType::F16 => half::f16::from_f32(v).to_f32(),
        FloatType::Bf16 => half::bf16::from_f32(v).to_f32(),
    }
}

/// No edits, and edits that change nothing (scale 1, add 0, ablating a latent that never
/// fires): the output tensor's bytes are the input's.
fn no_op_is_bit_exact(
    rng: &mut ChaCha8Rng,
    dtype: FloatType,
    device: DeviceChoice,
) -> Result<(), Failed> {
    let mut c = case(
        rng,
        &format!("noop-{dtype:?}-{device:?}"),
        SaeKind::Topk { k: 6 },
        dtype,
    )?;
    // Negative zeros survive only if untouched rows see no arithmetic (-0 + 0 = +0).
    for i in [5, 3 * D + 1, 77 * D] {
        c.x[i] = -0.0;
    }
    write_shard(&c.data, &[ROWS, D], &c.x, dtype);
    let (busy, _) = busiest(&c.model, &c.x);
    let never = N - 1;
    let runs: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("none.safetensors", vec![]),
        (
            "noop.safetensors",
            vec![
                ("scale", format!("{busy}=1")),
                ("add", format!("{}=0", (busy + 1) % (N - 1))),
                ("ablate", format!("{never}")),
            ],
        ),
    ];
    let input = read_tensor(&c.data, "acts").2;
    for (out, edits) in runs {
        run(args(&c, out, &edits, device)).map_err(fail)?;
        output(&c, &c.dir.join(out))?;
        if read_tensor(&c.dir.join(out), "acts").2 != input {
            return Err(format!("{out} ({edits:?}): output bytes differ from the input").into());
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    Ok(())
}

/// Ablating latent I: rows where it fired become x - z_I W_dec[I] (computed here, rounded to
/// the stored dtype), every other row is the input's bytes. CPU: bit for bit.
fn ablation_is_exact(rng: &mut ChaCha8Rng, dtype: FloatType) -> Result<(), Failed> {
    let c = case(
        rng,
        &format!("ablate-{dtype:?}"),
        SaeKind::Topk { k: 6 },
        dtype,
    )?;
    let (latent, fired) = busiest(&c.model, &c.x);
    if fired == 0 || fired == ROWS {
        return Err(format!("latent {latent} fires on {fired} rows: not a useful case").into());
    }
    run(args(
        &c,
        "ablate.safetensors",
        &[("ablate", latent.to_string())],
        DeviceChoice::Cpu,
    ))
    .map_err(fail)?;
    let got = output(&c, &c.dir.join("ablate.safetensors"))?;
    let codes = cpu_codes(&c.model, &c.x);
    let w = &c.model.w_dec[latent * D..(latent + 1) * D];
    let mut changed = 0;
    for r in 0..ROWS {
        let z = code_of(&codes, r, latent as u32);
        if z != 0.0 {
            changed += 1;
        }
        for j in 0..D {
            let x = c.x[r * D + j];
            let want = if z == 0.0 {
                x
            } else {
                stored(dtype, x - z * w[j])
            };
            if got[r * D + j].to_bits() != want.to_bits() {
                return Err(format!(
                    "row {r} col {j}: got {} want {want} (x {x}, z_I {z}, W_dec[I][j] {})",
                    got[r * D + j],
                    w[j]
                )
                .into());
            }
        }
    }
    if changed != fired {
        return Err(format!("{changed} rows changed, latent fired on {fired}").into());
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    Ok(())
}

/// set / scale / add alone (bit for bit against x + (z' - z) W_dec[I]), then all three at
/// once on different latents (deltas summed in latent order), and the --json statistics.
fn set_scale_add(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let c = case(rng, "semantics", SaeKind::Topk { k: 6 }, FloatType::F32)?;
    let (busy, _) = busiest(&c.model, &c.x);
    let other = (busy + 1) % (N - 1);
    let codes = cpu_codes(&c.model, &c.x);
    let single = [
        ("set", format!("{busy}=2.5"), EditOp::Set(2.5)),
        ("scale", format!("{busy}=-0.75"), EditOp::Scale(-0.75)),
        ("add", format!("{other}=1.25"), EditOp::Add(1.25)),
    ];
    for (flag, value, op) in &single {
        let latent: usize = value.split('=').next().unwrap().parse().unwrap();
        let out = format!("{flag}.safetensors");
        run(args(&c, &out, &[(flag, value.clone())], DeviceChoice::Cpu)).map_err(fail)?;
        let got = output(&c, &c.dir.join(&out))?;
        let e = Edit { latent, op: *op };
        let w = &c.model.w_dec[latent * D..(latent + 1) * D];
        for r in 0..ROWS {
            let z = code_of(&codes, r, latent as u32);
            let dz = e.apply(z) - z;
            for j in 0..D {
                let x = c.x[r * D + j];
                let d = dz * w[j];
                let want = if e.apply(z) == z || d == 0.0 {
                    x
                } else {
                    x + d
                };
                if got[r * D + j].to_bits() != want.to_bits() {
                    return Err(format!(
                        "--{flag} {value}: row {r} col {j}: got {} want {want}",
                        got[r * D + j]
                    )
                    .into());
                }
            }
        }
    }
    // All three at once, with statistics.
    let third = (busy + 2) % (N - 1);
    let mut a = args(
        &c,
        "all.safetensors",
        &[
            ("set", format!("{busy}=2.5")),
            ("scale", format!("{third}=3")),
            ("add", format!("{other}=1.25")),
        ],
        DeviceChoice::Cpu,
    );
    a.json = Some(c.dir.join("all.json"));
    run(a).map_err(fail)?;
    let got = output(&c, &c.dir.join("all.safetensors"))?;
    let mut edits = [
        Edit {
            latent: busy,
            op: EditOp::Set(2.5),
        },
        Edit {
            latent: third,
            op: EditOp::Scale(3.0),
        },
        Edit {
            latent: other,
            op: EditOp::Add(1.25),
        },
    ];
    edits.sort_by_key(|e| e.latent);
    let mut want = c.x.clone();
    let mut rows_changed = [0u64; 3];
    for r in 0..ROWS {
        let mut delta = [0.0f32; D];
        for (i, e) in edits.iter().enumerate() {
            let z = code_of(&codes, r, e.latent as u32);
            if e.apply(z) != z {
                rows_changed[i] += 1;
                let w = &c.model.w_dec[e.latent * D..(e.latent + 1) * D];
                for (dj, &wj) in delta.iter_mut().zip(w) {
                    *dj += (e.apply(z) - z) * wj;
                }
            }
        }
        for j in 0..D {
            if delta[j] != 0.0 {
                want[r * D + j] += delta[j];
            }
        }
    }
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    if bits(&got) != bits(&want) {
        return Err("three edits at once: output differs from x + sum of deltas".into());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("all.json")).unwrap()).unwrap();
    let stats = &json[0]["report"]["edits"];
    for (i, e) in edits.iter().enumerate() {
        let s = &stats[i];
        if s["edit"]["latent"] != e.latent || s["rows_changed"] != rows_changed[i] {
            return Err(format!("statistics of edit {i}: {s}, expected {rows_changed:?}").into());
        }
    }
    if json[0]["report"]["rows"] != ROWS {
        return Err(format!("rows {} != {ROWS}", json[0]["report"]["rows"]).into());
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    Ok(())
}

/// The GPU engine (library path, the test's device): ablation and a three-edit run against
/// the same edits applied with the CPU's codes, on rows whose support cannot flip.
fn gpu_matches_cpu(rng: &mut ChaCha8Rng, kind: SaeKind, name: &str) -> Result<(), Failed> {
    let gpu = crate::common::gpu().map_err(fail)?;
    let c = case(rng, &format!("gpu-{name}"), kind, FloatType::F32)?;
    let (busy, _) = busiest(&c.model, &c.x);
    let engine = Engine::Gpu(gpu);
    let enc = Encoder::new(&c.model, &engine, 64).map_err(fail)?;
    let cpu = Encoder::new(&c.model, &Engine::Cpu, 64).map_err(fail)?;
    for edits in [
        vec![Edit {
            latent: busy,
            op: EditOp::Ablate,
        }],
        vec![
            Edit {
                latent: busy,
                op: EditOp::Set(2.0),
            },
            Edit {
                latent: (busy + 1) % (N - 1),
                op: EditOp::Scale(0.5),
            },
            Edit {
                latent: (busy + 2) % (N - 1),
                op: EditOp::Add(-1.0),
            },
        ],
    ] {
        let edits = check_edits(&edits, N).map_err(fail)?;
        let (g, p) = (c.dir.join("gpu.safetensors"), c.dir.join("cpu.safetensors"));
        let o = SteerOutput::default();
        let rg = steer_file(&enc, &c.model, &edits, &c.data, None, &g, &o).map_err(fail)?;
        let rc = steer_file(&cpu, &c.model, &edits, &c.data, None, &p, &o).map_err(fail)?;
        let (a, b) = (output(&c, &g)?, output(&c, &p)?);
        let skip = borderline(&c.model, &c.x, ROWS, 1e-3);
        let keep = |v: &[f32]| kept_rows(v, D, &skip);
        assert_close(
            &format!("steered on the GPU engine ({} edits)", edits.len()),
            &keep(&a),
            &keep(&b),
            tolerance::steer(D, edits.len()),
        )?;
        if skip.iter().all(|s| !s) && rg.rows_changed != rc.rows_changed {
            return Err(format!(
                "rows changed: GPU {} CPU {}",
                rg.rows_changed, rc.rows_changed
            )
            .into());
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    Ok(())
}

/// Bad flags and files: refused with one line that names the flag or file.
fn refusals(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let c = case(rng, "refusals", SaeKind::Topk { k: 6 }, FloatType::F32)?;
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![("set", "5".into())], "--set 5: expected I=V"),
        (vec![("set", "x=1".into())], "--set x=1: expected I=V"),
        (
            vec![("set", format!("{N}=1"))],
            "--set 128=1: latent 128 is out of range",
        ),
        (
            vec![("ablate", "-3".into())],
            "--ablate -3: expected a latent index",
        ),
        (
            vec![("scale", "3=inf".into())],
            "--scale 3=inf: expected a finite value",
        ),
        (vec![("add", "3=NaN".into())], "expected a finite value"),
        (
            vec![("set", "7=1".into()), ("ablate", "7".into())],
            "both edit latent 7",
        ),
    ];
    for (edits, want) in cases {
        match run(args(&c, "bad.safetensors", &edits, DeviceChoice::Cpu)) {
            Ok(()) => return Err(format!("{edits:?} was accepted").into()),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(want) || msg.contains('\n') || e.exit_code() != 2 {
                    return Err(format!(
                        "{edits:?}: message {msg:?}, expected one line with {want:?}"
                    )
                    .into());
                }
            }
        }
    }
    // --out is the input; --out-tensor collides with another tensor; wrong d.
    let mut a = args(&c, "x", &[], DeviceChoice::Cpu);
    a.out = c.data.clone();
    expect_err(run(a), "is the input file")?;
    let mut a = args(&c, "y.safetensors", &[], DeviceChoice::Cpu);
    a.out_tensor = Some("token_ids".into());
    expect_err(run(a), "--out-tensor \"token_ids\"")?;
    let other = c.dir.join("narrow.safetensors");
    write_shard(&other, &[4, D + 1], &vec![0.5; 4 * (D + 1)], FloatType::F32);
    let mut a = args(&c, "z.safetensors", &[], DeviceChoice::Cpu);
    a.data = other;
    expect_err(run(a), "expects d = 32")?;
    if std::fs::read_dir(&c.dir).unwrap().any(|e| {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        n.contains(".tmp-") || n == "bad.safetensors"
    }) {
        return Err("a refused run left a file behind".into());
    }
    // Renaming and converting: --out-tensor and --out-dtype.
    let mut a = args(
        &c,
        "renamed.safetensors",
        &[("ablate", "0".into())],
        DeviceChoice::Cpu,
    );
    a.out_tensor = Some("steered".into());
    a.out_dtype = Some(DtypeArg::Bf16);
    run(a).map_err(fail)?;
    let (dt, sh, _) = read_tensor(&c.dir.join("renamed.safetensors"), "steered");
    if dt != Dtype::BF16 || sh != [ROWS, D] {
        return Err(format!("renamed tensor is {dt:?} {sh:?}").into());
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    Ok(())
}

fn expect_err(r: saeforge::Result<()>, want: &str) -> Result<(), Failed> {
    match r {
        Ok(()) => Err(format!("accepted; expected an error with {want:?}").into()),
        Err(e) if e.to_string().contains(want) => Ok(()),
        Err(e) => Err(format!("error {:?}, expected one with {want:?}", e.to_string()).into()),
    }
}

/// A folder in, a folder out, with the same file names.
fn folder(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let c = case(rng, "folder", SaeKind::Standard, FloatType::F16)?;
    let inp = c.dir.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    std::fs::copy(&c.data, inp.join("a.safetensors")).unwrap();
    std::fs::copy(&c.data, inp.join("b.safetensors")).unwrap();
    let mut a = args(&c, "outdir", &[("ablate", "1".into())], DeviceChoice::Cpu);
    a.data = inp;
    run(a).map_err(fail)?;
    let a1 = read_tensor(&c.dir.join("outdir/a.safetensors"), "acts");
    let b1 = read_tensor(&c.dir.join("outdir/b.safetensors"), "acts");
    if a1 != b1 {
        return Err("the same input steered twice differs".into());
    }
    // Again into the same folder: the same files are replaced; a run that would leave an
    // earlier run's file beside its own (b.safetensors) is refused, writing nothing.
    let mut a = args(&c, "outdir", &[("ablate", "2".into())], DeviceChoice::Cpu);
    a.data = c.dir.join("in");
    run(a).map_err(fail)?;
    let only_a = c.dir.join("only-a");
    std::fs::create_dir_all(&only_a).unwrap();
    std::fs::copy(&c.data, only_a.join("a.safetensors")).unwrap();
    let before = std::fs::read(c.dir.join("outdir/a.safetensors")).unwrap();
    let mut a = args(&c, "outdir", &[("ablate", "3".into())], DeviceChoice::Cpu);
    a.data = only_a;
    let msg = run(a).err().map(|e| e.to_string()).unwrap_or_default();
    if !msg.contains("already holds b.safetensors") || msg.contains('\n') {
        return Err(format!("stale-file refusal: {msg:?}").into());
    }
    if std::fs::read(c.dir.join("outdir/a.safetensors")).unwrap() != before {
        return Err("a refused run rewrote a.safetensors".into());
    }
    // Refused before any work, their --out folder not created: a glob naming two inputs
    // alike (in/a and only-a/a: one would be lost), and a folder in with a new --out named
    // like one file.
    let refusals = [
        ("globbed", "*/a.safetensors", "have the same file name"),
        ("x.safetensors", "in", "ends in .safetensors like one file"),
    ];
    for (out, data, words) in refusals {
        let mut a = args(&c, out, &[("ablate", "3".into())], DeviceChoice::Cpu);
        a.data = c.dir.join(data);
        let msg = run(a).err().map(|e| e.to_string()).unwrap_or_default();
        if !msg.contains(words) || msg.contains('\n') {
            return Err(format!("--out {out} --data {data}: refusal {msg:?}").into());
        }
        if c.dir.join(out).exists() {
            return Err(format!("a refused run created its --out {out}").into());
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for dtype in [FloatType::F32, FloatType::F16, FloatType::Bf16] {
        let name = format!("{dtype:?}").to_lowercase();
        t.push(cpu_test(
            format!("steer::no_edits_bit_exact_cpu_{name}"),
            move |rng| no_op_is_bit_exact(rng, dtype, DeviceChoice::Cpu),
        ));
        t.push(cpu_test(
            format!("steer::ablation_exact_cpu_{name}"),
            move |rng| ablation_is_exact(rng, dtype),
        ));
    }
    t.push(gpu_test("steer::no_edits_bit_exact_gpu_f16", |_, rng| {
        no_op_is_bit_exact(rng, FloatType::F16, DeviceChoice::Gpu)
    }));
    t.push(cpu_test("steer::set_scale_add_cpu", set_scale_add));
    t.push(cpu_test("steer::refusals", refusals));
    t.push(cpu_test("steer::folder_to_folder_cpu", folder));
    for (kind, name) in [
        (SaeKind::Topk { k: 6 }, "topk"),
        (SaeKind::Standard, "standard"),
        (SaeKind::Jumprelu, "jumprelu"),
    ] {
        t.push(gpu_test(
            format!("steer::gpu_matches_cpu_{name}"),
            move |_, rng| gpu_matches_cpu(rng, kind, name),
        ));
    }
    t
}
