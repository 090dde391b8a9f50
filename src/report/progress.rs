//! Progress on stderr: an indicatif bar when stderr is a terminal, otherwise one plain line
//! per log interval (CI logs and `nohup` runs stay readable).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::jsonl::Record;

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
}

impl Progress {
    pub fn new(total_steps: u64, start: u64) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total_steps);
            b.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                    .expect("static template"),
            );
            b.set_position(start);
            Some(b)
        } else {
            None
        };
        Progress {
            bar,
            total: total_steps,
        }
    }

    pub fn update(&self, r: &Record) {
        let k = r.k.map(|k| format!("k {k}  ")).unwrap_or_default();
        let msg = format!(
            "{:.0} tok/s  loss {:.4}  {k}L0 {:.1}  EV {:.3}  dead {:.1}%",
            r.tokens_per_s,
            r.loss,
            r.l0,
            r.explained_variance,
            100.0 * r.dead_fraction
        );
        match &self.bar {
            Some(b) => {
                b.set_position(r.step);
                b.set_message(msg);
            }
            None => {
                let eta = if r.tokens_per_s > 0.0 && r.step > 0 {
                    let per_step = r.tokens as f64 / r.step as f64 / r.tokens_per_s;
                    format!(
                        "{:.0}s",
                        per_step * (self.total - r.step.min(self.total)) as f64
                    )
                } else {
                    "?".into()
                };
                eprintln!("step {}/{}  {msg}  ETA {eta}", r.step, self.total);
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }

    /// Print a line without breaking the bar.
    pub fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}
