//! The encoder half of an SAE as one sequence of stages on each engine, for training and
//! inference alike. The training step's `encode` and TopK `codes` stages (`cpu.rs`,
//! `gpu.rs`) and the inference [`Encoder`](super::infer::Encoder) (behind `encode`,
//! `steer`, `eval`, the demo and training's held-out evaluation) call these same functions,
//! so a dictionary codes a row the same way while it trains and after:
//!
//!   encode   xc = x - b_dec (sub_row; a transcoder: xc is x, its b_dec is in the output
//!            space); pre = xc W_enc + b_enc, with the block maxima the code stages start
//!            from (on the GPU in the GEMM's epilogue: gemm_block_max; on the CPU in the
//!            bias's pass: add_bias_block_max)
//!   topk     the k largest positive pre of each row among the eligible latents (all, or
//!            AuxK's dead list), as CSR with latents ascending (from the encode's block
//!            maxima: topk_codes_from_bmax on both engines)
//!   activation  ReLU / JumpReLU: the kept entries of each row as CSR (activation_codes;
//!            on the CPU `activation_cpu`, on the GPU activation_codes_from_bmax), kept as
//!            codes while they fit `engine::code_capacity`, else a dense z: the rule of the
//!            training step and of the `Encoder`, on both engines
//!
//! The CPU side runs the CPU engine's products (`crate::blas`) and selection
//! (`crate::cpu_codes`), each tested against `crate::reference`.

use crate::Result;
pub use crate::cpu_codes::Eligible;
use crate::cpu_codes::{topk_codes, topk_codes_from_bmax};
use crate::gpu::{Gpu, GpuTensor};
use crate::reference::gemm::GemmSpec;

/// An encoder's weights on one engine (`[f32]` on the CPU, `GpuTensor` on the GPU):
/// W_enc (d, n), b_enc (n), and an SAE's b_dec (d), which a transcoder has not (None: its
/// input goes to the encoder as it is).
pub struct EncoderWeights<'a, T: ?Sized> {
    pub w_enc: &'a T,
    pub b_enc: &'a T,
    pub b_dec: Option<&'a T>,
}

/// Sparse codes of a batch on the CPU (CSR over rows): `val` = relu(`pre_val`).
pub struct Codes {
    pub row_ptr: Vec<u32>,
    pub idx: Vec<u32>,
    /// Selected pre-activations (before ReLU).
    pub pre_val: Vec<f32>,
    /// After ReLU.
    pub val: Vec<f32>,
}

impl From<crate::cpu_codes::CsrCodes> for Codes {
    fn from((row_ptr, idx, val, pre_val): crate::cpu_codes::CsrCodes) -> Codes {
        Codes {
            row_ptr,
            idx,
            pre_val,
            val,
        }
    }
}

/// encode on the CPU: xc and pre of `rows` rows of x, with n latents, each written whole
/// (what the buffers held before is never read); whether every pre-activation is finite
/// (checked in the bias's pass: a top-k has no order on NaN).
/// x, xc: (rows, d) -> pre: (rows, n), bmax: (rows, ceil(n / cpu_codes::BLOCK)) the
/// maxima of pre's blocks (the top-k selections' bounds), all finite
pub fn encode_cpu(
    w: &EncoderWeights<[f32]>,
    x: &[f32],
    rows: usize,
    d: usize,
    xc: &mut [f32],
    pre: &mut [f32],
    bmax: &mut [f32],
) -> bool {
    match w.b_dec {
        Some(b_dec) => crate::reference::reduce::sub_row(x, b_dec, rows, d, xc),
        None => xc.copy_from_slice(x),
    }
    let n = w.b_enc.len();
    if rows == 0 || n == 0 {
        return true;
    }
    crate::blas::gemm(&GemmSpec::nn(rows, n, d), xc, w.w_enc, None, pre);
    crate::blas::add_bias_block_max(pre, w.b_enc, crate::cpu_codes::BLOCK, bmax)
}

