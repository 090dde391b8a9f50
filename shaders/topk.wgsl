// topk kernels (being written). Launchers: src/kernels/topk.rs. CPU twins: src/reference/topk.rs.
