//! The sweep's report, rebuilt from what is on disk (so `saeforge sweep report OUT` gives
//! the same report as the end of the sweep): OUT/sweep.json (every member's settings and
//! figures, the Pareto set, what the data passes read), OUT/report.md (a table per member,
//! the members that stopped and why) and OUT/plots/ (PNG + SVG): explained variance
//! against L0 with the Pareto frontier, dead fraction against L0, and the loss curves of
//! every member together.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Value, json};

use super::state::{STATE_FILE, Status, SweepState, load_spec};
use crate::report::jsonl::{self, Record};
use crate::report::plots::{self, Picture, Series};
use crate::sae::checkpoint;
use crate::sae::export::CFG_FILE;
use crate::sae::{Arch, TrainConfig};
use crate::{Error, Result};

pub const JSON_FILE: &str = "sweep.json";
pub const MD_FILE: &str = "report.md";

/// One member's line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub status: String,
    pub message: Option<String>,
    pub cfg: Option<TrainConfig>,
    pub last: Option<Record>,
    /// The last held-out evaluation: mse, explained variance, L0.
    pub held_out: Option<(f64, f64, f64)>,
    pub truth: Option<serde_json::Map<String, Value>>,
    pub records: Vec<Record>,
}

impl Row {
    /// The point the Pareto set is drawn from: held-out (L0, EV) when there is one, else
    /// the last training interval's.
    fn point(&self) -> Option<(f64, f64)> {
        match (self.held_out, &self.last) {
            (Some((_, ev, l0)), _) => Some((l0, ev)),
            (None, Some(r)) => Some((r.l0, r.explained_variance)),
            _ => None,
        }
        .filter(|(a, b)| a.is_finite() && b.is_finite())
    }
}

/// Names of the rows on the Pareto frontier of (low L0, high explained variance).
pub fn pareto(rows: &[Row]) -> Vec<String> {
    let mut pts: Vec<(f64, f64, &str)> = rows
        .iter()
        .filter(|r| r.status == "done")
        .filter_map(|r| r.point().map(|(l0, ev)| (l0, ev, r.name.as_str())))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut best = f64::NEG_INFINITY;
    let mut out = Vec::new();
    for (_, ev, n) in pts {
        if ev > best {
            best = ev;
            out.push(n.to_string());
        }
    }
    out
}

/// The ground-truth metrics of a finished member (`saeforge eval --truth` on its training
/// data, CPU engine).
fn truth_of(dir: &Path, cfg: &TrainConfig, truth: &Path) -> Result<serde_json::Map<String, Value>> {
    let file = crate::synth::truth_file(truth);
    let ec = crate::eval::run::EvalConfig {
        sae: dir.to_path_buf(),
        data: cfg.data.clone(),
        ood: Vec::new(),
        tensor: cfg.tensor.clone(),
        truth: Some(file),
        rows: 4096,
        batch: 0,
        fista: None,
        plots: None,
    };
    let r = crate::eval::run::run_eval(&crate::gpu::Engine::Cpu, "CPU engine", &ec)?;
    Ok(r.ground_truth.map(|t| t.json()).unwrap_or_default())
}

