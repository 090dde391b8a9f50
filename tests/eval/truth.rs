//! The ground-truth metrics (SAELens's definitions) on hand-made cases with known answers,
//! the optimal matching against brute force, the codes files, and `eval --truth` on a
//! synth world against the same figures computed here from the definitions.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::eval::run::{EvalConfig, run_eval};
use saeforge::eval::truth::{
    FiringCounts, abs_cosines, argmax_rows, assignment, dictionary_truth, uniqueness,
};
use saeforge::gpu::Engine;
use saeforge::sae::export::{SaeKind, SaeModel};
use saeforge::synth::{
    HierarchySettings, SparseCodes, Structure, SynthConfig, read_codes, read_truth, write_codes,
    write_world,
};

use crate::common::{cpu_test, fail, gpu_test, randn};
use crate::metrics::tmp;

fn close(what: &str, got: f64, want: f64) -> Result<(), Failed> {
    // Sums of at most a few hundred f64 terms of size <= 1: 1e-12 is far above rounding.
    if (got - want).abs() > 1e-12 {
        return Err(format!("{what}: {got}, expected {want}").into());
    }
    Ok(())
}

/// A 3 x 3 case where the greedy matching (row 0 takes its best column) is not optimal,
/// and a wide and a tall case.
fn assignment_known() -> Result<(), Failed> {
    #[rustfmt::skip]
    let cos = [
        0.9, 0.8, 0.0,
        0.85, 0.1, 0.0,
        0.0, 0.0, 0.5,
    ];
    let pairs = assignment(&cos, 3, 3).map_err(fail)?;
    if pairs != [(0, 1), (1, 0), (2, 2)] {
        return Err(format!("3 x 3: {pairs:?}, expected [(0, 1), (1, 0), (2, 2)]").into());
    }
    // Wide: 2 rows, 4 columns; tall: its transpose. Optimum 0.7 + 0.9 either way.
    #[rustfmt::skip]
    let wide = [
        0.1, 0.7, 0.8, 0.0,
        0.2, 0.3, 0.9, 0.4,
    ];
    let pairs = assignment(&wide, 2, 4).map_err(fail)?;
    if pairs != [(0, 1), (1, 2)] {
        return Err(format!("2 x 4: {pairs:?}, expected [(0, 1), (1, 2)]").into());
    }
    let tall: Vec<f32> = (0..8).map(|i| wide[(i % 2) * 4 + i / 2]).collect();
    let pairs = assignment(&tall, 4, 2).map_err(fail)?;
    if pairs != [(1, 0), (2, 1)] {
        return Err(format!("4 x 2: {pairs:?}, expected [(1, 0), (2, 1)]").into());
    }
    Ok(())
}

/// The best summed |cos| over every injective map of the smaller side, by enumeration.
fn brute_force(cos: &[f32], rows: usize, cols: usize) -> f64 {
    fn go(cos: &[f32], rows: usize, cols: usize, r: usize, used: &mut [bool], tall: bool) -> f64 {
        let (small, big) = if tall { (cols, rows) } else { (rows, cols) };
        if r == small {
            return 0.0;
        }
        let mut best = f64::NEG_INFINITY;
        for c in 0..big {
            if !used[c] {
                used[c] = true;
                let v = if tall {
                    cos[c * cols + r]
                } else {
                    cos[r * cols + c]
                };
                best = best.max(v as f64 + go(cos, rows, cols, r + 1, used, tall));
                used[c] = false;
            }
        }
        best
    }
    let tall = rows > cols;
    let mut used = vec![false; rows.max(cols)];
    go(cos, rows, cols, 0, &mut used, tall)
}

