//! The selections against the reference, bit for bit (and their timing, ignored).

use super::*;
use crate::reference::codes::topk_codes as reference;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The maxima of every row's [`BLOCK`]-entry blocks (as `row_block_max`): what
/// `blas::add_bias_block_max` gives the engine, for the selections from block maxima.
/// x: (rows, n) -> (rows, ceil(n / BLOCK))
fn block_max(x: &[f32], n: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    x.par_chunks(n)
        .flat_map_iter(|r| {
            let mut m = Vec::with_capacity(n.div_ceil(BLOCK));
            row_block_max(r, &mut m);
            m
        })
        .collect()
}

fn both(x: &[f32], rows: usize, n: usize, k: usize, cols: Option<(&[u32], &[u32])>) {
    let mut a = (
        vec![7u32; rows + 1],
        vec![7u32; rows * k],
        vec![7.0f32; rows * k],
    );
    let mut b = a.clone();
    reference(x, rows, n, k, cols, &mut a.0, &mut a.1, &mut a.2);
    topk_codes(x, rows, n, k, cols, &mut b.0, &mut b.1, &mut b.2);
    assert_eq!(a.0, b.0, "row_ptr rows {rows} n {n} k {k}");
    assert_eq!(a.1, b.1, "idx rows {rows} n {n} k {k}");
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.2), bits(&b.2), "val rows {rows} n {n} k {k}");
    if cols.is_none() {
        // From the block maxima the encoder writes: the same codes.
        let mut c = (
            vec![7u32; rows + 1],
            vec![7u32; rows * k],
            vec![7.0f32; rows * k],
        );
        let bmax = block_max(x, n);
        topk_codes_from_bmax(x, rows, n, k, &bmax, &mut c.0, &mut c.1, &mut c.2);
        assert_eq!(
            (&a.0, &a.1),
            (&c.0, &c.1),
            "from bmax: rows {rows} n {n} k {k}"
        );
        assert_eq!(
            bits(&a.2),
            bits(&c.2),
            "from bmax: val rows {rows} n {n} k {k}"
        );
    }
}

/// Multiples of 1/4 in [-2, 2) (ties), one in ten drawn from `specials` instead.
pub(crate) fn coarse(rng: &mut ChaCha8Rng, len: usize, specials: &[f32]) -> Vec<f32> {
    (0..len)
        .map(|_| {
            if rng.random::<f32>() < 0.1 {
                specials[rng.random_range(0..specials.len())]
            } else {
                (rng.random_range(-8i32..8) as f32) * 0.25
            }
        })
        .collect()
}

#[test]
fn activation_codes_match_the_reference_bitwise() {
    use crate::reference::codes::activation_codes as reference;
    let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
    let specials = [0.0, -0.0, 0.25, 0.5, -0.25, f32::INFINITY, 1e-40, -1e-40];
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for &(rows, n) in &[(0, 4), (1, 1), (3, 5), (17, 64), (40, 300), (5, 1000)] {
        let x = coarse(&mut rng, rows * n, &specials);
        // Thresholds on the grid of x's values (ties at theta), and the window.
        let log_thr: Vec<f32> = (0..n)
            .map(|_| ((rng.random_range(1i32..6) as f32) * 0.25).ln())
            .collect();
        for jump in [None, Some((&log_thr[..], 0.0)), Some((&log_thr[..], 0.5))] {
            let a = reference(&x, rows, n, jump);
            let b = activation_codes(&x, rows, n, jump);
            let what = format!("rows {rows} n {n} jump {:?}", jump.map(|j| j.1));
            assert_eq!((&a.0, &a.1), (&b.0, &b.1), "row_ptr, idx: {what}");
            assert_eq!(bits(&a.2), bits(&b.2), "val: {what}");
            assert_eq!(bits(&a.3), bits(&b.3), "pre_val: {what}");
            // Bounded: the same codes up to a cap of exactly their count, none past it.
            let nnz = a.1.len();
            for cap in [nnz, nnz + 1, nnz.saturating_sub(1), 0] {
                let c = super::activation_codes_within(&x, rows, n, jump, cap);
                let want = (nnz <= cap).then(|| a.clone());
                assert_eq!(
                    c, want,
                    "activation_codes_within cap {cap} of {nnz}: {what}"
                );
            }
        }
    }
}

#[test]
fn matches_the_reference_bitwise() {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
    let specials = [0.0, -0.0, f32::NAN, 1.0, 1.0, -1.0, f32::INFINITY, 1e-40];
    for &(rows, n) in &[(1, 1), (3, 5), (17, 64), (40, 300), (5, 1000)] {
        // Continuous values: the floor rises and most scan chunks are skipped.
        let x: Vec<f32> = (0..rows * n).map(|_| rng.random::<f32>() - 0.3).collect();
        for k in [1, 3, 32] {
            both(&x, rows, n, k, None);
        }
        // Coarse values make ties; a share of specials.
        let x = coarse(&mut rng, rows * n, &specials);
        let dead: Vec<u32> = (0..n as u32)
            .filter(|_| rng.random::<f32>() < 0.3)
            .collect();
        let mut list = dead.clone();
        list.resize(n, 0);
        let count = [dead.len() as u32];
        for k in [0, 1, 2, 3, 7, 32, n, n + 3] {
            both(&x, rows, n, k, None);
            both(&x, rows, n, k, Some((&list, &count)));
            both(&x, rows, n, k, Some((&list, &[0])));
        }
    }
}

