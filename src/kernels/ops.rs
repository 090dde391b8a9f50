//! Launchers for shaders/ops.wgsl: small operations of the training step.

use crate::gpu::{Gate, Gpu, GpuTensor, Shader};
use crate::{Error, Result};

use super::decl::{Entry, Grid, Slot, Uniform, Wg, rf, ru, wf, wu};

pub static SHADER: Shader = crate::shader!("ops");

const WG: usize = 256;

crate::uniform! {
    struct Params {
        len: u32, first: u32, decay: f32, index: u32,
        threshold: u32, _pad: [u32; 3],
    }
}

const fn op(name: &'static str, binds: &'static [Slot], wg: u32, grid: Grid) -> Entry {
    Entry::new(&SHADER, name, Params::LAYOUT, binds)
        .consts(&[("WG", WG as f64)])
        .wg(Wg::Fixed(wg))
        .grid(grid)
}

/// A 1-D kernel: `WG` invocations per workgroup, one per item.
const fn one_d(name: &'static str, binds: &'static [Slot]) -> Entry {
    op(name, binds, WG as u32, Grid::Items)
}

pub static THRESHOLD_EMA: Entry = op(
    "threshold_ema",
    &[rf("thr", "1"), wf("state", "1")],
    1,
    Grid::Single,
);
pub static GATE_PLAN: Entry = one_d(
    "gate_plan",
    &[
        ru("src", "any"),
        ru("table", "slots, 4"),
        wu("args", "slots, 3"),
    ],
);
pub static ZERO: Entry = one_d("zero", &[wf("a", "any")]);
pub static UNPACK_F16: Entry = one_d("unpack_f16", &[ru("src", "halves"), wf("out", "len")]);

/// Every entry point of shaders/ops.wgsl.
pub static ENTRIES: &[&Entry] = &[&THRESHOLD_EMA, &GATE_PLAN, &ZERO, &UNPACK_F16];

/// state = first ? max(thr, 0) : decay * state + (1 - decay) * max(thr, 0).
/// thr: (1), state: (1)
pub fn threshold_ema(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    thr: &GpuTensor,
    state: &GpuTensor,
    decay: f32,
    first: bool,
) -> Result<()> {
    let p = Params {
        len: 1,
        first: first as u32,
        decay,
        ..Default::default()
    };
    THRESHOLD_EMA.call(p).binds(&[thr, state]).record(gpu, enc)
}

/// The plan of `gate`: flag = src[index] > threshold; each dispatch recorded under the gate
/// (its grid and the flag value it runs on are in gate.table, written by `Gate::finish`)
/// gets its grid as indirect arguments when its value equals the flag, else zero groups.
/// Record it after whatever writes src and before the gated dispatches; never gated itself.
/// src: (>= index + 1) u32, table: (slots, 4) u32 -> args: (slots, 3) u32
pub fn gate_plan(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    gate: &Gate,
    src: &GpuTensor,
    index: usize,
    threshold: u32,
) -> Result<()> {
    if index >= src.len() {
        return Err(Error::Internal(format!(
            "gate_plan: src {:?} ({:?}) has no u32 element {index}",
            src.shape, src.dtype
        )));
    }
    if gpu.is_gated() {
        return Err(Error::Internal("gate_plan: recorded inside a gate".into()));
    }
    let slots = gate.slots();
    let p = Params {
        len: slots as u32,
        index: index as u32,
        threshold,
        ..Default::default()
    };
    GATE_PLAN
        .call(p)
        .dim("slots", slots.max(1))
        .binds(&[src, &gate.table, &gate.args])
        .items(slots)
        .record(gpu, enc)
}

/// a = 0 (a dispatch, so that it can be gated; `Gpu::fill` is a queue write).
/// a: (len)
pub fn zero(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, a: &GpuTensor) -> Result<()> {
    let p = Params {
        len: super::decl::to_u32("zero", "len", a.len())?,
        ..Default::default()
    };
    ZERO.call(p).bind(a).items(a.len()).record(gpu, enc)
}

/// out = the f32 values of the IEEE halves packed two to a u32 in src (element i in bits
/// 16 * (i % 2) of src[i / 2]): a batch uploaded as f16 (`crate::sae::storage`).
/// src: (ceil(len / 2)) u32 -> out: (len)
pub fn unpack_f16(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    src: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    let len = out.len();
    let p = Params {
        len: super::decl::to_u32("unpack_f16", "len", len)?,
        ..Default::default()
    };
    UNPACK_F16
        .call(p)
        .dims(&[("halves", len.div_ceil(2)), ("len", len)])
        .binds(&[src, out])
        .items(len)
        .record(gpu, enc)
}
