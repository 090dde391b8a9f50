//! Sparse codes against shaders/sparse*.wgsl: build_transpose (compared exactly), the three gathers, decode and dot, run as the chain a training step records,
//! on TopK codes and on uneven CSR codes (empty rows, nnz < cap, garbage past nnz), with hot
//! latents that sit in every row; plus a run-to-run determinism check.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::{kernels, reference};

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance};

/// A CSR code on the host. `k` is Some for TopK codes (row_ptr[b] = b * k, written from
/// the host).
struct Code {
    rows: usize,
    n: usize,
    k: Option<usize>,
    row_ptr: Vec<u32>,
    idx: Vec<u32>,
}

impl Code {
    fn cap(&self) -> usize {
        self.idx.len()
    }
    fn nnz(&self) -> usize {
        self.row_ptr[self.rows] as usize
    }
}

/// `len` distinct latents of n in random order, the latents of `hot` among them.
fn distinct_row(rng: &mut ChaCha8Rng, n: usize, len: usize, hot: &[u32]) -> Vec<u32> {
    let mut row = hot.to_vec();
    while row.len() < len {
        let i = rng.random_range(0..n as u32);
        if !row.contains(&i) {
            row.push(i);
        }
    }
    row.shuffle(rng);
    row
}

/// TopK-shaped code: k distinct latents per row in random order, the `hot` latents in
/// every row.
fn topk_code(rng: &mut ChaCha8Rng, rows: usize, n: usize, k: usize, hot: usize) -> Code {
    assert!(hot <= k && k <= n);
    let hot: Vec<u32> = (0..hot as u32).collect();
    let mut idx = Vec::with_capacity(rows * k);
    for _ in 0..rows {
        idx.extend(distinct_row(rng, n, k, &hot));
    }
    Code {
        rows,
        n,
        k: Some(k),
        row_ptr: (0..=rows).map(|b| (b * k) as u32).collect(),
        idx,
    }
}

/// Uneven CSR: 0..=max entries per row, every third row empty, latent `n - 1` in every
/// non-empty row, distinct latents within a row in random order (build_transpose's
/// precondition, true of every code a step makes), and `spare` slots past nnz holding
/// valid-but-meaningless latents.
fn csr_code(rng: &mut ChaCha8Rng, rows: usize, n: usize, max: usize, spare: usize) -> Code {
    assert!(max <= n);
    let mut row_ptr = vec![0u32];
    let mut idx = Vec::new();
    for b in 0..rows {
        let len = if b % 3 == 1 {
            0
        } else {
            rng.random_range(1..=max)
        };
        let hot = [(n - 1) as u32];
        idx.extend(distinct_row(rng, n, len, &hot[..len.min(1)]));
        row_ptr.push(idx.len() as u32);
    }
    for _ in 0..spare {
        idx.push(rng.random_range(0..n as u32));
    }
    Code {
        rows,
        n,
        k: None,
        row_ptr,
        idx,
    }
}

/// Code values: normal, a tenth exactly 0 (ReLU), NaN past nnz (must never be read).
fn code_values(rng: &mut ChaCha8Rng, code: &Code) -> Vec<f32> {
    let mut v = randn(rng, code.cap(), 1.0);
    for (s, x) in v.iter_mut().enumerate() {
        if s >= code.nnz() {
            *x = f32::NAN;
        } else if rng.random_range(0..10) == 0 {
            *x = 0.0;
        }
    }
    v
}

/// Host inputs of one chain.
struct Inputs {
    code: Code,
    d: usize,
    val: Vec<f32>,
    dval: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
    dy: Vec<f32>,
    xc: Vec<f32>,
    /// Starting values of the accumulating gathers' outputs.
    acc_dw_dec: Vec<f32>,
    acc_dw_enc: Vec<f32>,
    acc_db_enc: Vec<f32>,
}

fn inputs(rng: &mut ChaCha8Rng, code: Code, d: usize) -> Inputs {
    let (rows, n) = (code.rows, code.n);
    Inputs {
        val: code_values(rng, &code),
        dval: code_values(rng, &code),
        w_dec: randn(rng, n * d, 1.0 / (d as f32).sqrt()),
        b_dec: randn(rng, d, 1.0),
        dy: randn(rng, rows * d, 1.0),
        xc: randn(rng, rows * d, 1.0),
        acc_dw_dec: randn(rng, n * d, 1.0),
        acc_dw_enc: randn(rng, d * n, 1.0),
        acc_db_enc: randn(rng, n, 1.0),
        code,
        d,
    }
}