/// Random matrices up to 6 x 7 (either way round): the matching's sum is the brute-force
/// optimum, one-to-one, of min(rows, cols) pairs.
fn assignment_optimal(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    for _ in 0..200 {
        let rows = rng.random_range(1..=7);
        let cols = rng.random_range(1..=7);
        let cos: Vec<f32> = (0..rows * cols).map(|_| rng.random::<f32>()).collect();
        let pairs = assignment(&cos, rows, cols).map_err(fail)?;
        let mut r: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let mut c: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        r.dedup();
        c.sort_unstable();
        c.dedup();
        if pairs.len() != rows.min(cols) || r.len() != pairs.len() || c.len() != pairs.len() {
            return Err(format!("{rows} x {cols}: not one-to-one: {pairs:?}").into());
        }
        let got: f64 = pairs.iter().map(|&(i, j)| cos[i * cols + j] as f64).sum();
        let want = brute_force(&cos, rows, cols);
        if (got - want).abs() > 1e-6 {
            return Err(format!("{rows} x {cols}: matched sum {got}, optimum {want}").into());
        }
    }
    Ok(())
}

/// Decoder = true features permuted, rescaled and sign-flipped: MCC 1, uniqueness 1; two
/// latents on one feature and a third on another of three: uniqueness 2/3, MCC from the
/// matching; argmax takes the first of equal entries.
fn dictionary_known(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let (n, d) = (12, 8);
    let f = randn(rng, n * d, 1.0);
    let perm: Vec<usize> = rand::seq::index::sample(rng, n, n).into_vec();
    let mut w = vec![0.0f32; n * d];
    for (i, &p) in perm.iter().enumerate() {
        let s = if i % 2 == 0 { 2.5 } else { -0.5 };
        for k in 0..d {
            w[i * d + k] = s * f[p * d + k];
        }
    }
    let t = dictionary_truth(&w, &f, d).map_err(fail)?;
    if (t.mcc - 1.0).abs() > 1e-6 || t.uniqueness != 1.0 || t.mcc_pairs != n {
        return Err(format!("permuted dictionary: {t:?}").into());
    }
    if t.best != perm.iter().map(|&p| p as u32).collect::<Vec<_>>() {
        return Err(format!("best matches {:?}, expected {perm:?}", t.best).into());
    }
    // Orthonormal truth e0, e1, e2 in 3 dims; latents e0, e0, (e1 + e2)/sqrt2 * ... :
    let f3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let s = 0.5f32.sqrt();
    let w3 = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, s, s];
    let t = dictionary_truth(&w3, &f3, 3).map_err(fail)?;
    // Best: latent 0 -> 0, latent 1 -> 0, latent 2 -> 1 (tie with 2; the first wins).
    if t.best != [0, 0, 1] {
        return Err(format!("best {:?}, expected [0, 0, 1]", t.best).into());
    }
    close("uniqueness", t.uniqueness, 2.0 / 3.0)?;
    // Matching: one of latents 0/1 -> e0 (1), the other -> e1 or e2 (0), latent 2 -> the
    // remaining one (sqrt 1/2): (1 + 0 + 0.7071...) / 3.
    if (t.mcc - (1.0 + s as f64) / 3.0).abs() > 1e-6 {
        return Err(format!("MCC {}, expected {}", t.mcc, (1.0 + s as f64) / 3.0).into());
    }
    close("uniqueness of []", uniqueness(&[]), 0.0)?;
    let cos = abs_cosines(&w3, &f3, 3);
    if argmax_rows(&cos, 3) != [0, 0, 1] {
        return Err("argmax_rows".into());
    }
    Ok(())
}

