//! The paper's figures for a toy-model run, each as PNG and SVG (crate::report::plots):
//! - `features`: per density, W^T W and b as heat maps (blue -1, white 0, red +1) over the
//!   bars of ||W_i||, coloured by superposition sum_{j != i} (W_i_hat . W_j)^2
//!   (dark: orthogonal to every other feature; yellow: 1 or more);
//! - `dimensionality`: D* = m / ||W||_F^2 against 1 / (1 - S), with each feature's
//!   dimensionality D_i as a dot and reference lines at the fractions of the paper's
//!   geometric configurations (1, 3/4 tetrahedron, 2/3 triangle, 1/2 antipodal pair,
//!   2/5 pentagon, 3/8 square antiprism);
//! - `directions` (m = 2): each feature's direction W_i in the hidden plane, per density;
//! - `phase`: the n = 2 -> m = 1 phase diagram, one coloured cell per (importance, density).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Result;

use super::SweepResult;
use super::phase::{Phase, PhaseResult};

pub(crate) type Res = std::result::Result<(), String>;

/// `crate::report::plots::draw_both` for a chart function:
/// `draw_chart!(dir, name, size, chart(a: A, b: B))` draws `chart(root, a, b)` (a: &A,
/// b: &B) into DIR/NAME.{png,svg}, through a one-off `Picture`.
macro_rules! draw_chart {
    ($dir:expr, $name:expr, $size:expr, $chart:ident($($arg:ident: $ty:ty),+)) => {{
        struct P<'a>($(&'a $ty),+);
        impl $crate::report::plots::Picture for P<'_> {
            fn draw<DB: ::plotters::prelude::DrawingBackend>(
                &self,
                root: &::plotters::prelude::DrawingArea<DB, ::plotters::coord::Shift>,
            ) -> $crate::toy::plots::Res {
                let P($($arg),+) = *self;
                $chart(root, $($arg),+)
            }
        }
        $crate::report::plots::draw_both($dir, $name, $size, &P($($arg),+))
    }};
}
pub(crate) use draw_chart;

pub(crate) fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

/// Heat maps show at most this many features (SVG size grows with its square).
pub const MAX_HEAT_FEATURES: usize = 50;
const PANELS_PER_ROW: usize = 10;

pub(crate) fn lerp(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let f = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    RGBColor(f(a.0, b.0), f(a.1, b.1), f(a.2, b.2))
}

/// Blue (-1) .. white (0) .. red (+1), clipped (matplotlib's RdBu ends).
pub(crate) fn diverging(v: f64) -> RGBColor {
    const WHITE_: (u8, u8, u8) = (247, 247, 247);
    if v >= 0.0 {
        lerp(WHITE_, (178, 24, 43), v)
    } else {
        lerp(WHITE_, (33, 102, 172), -v)
    }
}

/// Superposition 0 .. 1 (clipped) on viridis.
fn superposition_color(s: f64) -> RGBColor {
    ViridisRGB::get_color(s.clamp(0.0, 1.0))
}

pub(crate) fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    (x, y): (i32, i32),
    size: u32,
    h: HPos,
) -> Res {
    let style = TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(h, VPos::Top));
    area.draw(&Text::new(s.to_string(), (x, y), style))
        .map_err(e)
}

fn rect<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    c: RGBColor,
) -> Res {
    area.draw(&Rectangle::new(
        [
            (x0.round() as i32, y0.round() as i32),
            (x1.round() as i32, y1.round() as i32),
        ],
        c.filled(),
    ))
    .map_err(e)
}

/// An arrow from `from` to `tip`: a line 2 px wide ending in a dot of radius `dot`.
pub(crate) fn arrow<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    from: (i32, i32),
    tip: (i32, i32),
    c: RGBColor,
    dot: i32,
) -> Res {
    area.draw(&PathElement::new(vec![from, tip], c.stroke_width(2)))
        .map_err(e)?;
    area.draw(&Circle::new(tip, dot, c.filled())).map_err(e)
}

/// "1-S = d" with 2 decimals, 3 below 0.1, in exponent form below 0.01.
pub(crate) fn density_label(d: f32) -> String {
    if d >= 0.1 {
        format!("1-S = {d:.2}")
    } else if d >= 0.01 {
        format!("1-S = {d:.3}")
    } else {
        format!("1-S = {d:.1e}")
    }
}