fn both_batch(x: &[f32], rows: usize, n: usize, k_total: usize) {
    let mut a = (
        vec![7u32; rows + 1],
        vec![7u32; k_total],
        vec![7.0f32; k_total],
        [7.0f32],
    );
    let mut b = a.clone();
    let r = crate::reference::topk::batchtopk;
    r(x, rows, n, k_total, &mut a.0, &mut a.1, &mut a.2, &mut a.3);
    let bmax = block_max(x, n);
    batchtopk_from_bmax(
        x, rows, n, k_total, &bmax, &mut b.0, &mut b.1, &mut b.2, &mut b.3,
    );
    let what = format!("rows {rows} n {n} k_total {k_total}");
    assert_eq!(a.0, b.0, "batchtopk row_ptr {what}");
    assert_eq!(a.1, b.1, "batchtopk idx {what}");
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.2), bits(&b.2), "batchtopk val {what}");
    assert_eq!(
        a.3[0].to_bits(),
        b.3[0].to_bits(),
        "batchtopk threshold {what}"
    );
}

#[test]
fn batchtopk_matches_the_reference_bitwise() {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
    ];
    for &(rows, n) in &[(1, 1), (3, 5), (17, 64), (40, 300), (5, 1000), (64, 33)] {
        let normal: Vec<f32> = (0..rows * n).map(|_| rng.random::<f32>() - 0.3).collect();
        // Coarse values: ties across rows at the threshold, and a share of specials.
        let coarse = coarse(&mut rng, rows * n, &specials);
        let zeros = vec![0.0f32; rows * n];
        for x in [&normal, &coarse, &zeros] {
            let all = rows * n;
            let mut ks = vec![1, 2, rows, 3 * rows, all / 2, all];
            ks.retain(|&k| k >= 1 && k <= all);
            for k in ks {
                both_batch(x, rows, n, k);
            }
        }
    }
}

/// More candidates than [`super::RADIX_ABOVE`]: `batch_threshold` narrows them by its
/// radix pass (the shapes above are too small to). Every entry a candidate (fewer blocks
/// than k_total), or the bound's; values spread, coarse (ties across buckets' edges and at
/// the threshold, infinities, -0) and all equal (one bucket).
#[test]
fn batchtopk_radix_pass_matches_the_reference_bitwise() {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
    let (rows, n) = (300, 1000);
    let all = rows * n;
    assert!(all > super::RADIX_ABOVE);
    let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40];
    let normal: Vec<f32> = (0..all).map(|_| rng.random::<f32>() - 0.3).collect();
    let coarse = coarse(&mut rng, all, &specials);
    let zeros = vec![0.0f32; all];
    let blocks = rows * n.div_ceil(BLOCK);
    for x in [&normal, &coarse, &zeros] {
        for k in [1, blocks + 1, all / 3, all - 1, all] {
            both_batch(x, rows, n, k);
        }
    }
}

/// `cargo test --release --lib cpu_codes::tests::timing -- --ignored --nocapture`: AuxK's
/// selection at 4096 x 16384 with a quarter of the latents dead, the top-32, BatchTopK,
/// and the top-k at two smaller shapes.
#[test]
#[ignore]
fn timing() {
    let (rows, n) = (4096, 16384);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..rows * n).map(|_| rng.random::<f32>() - 0.5).collect();
    let mut list: Vec<u32> = (0..n as u32).filter(|i| i % 4 == 0).collect();
    let count = [list.len() as u32];
    list.resize(n, 0);
    for (k, cols) in [(256, Some((&list[..], &count[..]))), (32, None)] {
        let mut o = (
            vec![0u32; rows + 1],
            vec![0u32; rows * k],
            vec![0.0f32; rows * k],
        );
        let t = std::time::Instant::now();
        reference(&x, rows, n, k, cols, &mut o.0, &mut o.1, &mut o.2);
        let r = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        topk_codes(&x, rows, n, k, cols, &mut o.0, &mut o.1, &mut o.2);
        let f = t.elapsed().as_secs_f64();
        println!(
            "k {k} dead {}: reference {r:.3} s, cpu_codes {f:.3} s",
            cols.is_some()
        );
    }
    // BatchTopK's selection of 32 x 4096 entries.
    let kt = 32 * rows;
    let mut o = (
        vec![0u32; rows + 1],
        vec![0u32; kt],
        vec![0.0f32; kt],
        [0.0],
    );
    let t = std::time::Instant::now();
    let r = crate::reference::topk::batchtopk;
    r(&x, rows, n, kt, &mut o.0, &mut o.1, &mut o.2, &mut o.3);
    let r = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let bmax = block_max(&x, n);
    batchtopk_from_bmax(
        &x, rows, n, kt, &bmax, &mut o.0, &mut o.1, &mut o.2, &mut o.3,
    );
    let f = t.elapsed().as_secs_f64();
    println!("batchtopk k_total {kt}: reference {r:.3} s, cpu_codes {f:.3} s");
    // The top-k at the speed issue's smaller shapes (median of 9 calls).
    for (rows, n, k) in [(1024, 1024, 13), (512, 6144, 32)] {
        let x: Vec<f32> = (0..rows * n).map(|_| rng.random::<f32>() - 0.5).collect();
        let mut o = (
            vec![0u32; rows + 1],
            vec![0u32; rows * k],
            vec![0.0f32; rows * k],
        );
        let mut t: Vec<f64> = (0..9)
            .map(|_| {
                let t = std::time::Instant::now();
                topk_codes(&x, rows, n, k, None, &mut o.0, &mut o.1, &mut o.2);
                t.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        println!("{rows} x {n} top-{k}: cpu_codes {:.2} ms", t[4] * 1e3);
    }
}
