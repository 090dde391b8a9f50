//! CPU twins of shaders/ops.wgsl.

/// a += b.
pub fn add_into(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// state = first ? max(thr, 0) : decay * state + (1 - decay) * max(thr, 0).
pub fn threshold_ema(thr: &[f32], state: &mut [f32], decay: f32, first: bool) {
    let t = thr[0].max(0.0);
    state[0] = if first {
        t
    } else {
        decay * state[0] + (1.0 - decay) * t
    };
}

/// flag = src[index] > threshold; for each slot j, args[j] = table[j][0..3] when
/// table[j][3] == flag, else zeros.
/// src: (>= index + 1) u32, table: (slots, 4) u32 -> args: (slots, 3) u32
pub fn gate_plan(src: &[u32], index: usize, threshold: u32, table: &[u32], args: &mut [u32]) {
    let flag = (src[index] > threshold) as u32;
    for (t, a) in table.chunks_exact(4).zip(args.chunks_exact_mut(3)) {
        let on = t[3] == flag;
        for c in 0..3 {
            a[c] = if on { t[c] } else { 0 };
        }
    }
}

/// a = 0.
pub fn zero(a: &mut [f32]) {
    a.fill(0.0);
}

/// out[i] = the half in bits 16 * (i % 2).. of src[i / 2], as f32 (exact).
pub fn unpack_f16(src: &[u32], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let bits = (src[i / 2] >> (16 * (i % 2))) & 0xffff;
        *o = half::f16::from_bits(bits as u16).to_f32();
    }
}