/// topk on the CPU: the k largest positive entries of each row of `pre` (rows, n) among
/// the eligible latents (all, from the encode's block maxima, or AuxK's dead list),
/// latents ascending.
pub fn topk_cpu(pre: &[f32], rows: usize, n: usize, k: usize, eligible: Eligible) -> Codes {
    let mut row_ptr = vec![0u32; rows + 1];
    let mut idx = vec![0u32; rows * k];
    let mut val = vec![0.0f32; rows * k];
    let (rp, i, v) = (&mut row_ptr, &mut idx, &mut val);
    match eligible {
        Eligible::All { bmax: Some(b) } => topk_codes_from_bmax(pre, rows, n, k, b, rp, i, v),
        Eligible::All { bmax: None } => topk_codes(pre, rows, n, k, None, rp, i, v),
        Eligible::Listed(l) => topk_codes(pre, rows, n, k, Some((l, &[l.len() as u32])), rp, i, v),
    }
    Codes {
        row_ptr,
        idx,
        pre_val: val.clone(),
        val,
    }
}

/// activation on the CPU (ReLU, or JumpReLU with `jump` = (log_threshold, window)): the
/// kept entries of `pre` (rows, n) as CSR codes, latents ascending (`activation_codes`, the
/// CPU engine's twin of the reference's).
/// JumpReLU keeps pre > theta, and also the window |pre - theta| <= window / 2 below it at
/// value 0, where training's threshold gradient lives (inference passes a window of 0).
pub fn activation_cpu(pre: &[f32], rows: usize, n: usize, jump: Option<(&[f32], f32)>) -> Codes {
    crate::cpu_codes::activation_codes(pre, rows, n, jump).into()
}

/// [`activation_cpu`], or None where the batch keeps more than `cap` entries (training's
/// dense path, past `code_capacity`).
pub fn activation_cpu_within(
    pre: &[f32],
    rows: usize,
    n: usize,
    jump: Option<(&[f32], f32)>,
    cap: usize,
) -> Option<Codes> {
    crate::cpu_codes::activation_codes_within(pre, rows, n, jump, cap).map(Codes::from)
}

/// xc = x - b_dec: the encoder's input, centred (the first stage of [`encode_gpu`]).
/// x: (rows, d), b_dec: (d) -> xc: (rows, d)
pub fn center_gpu(
    g: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    b_dec: &GpuTensor,
    rows: usize,
    xc: &GpuTensor,
) -> Result<()> {
    let d = b_dec.len();
    crate::kernels::reduce::sub_row(g, enc, x, b_dec, rows, d, xc)
}

/// encode on the GPU: xc = x - b_dec into `xc` (a transcoder: pass x as `xc`), then pre =
/// xc W_enc + b_enc into `pre`; with `block_max` = (bmax, threshold offsets) also the
/// block maxima the code stages start from (`gemm_block_max`).
/// x, xc: (rows, d) -> pre: (rows, n), bmax: (rows, blocks(n)) u32
#[allow(clippy::too_many_arguments)]
pub fn encode_gpu(
    g: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    w: &EncoderWeights<GpuTensor>,
    x: &GpuTensor,
    rows: usize,
    xc: &GpuTensor,
    pre: &GpuTensor,
    block_max: Option<(&GpuTensor, Option<&GpuTensor>)>,
) -> Result<()> {
    use crate::kernels::gemm::{gemm, gemm_block_max};
    let (d, n) = (w.w_enc.shape[0], w.w_enc.shape[1]);
    if let Some(b_dec) = w.b_dec {
        center_gpu(g, enc, x, b_dec, rows, xc)?;
    }
    let spec = GemmSpec::nn(rows, n, d);
    match block_max {
        #[rustfmt::skip]
        Some((bmax, off)) => gemm_block_max(g, enc, &spec, xc, w.w_enc, Some(w.b_enc), pre, off, bmax),
        None => gemm(g, enc, &spec, xc, w.w_enc, Some(w.b_enc), pre),
    }
}
