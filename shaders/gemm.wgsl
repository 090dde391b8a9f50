// gemm kernels (being written). Launchers: src/kernels/gemm.rs. CPU twins: src/reference/gemm.rs.