/// Read every member of the sweep in `out`.
pub fn rows(out: &Path, truth: Option<&Path>) -> Result<Vec<Row>> {
    let spec = load_spec(out)?;
    let state = SweepState::load(out).unwrap_or_default();
    let mut rows = Vec::new();
    for m in &spec.members {
        let dir = out.join(&m.name);
        let st = state.members.get(&m.name);
        let cfg: Option<TrainConfig> = if dir.join("config.json").is_file() {
            super::state::read_json(&dir.join("config.json")).ok()
        } else {
            None
        };
        let records = if dir.join("training.jsonl").is_file() {
            jsonl::read(&dir.join("training.jsonl"))?
        } else {
            Vec::new()
        };
        let exported = dir.join(CFG_FILE).is_file();
        let status = match st.map(|s| s.status) {
            Some(Status::Diverged) => "diverged",
            _ if exported => "done",
            Some(Status::Interrupted) => "interrupted",
            _ if checkpoint::path(&dir).is_file() => "interrupted",
            _ => "pending",
        };
        let held_out = records
            .iter()
            .rev()
            .find_map(|r| Some((r.eval_mse?, r.eval_explained_variance?, r.eval_l0?)));
        let truth = match (truth, &cfg, status) {
            (Some(t), Some(c), "done") => Some(truth_of(&dir, c, t).map_err(|e| {
                e.with_hint(format!("while scoring member `{}` against --truth", m.name))
            })?),
            _ => None,
        };
        rows.push(Row {
            name: m.name.clone(),
            status: status.to_string(),
            message: st.and_then(|s| s.message.clone()),
            last: records.last().cloned(),
            held_out,
            truth,
            cfg,
            records,
        });
    }
    Ok(rows)
}

fn coef(cfg: &TrainConfig) -> String {
    match cfg.arch {
        Arch::Relu => format!("l1 {}", cfg.l1),
        Arch::Jumprelu => format!("l0 {}", cfg.l0),
        Arch::Topk | Arch::Batchtopk | Arch::Matryoshka => format!("k {}", cfg.k),
    }
}