/// Every output of the chain, read back.
struct Outputs {
    row_ptr: Vec<u32>,
    lat_ptr: Vec<u32>,
    lat_row: Vec<u32>,
    lat_slot: Vec<u32>,
    x_hat: Vec<f32>,
    x_hat_nob: Vec<f32>,
    g: Vec<f32>,
    dw_dec: Vec<f32>,
    dw_enc: Vec<f32>,
    db_enc: Vec<f32>,
    /// The gathers again with `accumulate`, onto the inputs' acc_* values.
    acc_dw_dec: Vec<f32>,
    acc_dw_enc: Vec<f32>,
    acc_db_enc: Vec<f32>,
}

impl Outputs {
    /// Bitwise comparison (f32 by bits, so NaN == NaN).
    fn same_bits(&self, o: &Outputs) -> Vec<&'static str> {
        let f = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        let mut diff = Vec::new();
        let u = [
            ("row_ptr", &self.row_ptr, &o.row_ptr),
            ("lat_ptr", &self.lat_ptr, &o.lat_ptr),
            ("lat_row", &self.lat_row, &o.lat_row),
            ("lat_slot", &self.lat_slot, &o.lat_slot),
        ];
        for (name, a, b) in u {
            if a != b {
                diff.push(name);
            }
        }
        let fl = [
            ("x_hat", &self.x_hat, &o.x_hat),
            ("x_hat (no bias)", &self.x_hat_nob, &o.x_hat_nob),
            ("g", &self.g, &o.g),
            ("dw_dec", &self.dw_dec, &o.dw_dec),
            ("dw_enc", &self.dw_enc, &o.dw_enc),
            ("db_enc", &self.db_enc, &o.db_enc),
            ("dw_dec (accumulated)", &self.acc_dw_dec, &o.acc_dw_dec),
            ("dw_enc (accumulated)", &self.acc_dw_enc, &o.acc_dw_enc),
            ("db_enc (accumulated)", &self.acc_db_enc, &o.acc_db_enc),
        ];
        for (name, a, b) in fl {
            if !f(a, b) {
                diff.push(name);
            }
        }
        diff
    }
}

/// Device buffers of one chain; outputs are poisoned by `run` before every run.
struct Device {
    row_ptr: GpuTensor,
    idx: GpuTensor,
    val: GpuTensor,
    dval: GpuTensor,
    w_dec: GpuTensor,
    b_dec: GpuTensor,
    dy: GpuTensor,
    xc: GpuTensor,
    lat_ptr: GpuTensor,
    lat_row: GpuTensor,
    lat_slot: GpuTensor,
    /// build_transpose's scratch.
    marks: GpuTensor,
    x_hat: GpuTensor,
    x_hat_nob: GpuTensor,
    g: GpuTensor,
    dw_dec: GpuTensor,
    dw_enc: GpuTensor,
    db_enc: GpuTensor,
    acc_dw_dec: GpuTensor,
    acc_dw_enc: GpuTensor,
    acc_db_enc: GpuTensor,
}

