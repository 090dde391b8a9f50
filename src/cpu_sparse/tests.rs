//! `cpu_sparse` against `src/reference/sparse.rs`, bit for bit, on each path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reference;

/// While set, [`super::avx2`] says no: the test bodies' second run, on the baseline
/// path. Other tests that run meanwhile may take the baseline path too, which is why
/// both paths must give the reference's bits.
pub(super) static BASELINE: AtomicBool = AtomicBool::new(false);

/// Runs `body` on the path this CPU takes, then on the baseline path (on x86_64; other
/// targets have only that one), with the path's name. One test at a time: the switch is
/// process-wide.
pub(crate) fn on_each_path(mut body: impl FnMut(&str)) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    body("detected path");
    BASELINE.store(true, Ordering::Relaxed);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body("baseline path")));
    BASELINE.store(false, Ordering::Relaxed);
    if let Err(e) = ran {
        std::panic::resume_unwind(e);
    }
}

/// A random CSR code of `rows` rows over `n` latents, up to `k` per row (latents
/// ascending), with `cap - nnz` unused slots at the end.
pub(crate) fn code(
    rng: &mut ChaCha8Rng,
    rows: usize,
    n: usize,
    k: usize,
) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let mut row_ptr = vec![0u32];
    let mut idx = Vec::new();
    let mut val = Vec::new();
    for _ in 0..rows {
        let mut lat: Vec<u32> = (0..rng.random_range(0..=k))
            .map(|_| rng.random_range(0..n as u32))
            .collect();
        lat.sort_unstable();
        lat.dedup();
        for i in lat {
            idx.push(i);
            val.push(rng.random_range(-2.0..2.0));
        }
        row_ptr.push(idx.len() as u32);
    }
    for _ in 0..5 {
        idx.push(0);
        val.push(0.0);
    }
    (row_ptr, idx, val)
}

/// The code's per-latent lists (lat_ptr, lat_row, lat_slot) by
/// [`reference::build_transpose`].
pub(crate) fn transpose(row_ptr: &[u32], idx: &[u32], rows: usize, n: usize) -> [Vec<u32>; 3] {
    let [mut lat_ptr, mut lat_row, mut lat_slot] = [
        vec![0u32; n + 1],
        vec![0u32; idx.len()],
        vec![0u32; idx.len()],
    ];
    reference::build_transpose(
        row_ptr,
        idx,
        rows,
        n,
        &mut lat_ptr,
        &mut lat_row,
        &mut lat_slot,
    );
    [lat_ptr, lat_row, lat_slot]
}

pub(crate) fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// (rows, d, n, k): d below, at and past [`super::sum_rows`]' blocks of 32 / 64
/// columns, with and without a tail.
const SHAPES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1),
    (7, 5, 33, 4),
    (40, 17, 1500, 12),
    (64, 64, 2100, 40),
    (9, 100, 300, 6),
    (12, 512, 700, 30),
];

#[test]
fn sparse_decode_and_dot_are_the_reference_bit_for_bit() {
    on_each_path(|path| {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
        for (rows, d, n, k) in SHAPES {
            let (rp, idx, val) = code(&mut rng, rows, n, k);
            let w_dec = random(&mut rng, n * d);
            let b_dec = random(&mut rng, d);
            for bias in [None, Some(&b_dec[..])] {
                let mut want = vec![f32::NAN; rows * d];
                let mut got = vec![f32::NAN; rows * d];
                reference::sparse_decode(&rp, &idx, &val, &w_dec, bias, rows, n, d, &mut want);
                super::sparse_decode(&rp, &idx, &val, &w_dec, bias, rows, n, d, &mut got);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "sparse_decode ({rows}, {d}, {n}), {path}"
                );
            }
            let dy = random(&mut rng, rows * d);
            let mut want = vec![f32::NAN; idx.len()];
            let mut got = vec![f32::NAN; idx.len()];
            reference::sparse_dot(&rp, &idx, &dy, &w_dec, rows, n, d, &mut want);
            super::sparse_dot(&rp, &idx, &dy, &w_dec, rows, n, d, &mut got);
            assert_eq!(
                bits(&got),
                bits(&want),
                "sparse_dot ({rows}, {d}, {n}), {path}"
            );
        }
    });
}

/// The gathers' shared signature (the reference's and this module's alike).
type Gather = fn(&[u32], &[u32], &[u32], &[f32], &[f32], usize, usize, bool, &mut [f32]);