/// Tick marks 1, 2, 3, 5 x 10^k inside [lo, hi].
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for f in [1.0, 2.0, 3.0, 5.0] {
            let t = f * decade;
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                v.push(t);
            }
        }
        decade *= 10.0;
    }
    v
}

/// 0.01, 0.5, 2, 30: no trailing zeros.
fn tick_label(v: &f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

// ---------------------------------------------------------------- features

const HEAT: f64 = 140.0;
const PANEL_W: u32 = 200;
const PANEL_H: u32 = 360;

/// Columns and rows of one panel per instance of `r`, [`PANELS_PER_ROW`] to a row.
fn grid(r: &SweepResult) -> (usize, usize) {
    let k = r.instances.len().max(1);
    (k.min(PANELS_PER_ROW), k.div_ceil(PANELS_PER_ROW))
}

/// One panel per instance of `r` below a 40 px title row (`bottom` px kept for a legend),
/// and the largest ||W_i|| of any instance (at least 1).
fn density_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &SweepResult,
    bottom: u32,
) -> (Vec<DrawingArea<DB, Shift>>, f64) {
    let (cols, rows) = grid(r);
    let panels = root.margin(40, bottom, 10, 10).split_evenly((rows, cols));
    let max_norm = r
        .instances
        .iter()
        .flat_map(|i| i.norms.iter().copied())
        .fold(1.0f64, f64::max);
    (panels, max_norm)
}

/// A panel's heading: its density, centred at the top.
fn heading<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, density: f32) -> Res {
    let pw = area.dim_in_pixel().0;
    text(
        area,
        &density_label(density),
        (pw as i32 / 2, 0),
        15,
        HPos::Center,
    )
}

