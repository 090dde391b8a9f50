//! Figures of the lab experiments drawn as panels of vectors in a hidden plane
//! (`perturb`, `correlated` with m = 2) and as heat maps (`correlated`'s WᵀW), each written
//! as PNG and SVG (crate::report::plots).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;

use crate::Result;
use crate::toy::plots::{Res, arrow, diverging, draw_chart, e, text};

/// Colours of the groups (sets, the perturbed feature): blue, red, green, orange, purple,
/// brown, pink, grey.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One panel: vectors in a plane, each coloured by its group.
pub struct Panel {
    pub label: String,
    pub note: String,
    pub vectors: Vec<[f64; 2]>,
    /// PALETTE index per vector.
    pub groups: Vec<usize>,
}

const COLS: usize = 8;

fn panels_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
) -> Res {
    let (w, _) = root.dim_in_pixel();
    text(root, title, (w as i32 / 2, 8), 18, HPos::Center)?;
    let k = panels.len().max(1);
    let cols = k.min(COLS);
    let rows = k.div_ceil(cols);
    let body = root.margin(40, 10, 10, 10);
    let areas = body.split_evenly((rows, cols));
    let max_norm = panels
        .iter()
        .flat_map(|p| p.vectors.iter().map(|v| v[0].hypot(v[1])))
        .fold(1.0f64, f64::max);
    let light = RGBColor(210, 210, 210);
    for (p, area) in panels.iter().zip(&areas) {
        let (pw, ph) = area.dim_in_pixel();
        text(area, &p.label, (pw as i32 / 2, 0), 13, HPos::Center)?;
        text(
            area,
            &p.note,
            (pw as i32 / 2, ph as i32 - 16),
            12,
            HPos::Center,
        )?;
        let cx = pw as f64 / 2.0;
        let cy = 18.0 + (ph as f64 - 36.0) / 2.0;
        let rad = ((pw as f64).min(ph as f64 - 36.0) / 2.0 - 6.0).max(10.0);
        let s = rad / max_norm;
        area.draw(&Circle::new(
            (cx as i32, cy as i32),
            s.round() as i32,
            light.stroke_width(1),
        ))
        .map_err(e)?;
        for (v, &g) in p.vectors.iter().zip(&p.groups) {
            let tip = ((cx + v[0] * s) as i32, (cy - v[1] * s) as i32);
            let c = PALETTE[g % PALETTE.len()];
            arrow(area, (cx as i32, cy as i32), tip, c, 3)?;
        }
    }
    Ok(())
}

/// NAME.{png,svg}: one panel per entry (8 per row), circle: norm 1.
pub fn directions(dir: &Path, name: &str, title: &str, panels: &[Panel]) -> Result<()> {
    let k = panels.len().max(1);
    let cols = k.min(COLS) as u32;
    let rows = k.div_ceil(COLS) as u32;
    let size = ((cols * 130 + 20).max(520), rows * 160 + 50);
    draw_chart!(dir, name, size, panels_chart(title: str, panels: [Panel]))
}

fn heat_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    m: &[Vec<f64>],
    groups: &[usize],
) -> Res {
    let (w, h) = root.dim_in_pixel();
    text(root, title, (w as i32 / 2, 8), 16, HPos::Center)?;
    let n = m.len().max(1);
    let side = ((w.min(h) as f64 - 60.0) / n as f64).max(2.0);
    let (x0, y0) = ((w as f64 - side * n as f64) / 2.0, 40.0);
    for (i, row) in m.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let c = diverging(v.clamp(-1.0, 1.0));
            let (x, y) = (x0 + j as f64 * side, y0 + i as f64 * side);
            root.draw(&Rectangle::new(
                [(x as i32, y as i32), ((x + side) as i32, (y + side) as i32)],
                c.filled(),
            ))
            .map_err(e)?;
        }
        let c = PALETTE[groups.get(i).copied().unwrap_or(0) % PALETTE.len()];
        let y = y0 + i as f64 * side;
        root.draw(&Rectangle::new(
            [
                ((x0 - 10.0) as i32, y as i32),
                ((x0 - 3.0) as i32, (y + side) as i32),
            ],
            c.filled(),
        ))
        .map_err(e)?;
    }
    Ok(())
}

/// NAME.{png,svg}: a matrix as a heat map (blue -1, white 0, red +1), its rows marked by
/// group colour on the left.
pub fn heat(dir: &Path, name: &str, title: &str, m: &[Vec<f64>], groups: &[usize]) -> Result<()> {
    draw_chart!(
        dir,
        name,
        (520, 540),
        heat_chart(title: str, m: [Vec<f64>], groups: [usize])
    )
}
