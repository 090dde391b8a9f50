//! Dictionary quality: ground-truth recovery against a planted dictionary (and, later,
//! reconstruction metrics, FISTA and interventions).

pub mod recovery;
pub mod steer;
