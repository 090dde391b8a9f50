//! What a run tells its user: progress on stderr (a bar on a terminal, plain lines in a
//! log), training.jsonl with one record per log interval, and PNG + SVG plots at the end.

pub mod jsonl;
pub mod plots;
pub mod progress;
pub mod startup;