fn upload(gpu: &Gpu, h: &Inputs) -> saeforge::Result<Device> {
    let c = &h.code;
    let (rows, n, d, cap) = (c.rows, c.n, h.d, c.cap());
    Ok(Device {
        row_ptr: gpu.upload_u32("row_ptr", &[rows + 1], &c.row_ptr)?,
        idx: gpu.upload_u32("idx", &[cap], &c.idx)?,
        val: gpu.upload("val", &[cap], &h.val)?,
        dval: gpu.upload("dval", &[cap], &h.dval)?,
        w_dec: gpu.upload("w_dec", &[n, d], &h.w_dec)?,
        b_dec: gpu.upload("b_dec", &[d], &h.b_dec)?,
        dy: gpu.upload("dy", &[rows, d], &h.dy)?,
        xc: gpu.upload("xc", &[rows, d], &h.xc)?,
        lat_ptr: gpu.zeros_u32("lat_ptr", &[n + 1])?,
        lat_row: gpu.zeros_u32("lat_row", &[cap])?,
        lat_slot: gpu.zeros_u32("lat_slot", &[cap])?,
        marks: gpu.zeros_u32(
            "marks",
            &[kernels::sparse::transpose_marks_len(rows, n, cap)],
        )?,
        x_hat: gpu.zeros("x_hat", &[rows, d])?,
        x_hat_nob: gpu.zeros("x_hat_nob", &[rows, d])?,
        g: gpu.zeros("g", &[cap])?,
        dw_dec: gpu.zeros("dw_dec", &[n, d])?,
        dw_enc: gpu.zeros("dw_enc", &[d, n])?,
        db_enc: gpu.zeros("db_enc", &[n])?,
        acc_dw_dec: gpu.zeros("acc dw_dec", &[n, d])?,
        acc_dw_enc: gpu.zeros("acc dw_enc", &[d, n])?,
        acc_db_enc: gpu.zeros("acc db_enc", &[n])?,
    })
}

fn poison_u32(gpu: &Gpu, t: &GpuTensor) -> saeforge::Result<()> {
    gpu.write(t, &vec![u32::MAX; t.len()])
}

/// Poison every output, record the whole chain into one encoder, submit, read everything
/// back.
fn run(gpu: &Gpu, h: &Inputs, t: &Device) -> saeforge::Result<Outputs> {
    let c = &h.code;
    let (rows, n, d) = (c.rows, c.n, h.d);
    if let Some(k) = c.k {
        // TopK codes: k entries a row, the row pointers written from the host.
        let mut row_ptr = vec![0u32; rows + 1];
        reference::sparse::row_ptr_fixed(rows, k, &mut row_ptr);
        gpu.write(&t.row_ptr, &row_ptr)?;
    }
    for u in [&t.lat_ptr, &t.lat_row, &t.lat_slot, &t.marks] {
        poison_u32(gpu, u)?;
    }
    for f in [
        &t.x_hat,
        &t.x_hat_nob,
        &t.g,
        &t.dw_dec,
        &t.dw_enc,
        &t.db_enc,
    ] {
        gpu.fill(f, f32::NAN);
    }
    gpu.write(&t.acc_dw_dec, &h.acc_dw_dec)?;
    gpu.write(&t.acc_dw_enc, &h.acc_dw_enc)?;
    gpu.write(&t.acc_db_enc, &h.acc_db_enc)?;
    let mut enc = gpu.encoder();
    let e = &mut enc;
    use kernels::sparse as ks;
    ks::build_transpose(
        gpu,
        e,
        &t.row_ptr,
        &t.idx,
        rows,
        n,
        &t.marks,
        &t.lat_ptr,
        &t.lat_row,
        &t.lat_slot,
    )?;
    ks::sparse_decode(
        gpu,
        e,
        &t.row_ptr,
        &t.idx,
        &t.val,
        &t.w_dec,
        Some(&t.b_dec),
        rows,
        n,
        d,
        &t.x_hat,
    )?;
    ks::sparse_decode(
        gpu,
        e,
        &t.row_ptr,
        &t.idx,
        &t.val,
        &t.w_dec,
        None,
        rows,
        n,
        d,
        &t.x_hat_nob,
    )?;
    ks::sparse_dot(
        gpu, e, &t.row_ptr, &t.idx, &t.dy, &t.w_dec, rows, n, d, &t.g,
    )?;
    ks::gather_dw_dec(
        gpu,
        e,
        &t.lat_ptr,
        &t.lat_row,
        &t.lat_slot,
        &t.val,
        &t.dy,
        n,
        d,
        false,
        &t.dw_dec,
    )?;
    ks::gather_dw_enc(
        gpu,
        e,
        &t.lat_ptr,
        &t.lat_row,
        &t.lat_slot,
        &t.dval,
        &t.xc,
        n,
        d,
        false,
        &t.dw_enc,
    )?;
    ks::gather_db_enc(
        gpu,
        e,
        &t.lat_ptr,
        &t.lat_slot,
        &t.dval,
        n,
        false,
        &t.db_enc,
    )?;
    #[rustfmt::skip]
    ks::gather_dw_dec(gpu, e, &t.lat_ptr, &t.lat_row, &t.lat_slot, &t.val, &t.dy, n, d, true, &t.acc_dw_dec)?;
    #[rustfmt::skip]
    ks::gather_dw_enc(gpu, e, &t.lat_ptr, &t.lat_row, &t.lat_slot, &t.dval, &t.xc, n, d, true, &t.acc_dw_enc)?;
    ks::gather_db_enc(
        gpu,
        e,
        &t.lat_ptr,
        &t.lat_slot,
        &t.dval,
        n,
        true,
        &t.acc_db_enc,
    )?;
    gpu.submit(enc);
    Ok(Outputs {
        row_ptr: gpu.read_u32(&t.row_ptr)?,
        lat_ptr: gpu.read_u32(&t.lat_ptr)?,
        lat_row: gpu.read_u32(&t.lat_row)?,
        lat_slot: gpu.read_u32(&t.lat_slot)?,
        x_hat: gpu.read_f32(&t.x_hat)?,
        x_hat_nob: gpu.read_f32(&t.x_hat_nob)?,
        g: gpu.read_f32(&t.g)?,
        dw_dec: gpu.read_f32(&t.dw_dec)?,
        dw_enc: gpu.read_f32(&t.dw_enc)?,
        db_enc: gpu.read_f32(&t.db_enc)?,
        acc_dw_dec: gpu.read_f32(&t.acc_dw_dec)?,
        acc_dw_enc: gpu.read_f32(&t.acc_dw_enc)?,
        acc_db_enc: gpu.read_f32(&t.acc_db_enc)?,
    })
}