#[test]
fn gather_dw_enc_and_dw_dec_are_the_reference_bit_for_bit() {
    on_each_path(|path| {
        let gathers: [(&str, Gather, Gather); 2] = [
            (
                "gather_dw_enc",
                reference::gather_dw_enc,
                super::gather_dw_enc,
            ),
            (
                "gather_dw_dec",
                reference::gather_dw_dec,
                super::gather_dw_dec,
            ),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
        for (rows, d, n, k) in SHAPES {
            let (rp, idx, _) = code(&mut rng, rows, n, k);
            let cap = idx.len();
            let [lat_ptr, lat_row, lat_slot] = transpose(&rp, &idx, rows, n);
            let (lp, lr, ls) = (&lat_ptr[..], &lat_row[..], &lat_slot[..]);
            for accumulate in [false, true] {
                for (name, want_fn, got_fn) in gathers {
                    // coef: dval or val (cap); x: xc or dy (rows, d); the output (d n = n d).
                    let (coef, x) = (random(&mut rng, cap), random(&mut rng, rows * d));
                    // Some -0.0: a latent without entries keeps it when accumulating (adding
                    // its empty sum, +0.0, would not).
                    let mut start = random(&mut rng, n * d);
                    start.iter_mut().step_by(7).for_each(|v| *v = -0.0);
                    let (mut want, mut got) = (start.clone(), start);
                    want_fn(lp, lr, ls, &coef, &x, n, d, accumulate, &mut want);
                    got_fn(lp, lr, ls, &coef, &x, n, d, accumulate, &mut got);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{name} ({rows}, {d}, {n}), accumulate {accumulate}, {path}"
                    );
                }
            }
        }
    });
}

/// Prints the times of the reference's and this module's `what` into `out`, twice (the
/// first run warms up).
fn race<T: ?Sized>(what: &str, out: &mut T, reference: impl Fn(&mut T), fast: impl Fn(&mut T)) {
    for _ in 0..2 {
        let t = std::time::Instant::now();
        reference(out);
        let r = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        fast(out);
        let f = t.elapsed().as_secs_f64();
        println!(
            "{what}: reference {:.1} ms, cpu_sparse {:.1} ms",
            r * 1e3,
            f * 1e3
        );
    }
}

/// `cargo test --release --lib cpu_sparse::tests::timing -- --ignored --nocapture`:
/// W_dec's gradient gathered, the decode and the dot products of AuxK's codes at the
/// train bench's topk_dead shape (4096 rows, up to 256 codes each among a quarter of
/// 16384 latents, d 512).
#[test]
#[ignore]
fn timing() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (rows, d, n) = (4096, 512, 16384);
    let mut row_ptr = vec![0u32];
    let mut idx = Vec::new();
    for _ in 0..rows {
        let mut lat: Vec<u32> = (0..256)
            .map(|_| 4 * rng.random_range(0..n as u32 / 4))
            .collect();
        lat.sort_unstable();
        lat.dedup();
        idx.extend(lat);
        row_ptr.push(idx.len() as u32);
    }
    let cap = idx.len();
    let [lat_ptr, lat_row, lat_slot] = transpose(&row_ptr, &idx, rows, n);
    let (val, dy) = (random(&mut rng, cap), random(&mut rng, rows * d));
    let (lp, lr, ls) = (&lat_ptr, &lat_row, &lat_slot);
    race(
        &format!("gather_dw_dec, {cap} entries"),
        &mut vec![0.0f32; n * d][..],
        |out| reference::gather_dw_dec(lp, lr, ls, &val, &dy, n, d, false, out),
        |out| super::gather_dw_dec(lp, lr, ls, &val, &dy, n, d, false, out),
    );
    let w_dec = random(&mut rng, n * d);
    let (rp, idx) = (&row_ptr, &idx);
    race(
        &format!("sparse_decode, {cap} slots"),
        &mut vec![0.0f32; rows * d][..],
        |out| reference::sparse_decode(rp, idx, &val, &w_dec, None, rows, n, d, out),
        |out| super::sparse_decode(rp, idx, &val, &w_dec, None, rows, n, d, out),
    );
    race(
        &format!("sparse_dot, {cap} slots"),
        &mut vec![0.0f32; cap][..],
        |g| reference::sparse_dot(rp, idx, &dy, &w_dec, rows, n, d, g),
        |g| super::sparse_dot(rp, idx, &dy, &w_dec, rows, n, d, g),
    );
}