fn features_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &SweepResult) -> Res {
    let n = r.run.config.features.n;
    let shown = n.min(MAX_HEAT_FEATURES);
    let (w, _) = root.dim_in_pixel();
    let title = format!(
        "{} model, n = {n} features in m = {} dimensions{}",
        if r.run.config.relu {
            "ReLU output"
        } else {
            "Linear"
        },
        r.run.config.features.m,
        if shown < n {
            format!(" (first {shown} features shown)")
        } else {
            String::new()
        }
    );
    text(root, &title, (w as i32 / 2, 8), 20, HPos::Center)?;
    let (panels, max_norm) = density_panels(root, r, 60);
    let cell = HEAT / shown as f64;
    for (inst, area) in r.instances.iter().zip(&panels) {
        let (pw, _) = area.dim_in_pixel();
        let x0 = ((pw as f64 - HEAT - cell.max(6.0) - 6.0) / 2.0).max(0.0);
        heading(area, inst.density)?;
        text(
            area,
            &format!("D* = {:.2}, {} learned", inst.dstar, inst.represented.len()),
            (pw as i32 / 2, 18),
            13,
            HPos::Center,
        )?;
        // W^T W and b.
        let y0 = 40.0;
        for i in 0..shown {
            for j in 0..shown {
                let v = inst.wtw[i][j];
                rect(
                    area,
                    (x0 + j as f64 * cell, y0 + i as f64 * cell),
                    (x0 + (j + 1) as f64 * cell, y0 + (i + 1) as f64 * cell),
                    diverging(v),
                )?;
            }
            let bx = x0 + HEAT + 6.0;
            rect(
                area,
                (bx, y0 + i as f64 * cell),
                (bx + cell.max(6.0), y0 + (i + 1) as f64 * cell),
                diverging(inst.bias[i] as f64),
            )?;
        }
        text(
            area,
            "W\u{1d40}W",
            ((x0 + HEAT / 2.0) as i32, (y0 + HEAT + 2.0) as i32),
            12,
            HPos::Center,
        )?;
        text(
            area,
            "b",
            (
                (x0 + HEAT + 6.0 + cell.max(6.0) / 2.0) as i32,
                (y0 + HEAT + 2.0) as i32,
            ),
            12,
            HPos::Center,
        )?;
        // ||W_i|| bars coloured by superposition.
        let y1 = y0 + HEAT + 22.0;
        let bar = HEAT / shown as f64;
        area.draw(&PathElement::new(
            vec![(x0 as i32, y1 as i32), (x0 as i32, (y1 + HEAT) as i32)],
            BLACK.stroke_width(1),
        ))
        .map_err(e)?;
        let one = x0 + HEAT / max_norm;
        area.draw(&PathElement::new(
            vec![(one as i32, y1 as i32), (one as i32, (y1 + HEAT) as i32)],
            RGBColor(160, 160, 160).stroke_width(1),
        ))
        .map_err(e)?;
        for i in 0..shown {
            let len = HEAT * inst.norms[i] / max_norm;
            let gap = if bar >= 4.0 { 1.0 } else { 0.0 };
            rect(
                area,
                (x0, y1 + i as f64 * bar + gap),
                (x0 + len.max(0.5), y1 + (i + 1) as f64 * bar - gap),
                superposition_color(inst.superposition[i]),
            )?;
        }
        text(
            area,
            "||W\u{1d62}|| (grey line: 1)",
            ((x0 + HEAT / 2.0) as i32, (y1 + HEAT + 2.0) as i32),
            12,
            HPos::Center,
        )?;
    }
    // Legends.
    let (_, h) = root.dim_in_pixel();
    let ly = h as i32 - 44;
    let lx = 20;
    text(root, "W\u{1d40}W, b:", (lx, ly), 13, HPos::Left)?;
    for s in 0..100 {
        let v = s as f64 / 50.0 - 1.0;
        rect(
            root,
            ((lx + 80 + s) as f64, ly as f64),
            ((lx + 81 + s) as f64, (ly + 14) as f64),
            diverging(v),
        )?;
    }
    text(root, "-1", (lx + 80, ly + 16), 11, HPos::Center)?;
    text(root, "0", (lx + 130, ly + 16), 11, HPos::Center)?;
    text(root, "+1", (lx + 180, ly + 16), 11, HPos::Center)?;
    let sx = lx + 240;
    text(
        root,
        "bar colour: superposition, sum over j != i of (W_i/||W_i|| . W_j)\u{b2}",
        (sx, ly),
        13,
        HPos::Left,
    )?;
    for s in 0..100 {
        rect(
            root,
            ((sx + 420 + s) as f64, ly as f64),
            ((sx + 421 + s) as f64, (ly + 14) as f64),
            superposition_color(s as f64 / 100.0),
        )?;
    }
    text(root, "0", (sx + 420, ly + 16), 11, HPos::Center)?;
    text(root, "\u{2265} 1", (sx + 520, ly + 16), 11, HPos::Center)?;
    Ok(())
}

/// features.{png,svg}: W^T W, b and the ||W_i|| bars for every instance.
pub fn features(dir: &Path, r: &SweepResult) -> Result<()> {
    let (cols, rows) = grid(r);
    let (cols, rows) = (cols as u32, rows as u32);
    let size = ((cols * PANEL_W + 20).max(700), rows * PANEL_H + 100);
    draw_chart!(dir, "features", size, features_chart(r: SweepResult))
}

// ---------------------------------------------------------------- dimensionality

/// (value, label) of the paper's reference fractions.
pub const FRACTIONS: &[(f64, &str)] = &[
    (1.0, "1"),
    (0.75, "3/4 tetrahedron"),
    (2.0 / 3.0, "2/3 triangle"),
    (0.5, "1/2 antipodal pair"),
    (0.4, "2/5 pentagon"),
    (0.375, "3/8 square antiprism"),
];

