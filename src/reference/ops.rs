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
