//! Superposition lab II: the rest of "Toy Models of Superposition", one module per
//! experiment of `saeforge toy --experiment NAME`.

pub mod abs;
pub mod intervene;
pub mod l1;
pub mod plots_b;
pub mod privileged;