fn dimensionality_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &SweepResult) -> Res {
    let xs: Vec<f64> = r.instances.iter().map(|i| i.inverse_density).collect();
    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min).max(1e-9);
    let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max).max(lo);
    let (x0, x1) = (lo / 1.15, hi * 2.2);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Feature dimensionality: n = {}, m = {}, {} model",
                r.run.config.features.n,
                r.run.config.features.m,
                if r.run.config.relu { "ReLU" } else { "linear" }
            ),
            ("sans-serif", 22),
        )
        .margin(14)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x0..x1)
                .log_scale()
                .with_key_points(log_ticks(x0, hi * 1.05)),
            0.0..1.1f64,
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_label_formatter(&tick_label)
        .x_desc("1 / (1 - S)")
        .y_desc("dimensions per feature")
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    let grey = RGBColor(150, 150, 150);
    for &(v, label) in FRACTIONS {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, v), (hi * 1.05, v)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.to_string(),
                (hi * 1.07, v),
                TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center))
                    .color(&grey),
            )))
            .map_err(e)?;
    }
    let dot = RGBColor(31, 119, 180).mix(0.35);
    chart
        .draw_series(r.instances.iter().flat_map(|i| {
            i.dims
                .iter()
                .map(move |&d| Circle::new((i.inverse_density, d), 2, dot.filled()))
        }))
        .map_err(e)?
        .label("feature dimensionality D\u{1d62}")
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, dot.filled()));
    let pts: Vec<(f64, f64)> = r
        .instances
        .iter()
        .map(|i| (i.inverse_density, i.dstar))
        .collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), BLACK.stroke_width(2)))
        .map_err(e)?
        .label("D* = m / ||W||_F\u{b2}")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, BLACK.filled())))
        .map_err(e)?;
    legend(&mut chart, SeriesLabelPosition::LowerLeft, 14)
}

/// The series labels at `pos` on a translucent white box with a black border.
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
    font: u32,
) -> Res {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", font))
        .draw()
        .map_err(e)
}

/// dimensionality.{png,svg}: D* and D_i against 1 / (1 - S).
pub fn dimensionality(dir: &Path, r: &SweepResult) -> Result<()> {
    draw_chart!(
        dir,
        "dimensionality",
        (900, 560),
        dimensionality_chart(r: SweepResult)
    )
}

// ---------------------------------------------------------------- directions (m = 2)

fn directions_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &SweepResult) -> Res {
    let n = r.run.config.features.n;
    let (w, h) = root.dim_in_pixel();
    text(
        root,
        &format!(
            "Feature directions W\u{1d62} in the m = 2 hidden plane ({} model, n = {n})",
            if r.run.config.relu {
                "ReLU output"
            } else {
                "linear"
            }
        ),
        (w as i32 / 2, 8),
        20,
        HPos::Center,
    )?;
    let (panels, max_norm) = density_panels(root, r, 40);
    let color = |i: usize| {
        ViridisRGB::get_color(
            if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            } * 0.9,
        )
    };
    for (inst, area) in r.instances.iter().zip(&panels) {
        let (pw, ph) = area.dim_in_pixel();
        heading(area, inst.density)?;
        let cx = pw as f64 / 2.0;
        let cy = 22.0 + (ph as f64 - 22.0) / 2.0;
        let rad = ((pw as f64).min(ph as f64 - 22.0) / 2.0 - 8.0).max(10.0);
        let s = rad / max_norm;
        let light = RGBColor(210, 210, 210);
        area.draw(&Circle::new(
            (cx as i32, cy as i32),
            s.round() as i32,
            light.stroke_width(1),
        ))
        .map_err(e)?;
        area.draw(&PathElement::new(
            vec![
                ((cx - rad) as i32, cy as i32),
                ((cx + rad) as i32, cy as i32),
            ],
            light.stroke_width(1),
        ))
        .map_err(e)?;
        area.draw(&PathElement::new(
            vec![
                (cx as i32, (cy - rad) as i32),
                (cx as i32, (cy + rad) as i32),
            ],
            light.stroke_width(1),
        ))
        .map_err(e)?;
        // Least important first, so that the important features are drawn on top.
        for i in (0..n).rev() {
            let (a, b) = (inst.w[i][0] as f64, inst.w[i][1] as f64);
            let tip = ((cx + a * s) as i32, (cy - b * s) as i32);
            arrow(area, (cx as i32, cy as i32), tip, color(i), 4)?;
        }
    }
    let ly = h as i32 - 30;
    text(root, "feature importance:", (20, ly), 13, HPos::Left)?;
    for i in 0..n.min(20) {
        let x = 150 + i as i32 * 28;
        root.draw(&Circle::new((x, ly + 8), 5, color(i).filled()))
            .map_err(e)?;
        text(root, &format!("{i}"), (x + 7, ly + 1), 11, HPos::Left)?;
    }
    text(
        root,
        "(feature 0 most important; circle: ||W\u{1d62}|| = 1)",
        (150 + n.min(20) as i32 * 28 + 10, ly),
        13,
        HPos::Left,
    )?;
    Ok(())
}