/// A forest of two edges (feature 0 parent of 1 and 2), latents matched 0 -> 1, 1 -> 0,
/// 2 -> 2 (latent 3 unmatched), feature 3 a root; six rows, counts worked by hand.
fn absorption_known() -> Result<(), Failed> {
    use saeforge::eval::absorption::AbsorptionCounts;
    let parent = [-1, 0, 0, -1];
    let pairs = [(0usize, 1usize), (1, 0), (2, 2)];
    let mut c = AbsorptionCounts::new(&parent, &pairs, 4).ok_or("no edges")?;
    // (latents fired, true features active). Parent latent = 1; child latents 0 (feature
    // 1) and 2 (feature 2).
    let rows: [(&[u32], &[u32]); 6] = [
        (&[1], &[0, 1]),       // edge 0->1: eligible, child latent silent (absorbed)
        (&[0, 1], &[0, 1]),    // edge 0->1: eligible, not absorbed
        (&[1, 3], &[0, 2]),    // edge 0->2: eligible, absorbed
        (&[0], &[0, 1]),       // parent latent silent: not eligible; other way: absorbed
        (&[1], &[0]),          // no child on: nothing
        (&[1, 2], &[0, 1, 2]), // edge 0->1 absorbed; edge 0->2 eligible, not absorbed
    ];
    for (fired, active) in rows {
        c.add_row(fired, active);
    }
    let a = c.finish();
    // Edge 0->1: eligible rows 0, 1, 5; absorbed 0, 5: 2/3. Edge 0->2: rows 2, 5; absorbed
    // 2: 1/2. Mean 7/12 over 2 edges, 5 rows.
    close("absorption", a.absorption, 7.0 / 12.0)?;
    if (a.absorption_edges, a.absorption_rows) != (2, 5) {
        return Err(format!("edges/rows {} {}", a.absorption_edges, a.absorption_rows).into());
    }
    // The other way: child latent fires with the child on. Edge 0->1: rows 1, 3; parent
    // latent silent in 3: 1/2. Edge 0->2: row 5, parent latent fires: 0. Mean 1/4.
    close("absorption_parent", a.absorption_parent, 0.25)?;
    if a.absorption_parent_edges != 2 {
        return Err(format!("parent edges {}", a.absorption_parent_edges).into());
    }
    // No hierarchy, or unmatched parents: no measure.
    if AbsorptionCounts::new(&[], &pairs, 4).is_some() {
        return Err("a truth without a hierarchy has no absorption".into());
    }
    if AbsorptionCounts::new(&[-1, -1], &pairs[..1], 4).is_some() {
        return Err("a forest without edges has no absorption".into());
    }
    Ok(())
}

/// Four latents over three true features, five rows, counts worked by hand.
fn firing_known() -> Result<(), Failed> {
    // Latent -> best feature: 0 -> 0, 1 -> 1, 2 -> 1, 3 -> 2 (latent 3 never fires).
    let mut c = FiringCounts::new(vec![0, 1, 1, 2], 3);
    // (latents fired, true features active) per row.
    let rows: [(&[u32], &[u32]); 5] = [
        (&[0, 1], &[0, 1]),
        (&[0], &[1]),
        (&[2], &[]),
        (&[], &[0, 2]),
        (&[0, 1, 2], &[0]),
    ];
    for (fired, active) in rows {
        c.add_row(fired, active);
    }
    let m = c.finish();
    // latent 0 (feature 0 active in rows 0, 3, 4): fired 0, 1, 4: TP 2 FP 1 FN 1 TN 1.
    // latent 1 (feature 1 active in rows 0, 1): fired 0, 4: TP 1 FP 1 FN 1 TN 2.
    // latent 2 (feature 1): fired 2, 4: TP 0 FP 2 FN 2 TN 1.
    // latent 3 (feature 2 active in row 3): never: TP 0 FP 0 FN 1 TN 4.
    let p = [2.0 / 3.0, 0.5, 0.0, 0.0];
    let r = [2.0 / 3.0, 0.5, 0.0, 0.0];
    let f1 = [2.0 / 3.0, 0.5, 0.0, 0.0];
    let acc = [3.0 / 5.0, 3.0 / 5.0, 1.0 / 5.0, 4.0 / 5.0];
    let mean = |v: [f64; 4]| v.iter().sum::<f64>() / 4.0;
    close("precision", m.precision, mean(p))?;
    close("recall", m.recall, mean(r))?;
    close("f1", m.f1, mean(f1))?;
    close("accuracy", m.accuracy, mean(acc))?;
    close("true_l0", m.true_l0, 6.0 / 5.0)?;
    if m.rows != 5 {
        return Err(format!("rows {}", m.rows).into());
    }
    // Precision and recall apart: a latent firing on every row of a feature active in
    // half of them has precision 1/2, recall 1, F1 2/3.
    let mut c = FiringCounts::new(vec![0], 1);
    for r in 0..4u32 {
        c.add_row(&[0], if r % 2 == 0 { &[0] } else { &[] });
    }
    let m = c.finish();
    close("precision (always on)", m.precision, 0.5)?;
    close("recall (always on)", m.recall, 1.0)?;
    close("f1 (always on)", m.f1, 2.0 / 3.0)?;
    Ok(())
}

