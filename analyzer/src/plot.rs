//! SVG plots drawn with plotters and an embedded DejaVu font (no fontconfig needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::report::Report;

static FONT: Once = Once::new();

/// A named line: label, points, colour.
type Series<'s> = (&'s str, &'s [(f64, f64)], RGBColor);

/// Registers the embedded font once per process.
pub fn register_font() {
    FONT.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            eprintln!(
                "analyzer: warning: the embedded font could not be loaded; plots may lack text"
            );
        }
    });
}

/// Throughput (top) and p99 latency and TTFT (bottom) versus load, one SVG.
pub fn throughput_latency(report: &Report, path: &Path) -> Result<(), String> {
    register_font();
    let stages = &report.stages;
    if stages.is_empty() {
        return Err("no stage to plot".into());
    }
    let lo = stages
        .iter()
        .map(|s| s.level)
        .fold(f64::INFINITY, f64::min)
        .max(1e-9);
    let hi = stages
        .iter()
        .map(|s| s.level)
        .fold(0.0, f64::max)
        .max(lo * 1.0001);
    let log_x = hi / lo >= 8.0;
    let root = SVGBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(360);
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let unit = &report.level_unit;
    let ymax = stages
        .iter()
        .map(|s| s.throughput_rps)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let prediction: Vec<f64> = report
        .simulator
        .as_ref()
        .map(|p| p.throughput_rps.clone())
        .unwrap_or_default();
    let ymax = prediction
        .iter()
        .cloned()
        .fold(ymax, |a, b| a.max(b * 1.15));

    macro_rules! chart {
        ($area:expr, $caption:expr, $ylabel:expr, $ymin:expr, $ymax:expr, $xr:expr) => {{
            let mut c = ChartBuilder::on($area)
                .caption($caption, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d($xr, $ymin..$ymax)
                .map_err(err)?;
            c.configure_mesh()
                .light_line_style(WHITE)
                .x_labels(8)
                .x_label_formatter(&|v: &f64| crate::report::fmt_level((v * 100.0).round() / 100.0))
                .x_desc(format!("load ({unit})"))
                .y_desc($ylabel)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(err)?;
            c
        }};
    }

    let p99: Vec<(f64, f64)> = stages
        .iter()
        .filter_map(|s| s.latency.map(|q| (s.level, q.p99_estimate)))
        .collect();
    let ttft: Vec<(f64, f64)> = stages
        .iter()
        .filter_map(|s| s.ttft.map(|q| (s.level, q.p99_estimate)))
        .collect();
    let lmax = p99
        .iter()
        .chain(&ttft)
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.15;
    let tput: Vec<(f64, f64)> = stages.iter().map(|s| (s.level, s.throughput_rps)).collect();
    let pred: Vec<(f64, f64)> = stages
        .iter()
        .zip(&prediction)
        .map(|(s, p)| (s.level, *p))
        .collect();
    // The USL curve, sampled densely between the extreme levels.
    let usl: Vec<(f64, f64)> = report
        .usl
        .as_ref()
        .map(|u| {
            (0..=100)
                .map(|i| lo * (hi / lo).powf(f64::from(i) / 100.0))
                .map(|n| (n, u.model.throughput(n)))
                .collect()
        })
        .unwrap_or_default();

    fn draw<
        'a,
        X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
        Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    >(
        c: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
        series: &[Series<'_>],
    ) -> Result<(), String> {
        for (label, points, color) in series {
            if points.is_empty() {
                continue;
            }
            let color = *color;
            c.draw_series(LineSeries::new(
                points.iter().cloned(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
            // Measured points get markers; model curves (many points) are lines only.
            if points.len() <= 40 {
                c.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())
    }

    let blue = RGBColor(31, 119, 180);
    let grey = RGBColor(150, 150, 150);
    let red = RGBColor(214, 39, 40);
    let orange = RGBColor(255, 127, 14);
    let green = RGBColor(44, 160, 44);
    if log_x {
        let mut c = chart!(
            &top,
            "Throughput vs load",
            "requests/s",
            0.0,
            ymax,
            (lo * 0.9..hi * 1.1).log_scale()
        );
        draw(
            &mut c,
            &[
                ("measured", &tput, blue),
                ("simulator model", &pred, grey),
                ("USL fit", &usl, green),
            ],
        )?;
        let mut c = chart!(
            &bottom,
            "p99 latency vs load",
            "seconds",
            0.0,
            lmax,
            (lo * 0.9..hi * 1.1).log_scale()
        );
        draw(
            &mut c,
            &[("p99 latency", &p99, red), ("p99 TTFT", &ttft, orange)],
        )?;
    } else {
        let pad = (hi - lo) * 0.05;
        let mut c = chart!(
            &top,
            "Throughput vs load",
            "requests/s",
            0.0,
            ymax,
            (lo - pad)..(hi + pad)
        );
        draw(
            &mut c,
            &[
                ("measured", &tput, blue),
                ("simulator model", &pred, grey),
                ("USL fit", &usl, green),
            ],
        )?;
        let mut c = chart!(
            &bottom,
            "p99 latency vs load",
            "seconds",
            0.0,
            lmax,
            (lo - pad)..(hi + pad)
        );
        draw(
            &mut c,
            &[("p99 latency", &p99, red), ("p99 TTFT", &ttft, orange)],
        )?;
    }
    root.present().map_err(|e| e.to_string())
}
