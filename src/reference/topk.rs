//! Batch top-k (BatchTopK SAEs), the CPU twin of shaders/topk.wgsl (+ topk_write.wgsl).
//! (The per-row top-k of TopK SAEs is `reference::codes::topk_codes`, the twin of
//! `codes::selection::topk_codes`.)
//!
//! Order: values compare as f32 (so -0.0 == +0.0; NaN is never an input, the trainer checks),
//! and among equal values the lower index wins. For `batchtopk` the index is the flat index
//! `row * n + latent`, so an equal value in an earlier row wins.

use std::cmp::Ordering;

/// Compare two values for "a comes before b" in descending order. Panics on NaN.
fn desc(a: f32, b: f32) -> Ordering {
    b.partial_cmp(&a).expect("topk: NaN in the input")
}

/// The k_total largest entries of the whole matrix (ties to the lower flat index
/// row * n + latent), as CSR: row_ptr[b]..row_ptr[b + 1] are row b's entries, in ascending
/// latent order, with latent indices in idx and values in val. threshold[0] is the smallest
/// selected value (a zero as +0.0). Needs 1 <= k_total <= rows * n.
/// x: (rows, n) -> row_ptr: (rows + 1), idx: (k_total), val: (k_total), threshold: (1)
#[allow(clippy::too_many_arguments)]
pub fn batchtopk(
    x: &[f32],
    rows: usize,
    n: usize,
    k_total: usize,
    row_ptr: &mut [u32],
    idx: &mut [u32],
    val: &mut [f32],
    threshold: &mut [f32],
) {
    assert_eq!(x.len(), rows * n, "batchtopk: x");
    assert!(
        k_total >= 1 && k_total <= rows * n,
        "batchtopk: k_total {k_total} not in 1..={}",
        rows * n
    );
    assert_eq!(row_ptr.len(), rows + 1, "batchtopk: row_ptr");
    assert_eq!(idx.len(), k_total, "batchtopk: idx");
    assert_eq!(val.len(), k_total, "batchtopk: val");
    assert_eq!(threshold.len(), 1, "batchtopk: threshold");
    // t: the k_total-th largest value. Everything above t is selected; of the entries equal
    // to t, the first (k_total - #above) in flat order.
    let mut sorted = x.to_vec();
    let t = *sorted
        .select_nth_unstable_by(k_total - 1, |a, b| desc(*a, *b))
        .1;
    let above = x.iter().filter(|&&v| v > t).count();
    let mut ties_left = k_total - above;
    let mut out = 0usize;
    row_ptr[0] = 0;
    for b in 0..rows {
        for i in 0..n {
            let v = x[b * n + i];
            let take = if v > t {
                true
            } else if v == t && ties_left > 0 {
                ties_left -= 1;
                true
            } else {
                false
            };
            if take {
                idx[out] = i as u32;
                val[out] = v;
                out += 1;
            }
        }
        row_ptr[b + 1] = out as u32;
    }
    assert_eq!(out, k_total);
    threshold[0] = t + 0.0;
}
