//! The CPU engine's fast GEMM (`saeforge::blas`, the `gemm` crate) against the plain
//! reference, for every transpose combination, alpha / beta / bias, at shapes that are not
//! multiples of any micro-kernel size, two large enough to take the threaded paths (many
//! rows; few rows, split by columns), and the degenerate k = 0. C is poisoned with NaN when
//! beta is 0 (it must not be read).

use libtest_mimic::Trial;
use saeforge::blas;
use saeforge::reference::gemm::{GemmSpec, gemm};

use crate::common::{assert_close, cpu_test, randn, tolerance};

pub fn trials() -> Vec<Trial> {
    let shapes = [
        (1, 1, 1),
        (37, 45, 29),
        (130, 70, 257),
        (1, 512, 300),
        (256, 1024, 128), // threaded (m n k >= 2^18)
        (45, 1001, 70),   // threaded, few rows: the columns split between threads
        (5, 7, 0),
    ];
    let mut out = Vec::new();
    for (m, n, k) in shapes {
        for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
            for (alpha, beta, bias) in [(1.0, 0.0, true), (0.5, 1.0, false), (-1.5, 0.25, true)] {
                let spec = GemmSpec {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    alpha,
                    beta,
                };
                let name = format!(
                    "blas::gemm/{}/{m}x{n}x{k}/alpha{alpha}/beta{beta}/bias{bias}",
                    spec.op_name()
                );
                out.push(cpu_test(name, move |rng| {
                    let a = randn(rng, m * k, 1.0);
                    let b = randn(rng, k * n, 1.0);
                    let bias = bias.then(|| randn(rng, n, 1.0));
                    let c0 = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        randn(rng, m * n, 1.0)
                    };
                    let mut want = c0.clone();
                    gemm(&spec, &a, &b, bias.as_deref(), &mut want);
                    let mut got = c0;
                    blas::gemm(&spec, &a, &b, bias.as_deref(), &mut got);
                    assert_close("blas::gemm C", &got, &want, tolerance::gemm(k))
                }));
            }
        }
    }
    out
}
