// reduce kernels (being written). Launchers: src/kernels/reduce.rs. CPU twins: src/reference/reduce.rs.
