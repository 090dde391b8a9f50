//! CPU twins of shaders/activations.wgsl.

/// z = max(pre, 0).
pub fn relu_forward(pre: &[f32], z: &mut [f32]) {
    for (z, &p) in z.iter_mut().zip(pre) {
        *z = p.max(0.0);
    }
}

/// dpre = dz * [pre > 0].
pub fn relu_backward(pre: &[f32], dz: &[f32], dpre: &mut [f32]) {
    for ((d, &p), &g) in dpre.iter_mut().zip(pre).zip(dz) {
        *d = if p > 0.0 { g } else { 0.0 };
    }
}
