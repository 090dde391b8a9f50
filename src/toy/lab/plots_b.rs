//! Charts of the lab experiments: `geometry` (every D_i against 1 / (1 - S), coloured by
//! its component's class), `dynamics` (D_i and the loss against the step, jumps marked),
//! `adversarial` (vulnerability against features per dimension). PNG + SVG each.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Result;

use super::adversarial::AdversarialResult;
use super::dynamics::{DynamicsResult, LEVELS};
use super::graph::{GeometryResult, POLYTOPES};
use super::plots_a::PALETTE;
use crate::toy::plots::{Res, draw_chart, e, legend};

fn class_color(class: &str) -> RGBColor {
    POLYTOPES
        .iter()
        .position(|p| p.2 == class)
        .map_or(RGBColor(160, 160, 160), |i| PALETTE[i % PALETTE.len()])
}

fn geometry_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &GeometryResult) -> Res {
    let xs: Vec<f64> = r.levels.iter().map(|l| 1.0 / l.density as f64).collect();
    let x0 = xs.iter().copied().fold(f64::INFINITY, f64::min) / 1.3;
    let x1 = xs.iter().copied().fold(0.0, f64::max) * 1.3;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Feature dimensionality Dᵢ, n = {} → m = {}, coloured by component",
                r.config.n, r.config.m
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((x0.max(1e-3)..x1.max(2.0)).log_scale(), 0.0..1.1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("1 / (1 - S)")
        .y_desc("Dᵢ")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for p in POLYTOPES {
        let c = class_color(p.2);
        chart
            .draw_series(LineSeries::new(
                vec![(x0.max(1e-3), p.1), (x1.max(2.0), p.1)],
                c.mix(0.4).stroke_width(1),
            ))
            .map_err(e)?
            .label(format!("{} ({:.3})", p.2, p.1))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
    }
    for (l, &x) in r.levels.iter().zip(&xs) {
        let k = l.list.len().max(1);
        for (ci, c) in l.list.iter().enumerate() {
            let color = class_color(c.class);
            // Spread the dots of a level a little in x so that the clusters show.
            let jitter = 1.0 + 0.25 * (ci as f64 / k as f64 - 0.5);
            chart
                .draw_series(
                    c.features
                        .iter()
                        .map(|&i| Circle::new((x * jitter, l.dims[i]), 2, color.filled())),
                )
                .map_err(e)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight, 13)
}

pub fn geometry(dir: &Path, r: &GeometryResult) -> Result<()> {
    draw_chart!(dir, "geometry", (820, 520), geometry_chart(r: GeometryResult))
}

fn dynamics_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &DynamicsResult) -> Res {
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 3 / 5);
    let s1 = r.steps.last().copied().unwrap_or(1) as f64;
    let n = r.config.n;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "Learning dynamics, n = {} → m = {}, density {}: Dᵢ per feature",
                n, r.config.m, r.config.density
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..s1, 0.0..1.1)
        .map_err(e)?;
    c.configure_mesh()
        .y_desc("Dᵢ")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    for &l in LEVELS {
        c.draw_series(LineSeries::new(
            vec![(0.0, l), (s1, l)],
            RGBColor(200, 200, 200).stroke_width(1),
        ))
        .map_err(e)?;
    }
    for f in 0..n {
        let color = ViridisRGB::get_color(f as f64 / n.max(2) as f64 * 0.9);
        let pts = r.steps.iter().zip(&r.dims).map(|(&s, d)| (s as f64, d[f]));
        c.draw_series(LineSeries::new(pts, color.stroke_width(1)))
            .map_err(e)?;
    }
    c.draw_series(
        r.jumps
            .iter()
            .map(|j| Circle::new((j.step as f64, j.to), 4, RED.stroke_width(2))),
    )
    .map_err(e)?;
    let finite: Vec<f64> = r.loss.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1e-6);
    let hi = finite.iter().copied().fold(0.0, f64::max).max(lo * 1.01);
    let mut c = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..s1, (lo..hi).log_scale())
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("step (red: jumps)")
        .y_desc("batch loss")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    for j in &r.jumps {
        c.draw_series(LineSeries::new(
            vec![(j.step as f64, lo), (j.step as f64, hi)],
            RED.mix(0.4).stroke_width(1),
        ))
        .map_err(e)?;
    }
    let pts = r
        .steps
        .iter()
        .zip(&r.loss)
        .filter(|p| p.1.is_finite() && *p.1 > 0.0)
        .map(|(&s, &l)| (s as f64, l));
    c.draw_series(LineSeries::new(pts, BLACK.stroke_width(1)))
        .map_err(e)?;
    Ok(())
}

pub fn dynamics(dir: &Path, r: &DynamicsResult) -> Result<()> {
    draw_chart!(dir, "dynamics", (860, 600), dynamics_chart(r: DynamicsResult))
}

fn adversarial_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &AdversarialResult,
) -> Res {
    let x1 = r
        .instances
        .iter()
        .map(|i| i.features_per_dim)
        .fold(1.0, f64::max)
        * 1.1;
    let y1 = r
        .instances
        .iter()
        .map(|i| i.vulnerability_max)
        .fold(1.0, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(root)
        .caption(
            format!(
                "Optimal L2 attack (ε = {}), n = {} → m = {}",
                r.config.epsilon, r.config.n, r.config.m
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x1, 0.0..y1)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("features per dimension (1 / D*)")
        .y_desc("vulnerability (attack / own-feature drop)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(
        vec![(0.0, 1.0), (x1, 1.0)],
        RGBColor(180, 180, 180).stroke_width(1),
    ))
    .map_err(e)?;
    for i in &r.instances {
        c.draw_series(
            i.feature_vulnerability
                .iter()
                .filter(|&&v| v > 0.0)
                .map(|&v| Circle::new((i.features_per_dim, v), 2, BLUE.mix(0.35).filled())),
        )
        .map_err(e)?;
    }
    let mut pts: Vec<(f64, f64)> = r
        .instances
        .iter()
        .map(|i| (i.features_per_dim, i.vulnerability))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    c.draw_series(LineSeries::new(pts.clone(), BLACK.stroke_width(2)))
        .map_err(e)?
        .label("mean over represented features")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, BLACK.filled())))
        .map_err(e)?;
    legend(&mut c, SeriesLabelPosition::UpperLeft, 13)
}

pub fn adversarial(dir: &Path, r: &AdversarialResult) -> Result<()> {
    draw_chart!(dir, "adversarial", (760, 500), adversarial_chart(r: AdversarialResult))
}
