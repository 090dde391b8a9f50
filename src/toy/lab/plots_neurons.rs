//! Figures of the privileged / abs / l1 / intervene experiments, each as PNG and SVG
//! (crate::report::plots::draw_both):
//! - `stacks`: the paper's per-neuron stacked bar plots, one panel per instance: each
//!   neuron a bar, each feature's weight a block of height |w| in that feature's colour
//!   (positive weights stacked up from 0, negative ones down), and under each bar the
//!   neuron's kind (M monosemantic, P polysemantic, - dead);
//! - `lines`: y series against a (log) x axis, for the L1 / top-k sweep and interventions.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Result;
use crate::report::plots::{Picture, draw_both};
use crate::toy::plots::{Res, e, legend};

/// One panel of a stack plot: a title and (weights per feature, mark) per neuron (the
/// mark of its kind, `privileged::NeuronKind::label`).
pub struct StackPanel {
    pub title: String,
    pub neurons: Vec<(Vec<f32>, &'static str)>,
}

/// Feature i of n: a categorical palette up to 10 features, else a rainbow by index
/// (the paper colours by feature, most important first).
pub fn feature_color(i: usize, n: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    if n <= 10 {
        let c = TAB10[i % 10];
        RGBColor(c.0, c.1, c.2)
    } else {
        let h = 0.85 * i as f64 / (n - 1).max(1) as f64;
        let c = HSLColor(h, 0.75, 0.5).to_backend_color();
        RGBColor(c.rgb.0, c.rgb.1, c.rgb.2)
    }
}

const PANEL_H: u32 = 190;
const WIDTH: u32 = 1100;
const TOP: u32 = 40;

fn stacks_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    n: usize,
    panels: &[StackPanel],
) -> Res {
    let font = |s: u32| TextStyle::from(("sans-serif", s).into_font());
    root.draw(&Text::new(
        title.to_string(),
        (10, 10),
        font(15).pos(Pos::new(HPos::Left, VPos::Top)),
    ))
    .map_err(e)?;
    for (pi, p) in panels.iter().enumerate() {
        let y0 = TOP as f64 + pi as f64 * PANEL_H as f64;
        let (left, right) = (120.0, WIDTH as f64 - 20.0);
        let (up, down) = p.neurons.iter().fold((0.0f64, 0.0f64), |(u, d), (w, _)| {
            let pos: f64 = w.iter().map(|&v| (v as f64).max(0.0)).sum();
            let neg: f64 = w.iter().map(|&v| (-(v as f64)).max(0.0)).sum();
            (u.max(pos), d.max(neg))
        });
        let span = (up + down).max(1e-6);
        let plot_h = PANEL_H as f64 - 40.0;
        let zero = y0 + 8.0 + plot_h * up / span;
        let sy = plot_h / span;
        for (li, line) in p.title.lines().enumerate() {
            root.draw(&Text::new(
                line.to_string(),
                (
                    8,
                    (y0 + PANEL_H as f64 / 2.0 - 16.0 + 18.0 * li as f64) as i32,
                ),
                font(13).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e)?;
        }
        let k = p.neurons.len().max(1);
        let slot = (right - left) / k as f64;
        let bw = (slot * 0.75).max(1.0);
        root.draw(&PathElement::new(
            vec![(left as i32, zero as i32), (right as i32, zero as i32)],
            BLACK.stroke_width(1),
        ))
        .map_err(e)?;
        for (ni, (w, label)) in p.neurons.iter().enumerate() {
            let x0 = left + ni as f64 * slot + (slot - bw) / 2.0;
            let (mut yu, mut yd) = (zero, zero);
            for (fi, &v) in w.iter().enumerate() {
                let hgt = (v as f64).abs() * sy;
                if hgt < 0.25 {
                    continue;
                }
                let c = feature_color(fi, n);
                let (a, b) = if v > 0.0 {
                    let r = (yu - hgt, yu);
                    yu -= hgt;
                    r
                } else {
                    let r = (yd, yd + hgt);
                    yd += hgt;
                    r
                };
                let style = if v > 0.0 {
                    c.filled()
                } else {
                    c.mix(0.45).filled()
                };
                root.draw(&Rectangle::new(
                    [
                        (x0.round() as i32, a.round() as i32),
                        ((x0 + bw).round() as i32, b.round() as i32),
                    ],
                    style,
                ))
                .map_err(e)?;
            }
            root.draw(&Text::new(
                label.to_string(),
                ((x0 + bw / 2.0) as i32, (y0 + PANEL_H as f64 - 24.0) as i32),
                font(11).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(e)?;
        }
    }
    Ok(())
}

/// name.{png,svg}: the stacked bar plots of `panels` (n features each).
pub fn stacks(dir: &Path, name: &str, title: &str, n: usize, panels: &[StackPanel]) -> Result<()> {
    struct P<'a>(&'a str, usize, &'a [StackPanel]);
    impl Picture for P<'_> {
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Res {
            stacks_chart(root, self.0, self.1, self.2)
        }
    }
    let size = (WIDTH, TOP + PANEL_H * panels.len().max(1) as u32 + 10);
    draw_both(dir, name, size, &P(title, n, panels))
}

/// One series of a line chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// One chart of `lines`: series over a shared x axis.
pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    pub series: Vec<Series>,
}

fn line_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> Res {
    let pts = c.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    // Headroom for the legend (upper right).
    let y1 = y1 + 0.4 * (y1 - y0).max(1e-6);
    let mut b = ChartBuilder::on(root);
    b.caption(c.title.clone(), ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if c.log_x {
        let lo = x0.max(1e-9);
        let chart = b
            .build_cartesian_2d((lo / 1.3..x1 * 1.3).log_scale(), y0..y1)
            .map_err(e)?;
        draw_series(chart, c)
    } else {
        let pad = 0.05 * (x1 - x0);
        let chart = b
            .build_cartesian_2d(x0 - pad..x1 + pad, y0..y1)
            .map_err(e)?;
        draw_series(chart, c)
    }
}

/// The mesh (axes described by `c`), `c`'s series and their legend.
fn draw_series<'a, DB: DrawingBackend + 'a, X>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    c: &LineChart,
) -> Res
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .max_light_lines(2)
        .x_desc(c.x_desc.clone())
        .y_desc(c.y_desc.clone())
        .draw()
        .map_err(e)?;
    let chart = &mut chart;
    for s in &c.series {
        let col = s.color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), col.stroke_width(2)))
            .map_err(e)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, col.filled())))
            .map_err(e)?;
    }
    legend(chart, SeriesLabelPosition::UpperRight, 13)
}

/// name.{png,svg}: `charts` side by side.
pub fn lines(dir: &Path, name: &str, charts: &[LineChart]) -> Result<()> {
    struct P<'a>(&'a [LineChart]);
    impl Picture for P<'_> {
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Res {
            let parts = root.split_evenly((1, self.0.len().max(1)));
            for (a, c) in parts.iter().zip(self.0) {
                line_chart(a, c)?;
            }
            Ok(())
        }
    }
    draw_both(
        dir,
        name,
        (480 * charts.len().max(1) as u32, 420),
        &P(charts),
    )
}
