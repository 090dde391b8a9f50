// sparse kernels (being written). Launchers: src/kernels/sparse.rs. CPU twins: src/reference/sparse.rs.