/// Codes round-trip, and broken codes files are refused with one line naming the file.
fn codes_files(rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp("codes-files");
    let (rows, n) = (37, 20);
    let z: Vec<f32> = (0..rows * n)
        .map(|_| {
            if rng.random::<f32>() < 0.2 {
                rng.random_range(0.1..2.0f32)
            } else {
                0.0
            }
        })
        .collect();
    let codes = SparseCodes::from_dense(&z, rows, n);
    let shard = dir.join("shard-00000.safetensors");
    let path = write_codes(&shard, &codes).map_err(fail)?;
    if path != dir.join("codes").join("shard-00000.safetensors") {
        return Err(format!("codes written to {}", path.display()).into());
    }
    let back = read_codes(&path, n, rows).map_err(fail)?;
    if back != codes {
        return Err("codes did not round-trip".into());
    }
    if codes.slice(5, 9) != SparseCodes::from_dense(&z[5 * n..9 * n], 4, n) {
        return Err("SparseCodes::slice".into());
    }
    for (what, result) in [
        ("rows", read_codes(&path, n, rows + 1)),
        ("features", read_codes(&path, 3, rows)),
    ] {
        match result {
            Ok(_) => return Err(format!("a codes file with the wrong {what} was accepted").into()),
            Err(e) if !e.to_string().contains("shard-00000") => {
                return Err(format!("error does not name the file: {e}").into());
            }
            Err(_) => {}
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A structured synth world (hierarchy with exclusive children, bias), a topk SAE whose
/// decoder is the truth plus noise: `eval --truth` reports the MCC, uniqueness and firing
/// metrics computed here from the definitions (f64, brute force), on rows spanning shards.
fn eval_against_definitions(engine: Engine, rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let dir = tmp(&format!("truth-eval-{}", matches!(engine, Engine::Cpu)));
    let data = dir.join("data");
    let (n, d, k) = (48, 16, 3);
    let cfg = SynthConfig {
        features: n,
        d_in: d,
        active: 3.0,
        density_decay: 0.5,
        tokens: 700,
        shard_tokens: 300,
        seed: rng.random(),
        ..SynthConfig::default()
    };
    let structure = Structure {
        hierarchy: Some(HierarchySettings {
            roots: 4,
            branching: (2, 4),
            depth: 1,
            exclusive: 0.5,
            compensate: true,
        }),
        bias: 0.5,
        ..Structure::default()
    };
    write_world(&data, cfg, structure, true).map_err(fail)?;
    let truth = read_truth(&data.join("truth.safetensors")).map_err(fail)?;
    // 40 latents: 36 noisy copies of features (some twice), 4 random.
    let nl = 40;
    let (w_enc, w_dec) = noisy_copies(rng, &truth.features, d, nl, 36, 7, 0.15);
    let model = SaeModel {
        kind: SaeKind::Topk { k },
        d,
        n: nl,
        w_enc,
        b_enc: vec![0.0; nl],
        w_dec: w_dec.clone(),
        b_dec: truth.bias.clone(),
        threshold: Vec::new(),
        skip: None,
        d_out: None,
    };
    let sae = dir.join("sae");
    model
        .save(&sae, None, serde_json::json!({}))
        .map_err(fail)?;
    let rows = 650;
    let report = run_eval(
        &engine,
        "test engine",
        &EvalConfig {
            sae: sae.clone(),
            data: vec![data.clone()],
            ood: Vec::new(),
            tensor: None,
            truth: Some(data.join("truth.safetensors")),
            rows,
            batch: 64,
            fista: None,
            plots: None,
        },
    )
    .map_err(fail)?;
    let g = report
        .ground_truth
        .as_ref()
        .ok_or("no ground-truth section")?;
    let got = g
        .firing
        .as_ref()
        .map_err(|e| format!("no firing metrics: {e}"))?;

    // Expected, from the definitions: |cos| in f64, best = first argmax.
    let cos64 = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        (dot / (na * nb)).abs()
    };
    let best: Vec<u32> = (0..nl)
        .map(|i| {
            let mut b = (f64::NEG_INFINITY, 0u32);
            for j in 0..n {
                let c = cos64(
                    &w_dec[i * d..(i + 1) * d],
                    &truth.features[j * d..(j + 1) * d],
                );
                if c > b.0 {
                    b = (c, j as u32);
                }
            }
            b.1
        })
        .collect();
    if g.dictionary.best != best {
        return Err(format!("best matches {:?}, expected {best:?}", g.dictionary.best).into());
    }
    let mut distinct = best.clone();
    distinct.sort_unstable();
    distinct.dedup();
    close(
        "uniqueness",
        g.dictionary.uniqueness,
        distinct.len() as f64 / nl as f64,
    )?;
    // The SAE's codes of each row (the encoder is checked against f64 elsewhere) and the
    // true codes read straight from the files.
    let mut true_rows: Vec<Vec<u32>> = Vec::new();
    for s in 0..3 {
        let shard_rows = if s < 2 { 300 } else { 100 };
        let c = read_codes(
            &data.join(format!("codes/shard-{s:05}.safetensors")),
            n,
            shard_rows,
        )
        .map_err(fail)?;
        for r in 0..shard_rows {
            true_rows.push(c.row(r).0.to_vec());
        }
    }
    let mut src = saeforge::eval::source::HeldOut::open(std::slice::from_ref(&data), None, rows)
        .map_err(fail)?;
    let (x, got_rows) = src.next_batch(rows).map_err(fail)?.ok_or("no rows")?;
    let pre = model.pre(&x, got_rows);
    let (mut tp, mut fp, mut fneg, mut tn) = (
        vec![0f64; nl],
        vec![0f64; nl],
        vec![0f64; nl],
        vec![0f64; nl],
    );
    let mut true_active = 0usize;
    for r in 0..rows {
        let p = &pre[r * nl..(r + 1) * nl];
        let mut order: Vec<usize> = (0..nl).collect();
        order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap().then(a.cmp(&b)));
        let fired: Vec<bool> = (0..nl)
            .map(|i| order[..k].contains(&i) && p[i] > 0.0)
            .collect();
        true_active += true_rows[r].len();
        for i in 0..nl {
            let on = true_rows[r].contains(&best[i]);
            match (fired[i], on) {
                (true, true) => tp[i] += 1.0,
                (true, false) => fp[i] += 1.0,
                (false, true) => fneg[i] += 1.0,
                (false, false) => tn[i] += 1.0,
            }
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let (mut ps, mut rs, mut fs, mut accs) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..nl {
        let p = ratio(tp[i], tp[i] + fp[i]);
        let r = ratio(tp[i], tp[i] + fneg[i]);
        ps += p;
        rs += r;
        fs += ratio(2.0 * p * r, p + r);
        accs += (tp[i] + tn[i]) / rows as f64;
    }
    let m = nl as f64;
    // The CPU engine makes the TopK choices of `model.pre` exactly; the GPU engine's GEMM
    // rounds differently and may flip a near-tie (PEER_TRUTH_FIRING has the bound).
    let atol = match engine {
        Engine::Cpu => 1e-12,
        Engine::Gpu(_) => crate::common::tolerance::PEER_TRUTH_FIRING.atol as f64,
    };
    let close = |what: &str, got: f64, want: f64| -> Result<(), Failed> {
        if (got - want).abs() > atol {
            return Err(format!("{what}: {got}, expected {want}").into());
        }
        Ok(())
    };
    eprintln!(
        "eval --truth on a hierarchy world: MCC {:.4}, uniqueness {:.4}, precision {:.4}, recall {:.4}, F1 {:.4}, true L0 {:.3}",
        g.dictionary.mcc, g.dictionary.uniqueness, got.precision, got.recall, got.f1, got.true_l0
    );
    close("precision", got.precision, ps / m)?;
    close("recall", got.recall, rs / m)?;
    close("f1", got.f1, fs / m)?;
    close("accuracy", got.accuracy, accs / m)?;
    close("true_l0", got.true_l0, true_active as f64 / rows as f64)?;
    if got.rows != rows as u64 {
        return Err(format!("firing metrics on {} rows, expected {rows}", got.rows).into());
    }
    // The JSON carries the keys item 4's bench reads.
    let j = report.to_json();
    for key in [
        "mcc",
        "uniqueness",
        "precision",
        "recall",
        "f1",
        "accuracy",
        "true_l0",
        "mmcs",
        "unique_best_matches",
    ] {
        if !j.get(key).is_some_and(|v| v.is_number()) {
            return Err(format!("eval JSON has no number {key:?}").into());
        }
    }
    // Without codes: the dictionary metrics, and the reason in place of the firing ones.
    std::fs::remove_dir_all(data.join("codes")).map_err(fail)?;
    let report = run_eval(
        &engine,
        "test engine",
        &EvalConfig {
            sae,
            data: vec![data.clone()],
            ood: Vec::new(),
            tensor: None,
            truth: Some(data.join("truth.safetensors")),
            rows,
            batch: 64,
            fista: None,
            plots: None,
        },
    )
    .map_err(fail)?;
    let j = report.to_json();
    if !j.get("mcc").is_some_and(|v| v.is_number())
        || j.get("f1").is_some()
        || !j.get("truth_codes_missing").is_some_and(|v| v.is_string())
    {
        return Err(format!("without codes: {j}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        cpu_test("truth::assignment_known", |_| assignment_known()),
        cpu_test("truth::assignment_optimal", assignment_optimal),
        cpu_test("truth::dictionary_known", dictionary_known),
        cpu_test("truth::firing_known", |_| firing_known()),
        cpu_test("truth::absorption_known", |_| absorption_known()),
        cpu_test("truth::codes_files", codes_files),
        cpu_test("truth::eval_against_definitions_cpu", |rng| {
            eval_against_definitions(Engine::Cpu, rng)
        }),
        gpu_test("truth::eval_against_definitions_gpu", |_, rng| {
            let gpu = crate::common::gpu().map_err(fail)?;
            eval_against_definitions(Engine::Gpu(gpu), rng)
        }),
    ]
}

/// A dictionary of `nl` latents over the true features (n, d): latent i < `copies` is feature
/// (i * stride) % n plus Gaussian noise of norm ~`noise`, the rest noise alone; W_enc is
/// W_dec's transpose. Returns (W_enc (d, nl), W_dec (nl, d)).
pub fn noisy_copies(
    rng: &mut ChaCha8Rng,
    features: &[f32],
    d: usize,
    nl: usize,
    copies: usize,
    stride: usize,
    noise: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = features.len() / d;
    let mut w_dec = randn(rng, nl * d, noise / (d as f32).sqrt());
    for i in 0..copies {
        let j = (i * stride) % n;
        for c in 0..d {
            w_dec[i * d + c] += features[j * d + c];
        }
    }
    let mut w_enc = vec![0.0f32; d * nl];
    for i in 0..nl {
        for c in 0..d {
            w_enc[c * nl + i] = w_dec[i * d + c];
        }
    }
    (w_enc, w_dec)
}