/// The same chain on the CPU twins.
fn run_reference(h: &Inputs) -> Outputs {
    use reference::sparse as rs;
    let c = &h.code;
    let (rows, n, d, cap) = (c.rows, c.n, h.d, c.cap());
    let mut row_ptr = c.row_ptr.clone();
    if let Some(k) = c.k {
        rs::row_ptr_fixed(rows, k, &mut row_ptr);
    }
    let mut o = Outputs {
        row_ptr,
        lat_ptr: vec![0; n + 1],
        lat_row: vec![0; cap],
        lat_slot: vec![0; cap],
        x_hat: vec![0.0; rows * d],
        x_hat_nob: vec![0.0; rows * d],
        g: vec![0.0; cap],
        dw_dec: vec![0.0; n * d],
        dw_enc: vec![0.0; d * n],
        db_enc: vec![0.0; n],
        acc_dw_dec: h.acc_dw_dec.clone(),
        acc_dw_enc: h.acc_dw_enc.clone(),
        acc_db_enc: h.acc_db_enc.clone(),
    };
    rs::build_transpose(
        &o.row_ptr,
        &c.idx,
        rows,
        n,
        &mut o.lat_ptr,
        &mut o.lat_row,
        &mut o.lat_slot,
    );
    #[rustfmt::skip]
    rs::sparse_decode(&o.row_ptr, &c.idx, &h.val, &h.w_dec, Some(&h.b_dec), rows, n, d, &mut o.x_hat);
    #[rustfmt::skip]
    rs::sparse_decode(&o.row_ptr, &c.idx, &h.val, &h.w_dec, None, rows, n, d, &mut o.x_hat_nob);
    rs::sparse_dot(&o.row_ptr, &c.idx, &h.dy, &h.w_dec, rows, n, d, &mut o.g);
    #[rustfmt::skip]
    rs::gather_dw_dec(&o.lat_ptr, &o.lat_row, &o.lat_slot, &h.val, &h.dy, n, d, false, &mut o.dw_dec);
    #[rustfmt::skip]
    rs::gather_dw_enc(&o.lat_ptr, &o.lat_row, &o.lat_slot, &h.dval, &h.xc, n, d, false, &mut o.dw_enc);
    rs::gather_db_enc(&o.lat_ptr, &o.lat_slot, &h.dval, n, false, &mut o.db_enc);
    #[rustfmt::skip]
    rs::gather_dw_dec(&o.lat_ptr, &o.lat_row, &o.lat_slot, &h.val, &h.dy, n, d, true, &mut o.acc_dw_dec);
    #[rustfmt::skip]
    rs::gather_dw_enc(&o.lat_ptr, &o.lat_row, &o.lat_slot, &h.dval, &h.xc, n, d, true, &mut o.acc_dw_enc);
    rs::gather_db_enc(&o.lat_ptr, &o.lat_slot, &h.dval, n, true, &mut o.acc_db_enc);
    o
}