/// directions.{png,svg}: for m = 2, every W_i as an arrow in the hidden plane.
pub fn directions(dir: &Path, r: &SweepResult) -> Result<()> {
    let (cols, rows) = grid(r);
    let (cols, rows) = (cols as u32, rows as u32);
    let size = ((cols * 170 + 20).max(760), rows * 190 + 80);
    draw_chart!(dir, "directions", size, directions_chart(r: SweepResult))
}

// ---------------------------------------------------------------- phase diagram

pub fn phase_color(p: Phase) -> RGBColor {
    match p {
        Phase::NotLearned => RGBColor(198, 219, 239),
        Phase::Dedicated => RGBColor(33, 113, 181),
        Phase::Superposition => RGBColor(230, 85, 13),
    }
}

/// Geometric cell edges around log-spaced centres.
fn edges(c: &[f32]) -> Vec<f64> {
    let mut v: Vec<f64> = c.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let k = v.len();
    let mut out = Vec::with_capacity(k + 1);
    if k == 1 {
        return vec![v[0] / 1.5, v[0] * 1.5];
    }
    out.push(v[0] * (v[0] / v[1]).sqrt());
    for i in 0..k - 1 {
        out.push((v[i] * v[i + 1]).sqrt());
    }
    out.push(v[k - 1] * (v[k - 1] / v[k - 2]).sqrt());
    out
}

fn phase_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &PhaseResult) -> Res {
    let xe = edges(&r.importance_axis);
    let ye = edges(&r.density_axis);
    let (x0, x1) = (xe[0], *xe.last().unwrap());
    let (y0, y1) = (ye[0], *ye.last().unwrap());
    let (main, legend) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(230));
    let mut chart = ChartBuilder::on(&main)
        .caption(
            format!(
                "n = 2 \u{2192} m = 1 phase diagram ({} model, best of {} restarts)",
                if r.run.config.relu {
                    "ReLU output"
                } else {
                    "linear"
                },
                r.run.config.restarts
            ),
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(log_ticks(x0, x1)),
            (y0..y1).log_scale().with_key_points(log_ticks(y0, y1)),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .x_desc("relative importance of feature 2")
        .y_desc("feature density 1 - S")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let xi = |v: f32| xe.iter().position(|&x| x > v as f64).unwrap_or(1) - 1;
    let yi = |v: f32| ye.iter().position(|&y| y > v as f64).unwrap_or(1) - 1;
    chart
        .draw_series(r.cells.iter().map(|c| {
            let (i, j) = (xi(c.importance), yi(c.density));
            Rectangle::new(
                [(xe[i], ye[j]), (xe[i + 1], ye[j + 1])],
                phase_color(c.phase).filled(),
            )
        }))
        .map_err(e)?;
    // Cells whose restarts disagree (near a boundary, or a local minimum) get a dot.
    chart
        .draw_series(
            r.cells
                .iter()
                .filter(|c| c.restart_phases.iter().any(|&p| p != c.phase))
                .map(|c| {
                    Circle::new(
                        (c.importance as f64, c.density as f64),
                        2,
                        BLACK.mix(0.6).filled(),
                    )
                }),
        )
        .map_err(e)?;
    let mut y = 60;
    text(&legend, "extra feature:", (10, y), 15, HPos::Left)?;
    for p in [Phase::NotLearned, Phase::Dedicated, Phase::Superposition] {
        y += 28;
        legend
            .draw(&Rectangle::new(
                [(10, y), (30, y + 18)],
                phase_color(p).filled(),
            ))
            .map_err(e)?;
        text(&legend, p.label(), (38, y + 1), 14, HPos::Left)?;
    }
    y += 40;
    legend
        .draw(&Circle::new((20, y + 8), 3, BLACK.mix(0.6).filled()))
        .map_err(e)?;
    text(&legend, "restarts disagree", (38, y + 1), 14, HPos::Left)?;
    Ok(())
}

/// phase.{png,svg}: the phase diagram as a coloured grid.
pub fn phase(dir: &Path, r: &PhaseResult) -> Result<()> {
    draw_chart!(dir, "phase", (900, 620), phase_chart(r: PhaseResult))
}