fn row_json(r: &Row, on_front: bool) -> Value {
    let c = r.cfg.as_ref();
    json!({
        "name": r.name,
        "status": r.status,
        "message": r.message,
        "arch": c.map(|c| c.arch.name()),
        "k": c.and_then(|c| crate::sae::engine::selects_topk(c.arch).then_some(c.k)),
        "d_sae": c.map(|c| c.d_sae),
        "l1": c.and_then(|c| (c.arch == Arch::Relu).then_some(c.l1)),
        "l0_coef": c.and_then(|c| (c.arch == Arch::Jumprelu).then_some(c.l0)),
        "lr": c.map(|c| c.lr),
        "seed": c.map(|c| c.seed),
        "data_seed": c.map(|c| c.data_seed()),
        "steps": r.last.as_ref().map(|l| l.step),
        "final": r.last.as_ref().map(|l| json!({
            "loss": l.loss, "mse": l.mse, "explained_variance": l.explained_variance,
            "l0": l.l0, "dead_fraction": l.dead_fraction,
        })),
        "held_out": r.held_out.map(|(mse, ev, l0)| json!({
            "mse": mse, "explained_variance": ev, "l0": l0,
        })),
        "truth": r.truth,
        "pareto": on_front,
        "out": r.name,
    })
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn markdown(rows: &[Row], front: &[String], state: &SweepState, truth: bool) -> String {
    let mut s = String::from("# Sweep report\n\n");
    s.push_str(&format!(
        "{} members; {} finished. Explained variance (EV) and L0 are on the held-out rows when there are any, else on the last training interval; the final MSE is the last training interval's, in the training's normalised units (see `normalize`), the held-out MSE in the data's units. Members marked * are on the Pareto frontier (no other member has both a lower L0 and a higher EV).\n\n",
        rows.len(),
        rows.iter().filter(|r| r.status == "done").count()
    ));
    let mut head = "| member | status | arch | k | d_sae | coefficient | lr | final MSE | held-out MSE | EV | held-out EV | L0 | dead |".to_string();
    let mut rule = "|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_string();
    if truth {
        head.push_str(" MCC | uniqueness | F1 |");
        rule.push_str("---|---|---|");
    }
    s.push_str(&head);
    s.push('\n');
    s.push_str(&rule);
    s.push('\n');
    for r in rows {
        let c = r.cfg.as_ref();
        let l = r.last.as_ref();
        let star = if front.contains(&r.name) { " *" } else { "" };
        let l0 = r.held_out.map(|h| h.2).or(l.map(|l| l.l0));
        s.push_str(&format!(
            "| {}{star} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.status,
            c.map(|c| c.arch.name()).unwrap_or("-"),
            c.filter(|c| crate::sae::engine::selects_topk(c.arch))
                .map(|c| c.k.to_string())
                .unwrap_or_else(|| "-".into()),
            c.map(|c| c.d_sae.to_string()).unwrap_or_else(|| "-".into()),
            c.map(coef).unwrap_or_else(|| "-".into()),
            c.map(|c| format!("{:e}", c.lr))
                .unwrap_or_else(|| "-".into()),
            f(l.map(|l| l.mse), 4),
            f(r.held_out.map(|h| h.0), 4),
            f(l.map(|l| l.explained_variance), 4),
            f(r.held_out.map(|h| h.1), 4),
            f(l0, 1),
            l.map(|l| format!("{:.1}%", 100.0 * l.dead_fraction))
                .unwrap_or_else(|| "-".into()),
        ));
        if truth {
            let t = |k: &str| {
                r.truth
                    .as_ref()
                    .and_then(|t| t.get(k))
                    .and_then(|v| v.as_f64())
            };
            s.push_str(&format!(
                " {} | {} | {} |",
                f(t("mcc"), 4),
                f(t("uniqueness"), 4),
                f(t("f1"), 4)
            ));
        }
        s.push('\n');
    }
    let stopped: Vec<&Row> = rows.iter().filter(|r| r.status != "done").collect();
    if !stopped.is_empty() {
        s.push_str("\n## Members that did not finish\n\n");
        for r in stopped {
            let at = r.last.as_ref().map(|l| l.step).unwrap_or(0);
            s.push_str(&format!(
                "- {}: {} (last log at step {at}){}\n",
                r.name,
                r.status,
                r.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    s.push_str("\n## Data\n\n");
    for (i, g) in state.groups.iter().enumerate() {
        s.push_str(&format!(
            "- pass {}: members {}; {} training stream(s) opened, {} rows drawn of {} training rows ({:.2} passes over the data), {:.1} s\n",
            i + 1,
            g.members.join(", "),
            g.streams_opened,
            g.rows_drawn,
            g.train_rows,
            g.rows_drawn as f64 / g.train_rows.max(1) as f64,
            g.wall_s
        ));
    }
    s.push_str("\n## Plots\n\n![EV against L0](plots/ev_vs_l0.png)\n![dead fraction against L0](plots/dead_vs_l0.png)\n![loss curves](plots/loss_curves.png)\n");
    s
}

/// Scatter of named points with an optional frontier line.
struct Scatter<'a> {
    title: &'a str,
    x: &'a str,
    y: &'a str,
    points: Vec<(f64, f64, String)>,
    frontier: Vec<(f64, f64)>,
}

impl Picture for Scatter<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let xs = || self.points.iter().map(|p| p.0);
        let ys = || self.points.iter().map(|p| p.1);
        let span = |lo: f64, hi: f64| {
            if !lo.is_finite() {
                (0.0, 1.0)
            } else if hi > lo {
                let m = (hi - lo) * 0.1;
                (lo - m, hi + m)
            } else {
                (lo - 0.5, hi + 0.5)
            }
        };
        let (x0, x1) = span(
            xs().fold(f64::INFINITY, f64::min),
            xs().fold(f64::NEG_INFINITY, f64::max),
        );
        let (y0, y1) = span(
            ys().fold(f64::INFINITY, f64::min),
            ys().fold(f64::NEG_INFINITY, f64::max),
        );
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(self.x)
            .y_desc(self.y)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        if self.frontier.len() > 1 {
            chart
                .draw_series(LineSeries::new(self.frontier.clone(), RED.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(self.points.iter().map(|(x, y, name)| {
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 5, BLUE.filled())
                    + Text::new(name.clone(), (7, -12), ("sans-serif", 13).into_font())
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn draw(dir: &Path, rows: &[Row], front: &[String]) -> Result<()> {
    let done: Vec<&Row> = rows.iter().filter(|r| r.last.is_some()).collect();
    let ev_pts: Vec<(f64, f64, String)> = done
        .iter()
        .filter_map(|r| r.point().map(|(l0, ev)| (l0, ev, r.name.clone())))
        .collect();
    let mut frontier: Vec<(f64, f64)> = ev_pts
        .iter()
        .filter(|p| front.contains(&p.2))
        .map(|p| (p.0, p.1))
        .collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    plots::draw_both(
        dir,
        "ev_vs_l0",
        (800, 500),
        &Scatter {
            title: "Explained variance against L0 (red: Pareto frontier)",
            x: "L0 (active latents per row)",
            y: "explained variance",
            points: ev_pts,
            frontier,
        },
    )?;
    let dead: Vec<(f64, f64, String)> = done
        .iter()
        .filter_map(|r| {
            let l = r.last.as_ref()?;
            let l0 = r.held_out.map(|h| h.2).unwrap_or(l.l0);
            Some((l0, l.dead_fraction, r.name.clone()))
        })
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    plots::draw_both(
        dir,
        "dead_vs_l0",
        (800, 500),
        &Scatter {
            title: "Dead latents against L0",
            x: "L0 (active latents per row)",
            y: "fraction dead",
            points: dead,
            frontier: Vec::new(),
        },
    )?;
    let curves: Vec<Series> = done
        .iter()
        .map(|r| Series {
            name: r.name.clone(),
            points: r
                .records
                .iter()
                .map(|x| (x.tokens as f64, x.loss))
                .collect(),
        })
        .collect();
    plots::line_plot(
        dir,
        "loss_curves",
        "Training loss of every member",
        "tokens",
        "loss",
        &curves,
        true,
    )
}

/// Write the report of the sweep in `out` from its members as they are on disk (ground
/// truth metrics with `truth`); returns a short summary for the terminal.
pub fn write(out: &Path, truth: Option<&Path>) -> Result<String> {
    if !out.join(super::state::SPEC_FILE).is_file() {
        return Err(Error::input(format!(
            "{}: not a sweep folder (no {})",
            out.display(),
            super::state::SPEC_FILE
        )));
    }
    if let Some(t) = truth
        && !t.exists()
    {
        return Err(Error::input(format!(
            "--truth {}: no such file or folder",
            t.display()
        )));
    }
    let rows = rows(out, truth)?;
    let state = SweepState::load(out).unwrap_or_default();
    let front = pareto(&rows);
    let shards: usize = rows
        .iter()
        .find_map(|r| r.cfg.as_ref())
        .map(|c| crate::data::discover(&c.data).map(|p| p.len()).unwrap_or(0))
        .unwrap_or(0);
    let doc = json!({
        "members": rows.iter().map(|r| row_json(r, front.contains(&r.name))).collect::<Vec<_>>(),
        "pareto": front,
        "data": {
            "shards": shards,
            "passes": state.groups.iter().map(|g| json!({
                "members": g.members,
                "streams_opened": g.streams_opened,
                "rows_drawn": g.rows_drawn,
                "train_rows": g.train_rows,
                "passes_over_data": g.rows_drawn as f64 / g.train_rows.max(1) as f64,
                "init_rows_drawn": g.init_rows_drawn,
                "wall_s": g.wall_s,
            })).collect::<Vec<_>>(),
            "training_streams": state.groups.iter().map(|g| g.streams_opened).sum::<u64>(),
            "fingerprint_reads": state.fingerprint_reads,
        },
        "state_file": STATE_FILE,
    });
    crate::io::write_json(&out.join(JSON_FILE), &doc)?;
    crate::io::write_atomic(
        &out.join(MD_FILE),
        markdown(&rows, &front, &state, truth.is_some()).as_bytes(),
    )?;
    draw(&out.join("plots"), &rows, &front)?;
    let done = rows.iter().filter(|r| r.status == "done").count();
    Ok(format!(
        "sweep: {done} of {} members finished; Pareto frontier: {}; report: {}",
        rows.len(),
        if front.is_empty() {
            "-".to_string()
        } else {
            front.join(", ")
        },
        out.join(MD_FILE).display()
    ))
}