fn compare(gpu: &Outputs, cpu: &Outputs) -> Result<(), Failed> {
    assert_same("row_ptr", &gpu.row_ptr, &cpu.row_ptr)?;
    assert_same("build_transpose lat_ptr", &gpu.lat_ptr, &cpu.lat_ptr)?;
    assert_same("build_transpose lat_slot", &gpu.lat_slot, &cpu.lat_slot)?;
    assert_same("build_transpose lat_row", &gpu.lat_row, &cpu.lat_row)?;
    let t = tolerance::SPARSE_DECODE;
    assert_close("sparse_decode x_hat", &gpu.x_hat, &cpu.x_hat, t)?;
    assert_close(
        "sparse_decode x_hat (no b_dec)",
        &gpu.x_hat_nob,
        &cpu.x_hat_nob,
        t,
    )?;
    assert_close("sparse_dot g", &gpu.g, &cpu.g, tolerance::SPARSE_DOT)?;
    let t = tolerance::SPARSE_GATHER;
    assert_close("gather_dw_dec dw_dec", &gpu.dw_dec, &cpu.dw_dec, t)?;
    assert_close("gather_dw_enc dw_enc", &gpu.dw_enc, &cpu.dw_enc, t)?;
    assert_close("gather_db_enc db_enc", &gpu.db_enc, &cpu.db_enc, t)?;
    let a = "(accumulate)";
    assert_close(
        &format!("gather_dw_dec {a}"),
        &gpu.acc_dw_dec,
        &cpu.acc_dw_dec,
        t,
    )?;
    assert_close(
        &format!("gather_dw_enc {a}"),
        &gpu.acc_dw_enc,
        &cpu.acc_dw_enc,
        t,
    )?;
    assert_close(
        &format!("gather_db_enc {a}"),
        &gpu.acc_db_enc,
        &cpu.acc_db_enc,
        t,
    )
}

fn chain_case(gpu: &Gpu, h: Inputs) -> Result<(), Failed> {
    let t = upload(gpu, &h).map_err(fail)?;
    let got = run(gpu, &h, &t).map_err(fail)?;
    compare(&got, &run_reference(&h))
}

/// How a case's code is made.
#[derive(Clone, Copy)]
enum Shape {
    /// rows, n, d, k, hot latents in every row
    TopK(usize, usize, usize, usize, usize),
    /// rows, n, d, max entries per row, spare slots past nnz
    Csr(usize, usize, usize, usize, usize),
}

impl Shape {
    fn name(&self) -> String {
        match *self {
            Shape::TopK(r, n, d, k, hot) => format!("topk/{r}x{n}x{d}/k{k}/hot{hot}"),
            Shape::Csr(r, n, d, m, sp) => format!("csr/{r}x{n}x{d}/max{m}/spare{sp}"),
        }
    }
    fn inputs(&self, rng: &mut ChaCha8Rng) -> Inputs {
        match *self {
            Shape::TopK(r, n, d, k, hot) => {
                let c = topk_code(rng, r, n, k, hot);
                inputs(rng, c, d)
            }
            Shape::Csr(r, n, d, m, sp) => {
                let c = csr_code(rng, r, n, m, sp);
                inputs(rng, c, d)
            }
        }
    }
}

