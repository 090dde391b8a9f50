// optim kernels (being written). Launchers: src/kernels/optim.rs. CPU twins: src/reference/optim.rs.
