//! PNG and SVG plots (plotters, with DejaVu Sans embedded so that no system font is
//! needed). Every plot is written twice, `NAME.png` and `NAME.svg`, atomically.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registering a valid embedded TTF cannot fail; if it did, plots would fail with a
        // clear error at draw time.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{}: drawing failed: {e}", path.display()))
}

/// Something drawable on any plotters backend.
pub trait Picture {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>;
}

/// Draw the same picture into `dir/NAME.png` and `dir/NAME.svg`.
pub fn draw_both<P: Picture>(dir: &Path, name: &str, size: (u32, u32), pic: &P) -> Result<()> {
    register_font();
    crate::io::create_dir(dir)?;
    let png = dir.join(format!("{name}.png"));
    let tmp = dir.join(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&png, e))?;
        pic.draw(&root).map_err(|e| err(&png, e))?;
        root.present().map_err(|e| err(&png, e))?;
    }
    std::fs::rename(&tmp, &png).map_err(|e| Error::io(&png, e))?;
    let svg_path = dir.join(format!("{name}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&svg_path, e))?;
        pic.draw(&root).map_err(|e| err(&svg_path, e))?;
        root.present().map_err(|e| err(&svg_path, e))?;
    }
    crate::io::write_atomic(&svg_path, svg.as_bytes())
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn bounds(series: &[Series], log_x: bool, log_y: bool) -> ((f64, f64), (f64, f64)) {
    let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|&v| ok(v, log_x))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|&v| ok(v, log_y))
        .collect();
    let span = |v: &[f64], log: bool| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            return if log { (0.1, 1.0) } else { (0.0, 1.0) };
        }
        if hi > lo {
            (lo, hi)
        } else if log {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo - 0.5, hi + 0.5)
        }
    };
    (span(&xs, log_x), span(&ys, log_y))
}

fn line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> std::result::Result<(), String> {
    let ((x0, x1), (y0, y1)) = bounds(series, false, log_y);
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
                let c = colors[i % colors.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .cloned()
                    .filter(|p| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
            if series.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
        }};
    }
    if log_y {
        body!(
            b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(|e| e.to_string())?
        );
    } else {
        body!(
            b.build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

/// A line plot of one or more series.
pub fn line_plot(
    dir: &Path,
    name: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    struct P<'a>(&'a str, &'a str, &'a str, &'a [Series], bool);
    impl Picture for P<'_> {
        fn draw<DB: DrawingBackend>(
            &self,
            root: &DrawingArea<DB, Shift>,
        ) -> std::result::Result<(), String> {
            line_chart(root, self.0, self.1, self.2, self.3, self.4)
        }
    }
    draw_both(
        dir,
        name,
        (800, 500),
        &P(title, x_label, y_label, series, log_y),
    )
}

fn hist_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    counts: &[(f64, f64, u64)],
    note: &str,
) -> std::result::Result<(), String> {
    let x0 = counts.first().map(|c| c.0).unwrap_or(0.0);
    let x1 = counts.last().map(|c| c.1).unwrap_or(1.0);
    let ymax = counts.iter().map(|c| c.2).max().unwrap_or(1).max(1) as f64 * 1.05;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..ymax)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("latents")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            counts.iter().map(|&(a, b, c)| {
                Rectangle::new([(a, 0.0), (b, c as f64)], BLUE.mix(0.6).filled())
            }),
        )
        .map_err(|e| e.to_string())?;
    if !note.is_empty() {
        root.draw(&Text::new(
            note.to_string(),
            (90, 50),
            ("sans-serif", 14).into_font(),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Histogram of finite `values` in `bins` equal bins; `note` is printed in the corner
/// (e.g. how many values were -inf and left out).
pub fn histogram(
    dir: &Path,
    name: &str,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    note: &str,
) -> Result<()> {
    let finite: Vec<f64> = values.iter().cloned().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let w = (hi - lo) / bins as f64;
    let mut counts: Vec<(f64, f64, u64)> = (0..bins)
        .map(|i| (lo + i as f64 * w, lo + (i + 1) as f64 * w, 0))
        .collect();
    for v in finite {
        let i = (((v - lo) / w) as usize).min(bins - 1);
        counts[i].2 += 1;
    }
    struct P<'a>(&'a str, &'a str, &'a [(f64, f64, u64)], &'a str);
    impl Picture for P<'_> {
        fn draw<DB: DrawingBackend>(
            &self,
            root: &DrawingArea<DB, Shift>,
        ) -> std::result::Result<(), String> {
            hist_chart(root, self.0, self.1, self.2, self.3)
        }
    }
    draw_both(dir, name, (800, 500), &P(title, x_label, &counts, note))
}