/// Shapes not multiples of the 64-wide workgroups, the 256-lane scan or the 4-wide vec4s
/// (d 45, 13, 1 take the scalar entry points; 44, 20 the vec4 ones; 64, 128, 512 the
/// texture ones on software adapters, the vec4 ones elsewhere), tiny ones where every latent
/// is in every row, and the production TopK step.
const SHAPES: &[Shape] = &[
    Shape::TopK(3, 5, 1, 5, 0),
    Shape::TopK(37, 1000, 45, 7, 1),
    Shape::TopK(37, 1000, 44, 7, 2),
    Shape::TopK(70, 300, 6, 9, 3),
    Shape::Csr(29, 300, 13, 12, 17),
    Shape::Csr(41, 777, 20, 30, 5),
    Shape::Csr(5, 3, 8, 3, 0),
    // d % 64 == 0: the texture entry points on software adapters.
    Shape::TopK(37, 1000, 64, 7, 1),
    Shape::Csr(41, 777, 128, 30, 5),
    // Capacity far past nnz (batchtopk's and relu's chunks: rows x d_sae / 16 slots for
    // ~k per row), so the slot kernels' busy workgroups are spread over a mostly idle grid.
    Shape::Csr(200, 4096, 64, 8, 20000),
    Shape::Csr(200, 4096, 20, 8, 20000),
    // Production: rows 512, d_sae 16384, d_in 512, k 32; latents 0 and 1 in every row.
    Shape::TopK(512, 16384, 512, 32, 2),
];

pub fn trials() -> Vec<Trial> {
    let mut t: Vec<Trial> = SHAPES
        .iter()
        .map(|&s| {
            gpu_test(format!("sparse::chain/{}", s.name()), move |gpu, rng| {
                chain_case(gpu, s.inputs(rng))
            })
        })
        .collect();
    // Determinism: hot latents make the mark pass's atomics contend, so any timing
    // dependence would show; the chain must come out bit-identical twice.
    let det = Shape::TopK(512, 4096, 128, 32, 8);
    t.push(gpu_test(
        format!("sparse::deterministic/{}", det.name()),
        move |gpu, rng| {
            let h = det.inputs(rng);
            let dev = upload(gpu, &h).map_err(fail)?;
            let a = run(gpu, &h, &dev).map_err(fail)?;
            let b = run(gpu, &h, &dev).map_err(fail)?;
            let diff = a.same_bits(&b);
            if !diff.is_empty() {
                return Err(format!("two runs differ in {}", diff.join(", ")).into());
            }
            compare(&a, &run_reference(&h))
        },
    ));
    t.extend(activation_trials());
    t
}

