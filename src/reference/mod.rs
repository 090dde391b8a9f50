//! The CPU twin of every kernel: plain loops over slices, f32, obviously right. This is the
//! judge the WGSL kernels are tested against and the body of the CPU engine. Each function
//! has the name of its launcher in `crate::kernels` and the same arguments in the same
//! order (without the device and encoder), with ties broken the same way.

pub mod activations;
pub mod codes;
pub mod fista;
pub mod gemm;
pub mod matryoshka;
pub mod ops;
pub mod optim;
pub mod reduce;
pub mod sparse;
pub mod topk;
pub mod toy;
pub mod toy_mlp;

/// The length check of the twins' slices (the fast CPU twins in `crate::cpu_*` make the
/// same ones, with the same message): `kernel`'s `name` has `len` elements, `want` expected.
pub(crate) fn check(kernel: &str, name: &str, len: usize, want: usize) {
    assert_eq!(
        len, want,
        "{kernel}: {name} has {len} elements, expected {want}"
    );
}