/// The ReLU / JumpReLU backward kernels of a sparse step on an uneven CSR code:
/// sparse_l1_backward, sparse_jumprelu_backward and gather_jumprelu_threshold (over the
/// device's transpose). Pre-activations stay >= 1e-4 away from theta and the window edges
/// (WGSL's exp may differ from Rust's in the last ulp).
fn activation_backward_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    (rows, n, max, spare): (usize, usize, usize, usize),
) -> Result<(), Failed> {
    let m = |e: saeforge::Error| fail(e);
    let c = csr_code(rng, rows, n, max, spare);
    let cap = c.cap();
    let nnz = c.nnz();
    let eps = 0.05f32;
    let log_theta: Vec<f32> = (0..n).map(|_| rng.random_range(0.2f32..1.0).ln()).collect();
    let mut pre = vec![0.0f32; cap];
    for s in 0..nnz {
        let theta = log_theta[c.idx[s] as usize].exp();
        // Half in the window around theta, half above it.
        let mut v = theta + rng.random_range(-0.03f32..0.3);
        for edge in [theta, theta - 0.5 * eps, theta + 0.5 * eps] {
            let guard = tolerance::JUMPRELU_GUARD_ABS;
            if (v - edge).abs() < guard {
                v = edge + 2.0 * guard;
            }
        }
        pre[s] = v;
    }
    let val: Vec<f32> = code_values(rng, &c);
    let g0 = randn(rng, cap, 1.0);
    let norms: Vec<f32> = (0..n).map(|_| rng.random_range(0.1f32..1.0)).collect();
    let scale = 0.37f32;
    let l0_scale = 0.02f32;

    let rp = gpu
        .upload_u32("row_ptr", &[rows + 1], &c.row_ptr)
        .map_err(m)?;
    let idx = gpu.upload_u32("idx", &[cap], &c.idx).map_err(m)?;
    let vd = gpu.upload("val", &[cap], &val).map_err(m)?;
    let pd = gpu.upload("pre", &[cap], &pre).map_err(m)?;
    let gd = gpu.upload("g", &[cap], &g0).map_err(m)?;
    let g2 = gpu.upload("g (l1)", &[cap], &g0).map_err(m)?;
    let nd = gpu.upload("norms", &[n], &norms).map_err(m)?;
    let ld = gpu.upload("log_theta", &[n], &log_theta).map_err(m)?;
    let dval = gpu.zeros("dval", &[cap]).map_err(m)?;
    let dlt = gpu.zeros("dlog_theta", &[n]).map_err(m)?;
    let lat_ptr = gpu.zeros_u32("lat_ptr", &[n + 1]).map_err(m)?;
    let lat_row = gpu.zeros_u32("lat_row", &[cap]).map_err(m)?;
    let lat_slot = gpu.zeros_u32("lat_slot", &[cap]).map_err(m)?;
    let marks_len = kernels::sparse::transpose_marks_len(rows, n, cap);
    let marks = gpu.zeros_u32("marks", &[marks_len]).map_err(m)?;
    gpu.fill(&dval, f32::NAN);
    gpu.fill(&dlt, f32::NAN);
    let mut enc = gpu.encoder();
    let e = &mut enc;
    use kernels::sparse as ks;
    ks::sparse_l1_backward(gpu, e, &rp, &idx, &vd, rows, n, &nd, scale, &g2).map_err(m)?;
    ks::sparse_jumprelu_backward(gpu, e, &rp, &idx, &pd, &gd, rows, n, &ld, &dval).map_err(m)?;
    #[rustfmt::skip]
    ks::build_transpose(gpu, e, &rp, &idx, rows, n, &marks, &lat_ptr, &lat_row, &lat_slot).map_err(m)?;
    #[rustfmt::skip]
    ks::gather_jumprelu_threshold(gpu, e, &lat_ptr, &lat_slot, &pd, &gd, n, &ld, eps, l0_scale, &dlt).map_err(m)?;
    gpu.submit(enc);

    use reference::sparse as rs;
    let mut c_g2 = g0.clone();
    rs::sparse_l1_backward(&c.row_ptr, &c.idx, &val, rows, n, &norms, scale, &mut c_g2);
    let gg2 = gpu.read_f32(&g2).map_err(m)?;
    assert_close(
        "sparse_l1_backward",
        &gg2,
        &c_g2,
        tolerance::ELEMENTWISE_MULADD,
    )?;
    let mut c_dval = vec![0.0f32; cap];
    #[rustfmt::skip]
    rs::sparse_jumprelu_backward(&c.row_ptr, &c.idx, &pre, &g0, rows, n, &log_theta, &mut c_dval);
    let gdv = gpu.read_f32(&dval).map_err(m)?;
    assert_close("sparse_jumprelu_backward", &gdv, &c_dval, tolerance::EXACT)?;
    let (mut lp, mut lr, mut ls) = (vec![0u32; n + 1], vec![0u32; cap], vec![0u32; cap]);
    rs::build_transpose(&c.row_ptr, &c.idx, rows, n, &mut lp, &mut lr, &mut ls);
    let mut c_dlt = vec![0.0f32; n];
    #[rustfmt::skip]
    rs::gather_jumprelu_threshold(&lp, &ls, &pre, &g0, n, &log_theta, eps, l0_scale, &mut c_dlt);
    let gdl = gpu.read_f32(&dlt).map_err(m)?;
    assert_close(
        "gather_jumprelu_threshold",
        &gdl,
        &c_dlt,
        tolerance::JUMPRELU_DLOG_THETA,
    )?;
    if !c_dlt.iter().any(|&v| v != 0.0) || !c_dval.contains(&0.0) {
        return Err("inputs missed the window or the threshold".into());
    }
    Ok(())
}

pub fn activation_trials() -> Vec<Trial> {
    [
        (29, 300, 12, 17),
        (41, 777, 30, 5),
        (200, 4096, 8, 20000),
        (512, 16384, 64, 100),
    ]
    .into_iter()
    .map(|c| {
        gpu_test(
            format!("sparse::activation_backward/{}x{}/max{}", c.0, c.1, c.2),
            move |gpu, rng| activation_backward_case(gpu, rng, c),
        )
    })
    .collect()
}
