//! SVG plots drawn with plotters and an embedded DejaVu font (no fontconfig needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use plotters::coord::Shift;

use crate::report::Report;

/// A plot that can be drawn on any plotters backend.
trait Draw {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Draws `plot` as `path` (SVG) and beside it with a `.png` extension.
fn write_svg_and_png(path: &Path, size: (u32, u32), plot: &impl Draw) -> Result<(), String> {
    plot.draw(SVGBackend::new(path, size).into_drawing_area())?;
    plot.draw(BitMapBackend::new(&path.with_extension("png"), size).into_drawing_area())
}

static FONT: Once = Once::new();

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

/// One labelled line of a plot.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Colour.
    pub color: RGBColor,
}

/// A colour for the i-th of several runs.
pub fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

/// A panel: title, y-axis label, lines.
pub struct Panel<'a> {
    /// Title.
    pub title: &'a str,
    /// y-axis description.
    pub y_desc: &'a str,
    /// Lines.
    pub lines: &'a [Line],
}

fn draw_lines<'a, DB, X, Y>(
    c: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: &[Line],
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for line in lines.iter().filter(|l| !l.points.is_empty()) {
        let color = line.color;
        c.draw_series(LineSeries::new(
            line.points.iter().cloned(),
            color.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label(line.label.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        // Measured points get markers; model curves (many points) are lines only.
        if line.points.len() <= 40 {
            c.draw_series(
                line.points
                    .iter()
                    .map(|p| Circle::new(*p, 4, color.filled())),
            )
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

/// Two stacked panels over the same load axis (log scale when the levels span 8x or more).
pub fn two_panels(
    top: Panel<'_>,
    bottom: Panel<'_>,
    unit: &str,
    path: &Path,
) -> Result<(), String> {
    register_font();
    let xs = top
        .lines
        .iter()
        .chain(bottom.lines)
        .flat_map(|l| l.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        return Err("nothing to plot".into());
    }
    let lo = lo.max(1e-9);
    let hi = hi.max(lo * 1.0001);
    let log_x = hi / lo >= 8.0;
    write_svg_and_png(
        path,
        (900, 720),
        &TwoPanels {
            top,
            bottom,
            unit,
            lo,
            hi,
            log_x,
        },
    )
}

struct TwoPanels<'a> {
    top: Panel<'a>,
    bottom: Panel<'a>,
    unit: &'a str,
    lo: f64,
    hi: f64,
    log_x: bool,
}

impl Draw for TwoPanels<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let TwoPanels {
            top,
            bottom,
            unit,
            lo,
            hi,
            log_x,
        } = self;
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top_area, bottom_area) = root.split_vertically(360);
        for (area, panel) in [(&top_area, &top), (&bottom_area, &bottom)] {
            let ymax = panel
                .lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
                .max(1e-9)
                * 1.15;
            let mut builder = ChartBuilder::on(area);
            builder
                .caption(panel.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64);
            macro_rules! finish {
                ($c:expr) => {{
                    let mut c = $c.map_err(|e| e.to_string())?;
                    c.configure_mesh()
                        .light_line_style(WHITE)
                        .x_labels(8)
                        .x_label_formatter(&|v: &f64| {
                            crate::report::fmt_level((v * 100.0).round() / 100.0)
                        })
                        .x_desc(format!("load ({unit})"))
                        .y_desc(panel.y_desc)
                        .label_style(("sans-serif", 13))
                        .draw()
                        .map_err(|e| e.to_string())?;
                    draw_lines(&mut c, panel.lines)?;
                }};
            }
            if *log_x {
                finish!(builder.build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..ymax));
            } else {
                let pad = (hi - lo) * 0.05;
                finish!(builder.build_cartesian_2d((lo - pad)..(hi + pad), 0.0..ymax));
            }
        }
        root.present().map_err(|e| e.to_string())
    }
}

/// Throughput (with the simulator model and the USL fit) and p99 latency and TTFT versus load.
pub fn throughput_latency(report: &Report, path: &Path) -> Result<(), String> {
    let stages = &report.stages;
    if stages.is_empty() {
        return Err("no stage to plot".into());
    }
    let tput: Vec<(f64, f64)> = stages.iter().map(|s| (s.level, s.throughput_rps)).collect();
    let pred: Vec<(f64, f64)> = match &report.simulator {
        Some(p) => stages
            .iter()
            .zip(&p.throughput_rps)
            .map(|(s, x)| (s.level, *x))
            .collect(),
        None => Vec::new(),
    };
    let (lo, hi) = tput.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let usl: Vec<(f64, f64)> = match &report.usl {
        Some(u) if lo > 0.0 && hi > lo => (0..=100)
            .map(|i| lo * (hi / lo).powf(f64::from(i) / 100.0))
            .map(|n| (n, u.model.throughput(n)))
            .collect(),
        _ => Vec::new(),
    };
    // The band as one closed envelope: upper edge left to right, lower edge back.
    let band: Vec<(f64, f64)> = match &report.usl {
        Some(u) if lo > 0.0 && hi > lo => {
            let grid: Vec<f64> = (0..=50)
                .map(|i| lo * (hi / lo).powf(f64::from(i) / 50.0))
                .collect();
            let edges: Option<Vec<(f64, f64)>> = grid.iter().map(|&n| u.band(n)).collect();
            edges
                .map(|e| {
                    let upper = grid.iter().zip(&e).map(|(n, (_, up))| (*n, *up));
                    let lower = grid
                        .iter()
                        .zip(&e)
                        .rev()
                        .map(|(n, (low, _))| (*n, low.max(0.0)));
                    upper.chain(lower).collect()
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let p99: Vec<(f64, f64)> = stages
        .iter()
        .filter_map(|s| s.latency.map(|q| (s.level, q.p99_estimate)))
        .collect();
    let ttft: Vec<(f64, f64)> = stages
        .iter()
        .filter_map(|s| s.ttft.map(|q| (s.level, q.p99_estimate)))
        .collect();
    let top = [
        Line {
            label: "measured".into(),
            points: tput,
            color: palette(0),
        },
        Line {
            label: "simulator model".into(),
            points: pred,
            color: palette(7),
        },
        Line {
            label: "USL fit".into(),
            points: usl,
            color: palette(2),
        },
        Line {
            label: "USL 95 % band".into(),
            points: band,
            color: RGBColor(152, 223, 138),
        },
        Line {
            label: "X_max".into(),
            points: report
                .max_throughput
                .map(|m| vec![(m.level, 0.0), (m.level, m.throughput_rps)])
                .unwrap_or_default(),
            color: BLACK,
        },
    ];
    let bottom = [
        Line {
            label: "p99 latency".into(),
            points: p99,
            color: palette(1),
        },
        Line {
            label: "p99 TTFT".into(),
            points: ttft,
            color: palette(4),
        },
    ];
    throughput_and_p99(&top, &bottom, &report.level_unit, path)
}

/// The standard pair of panels: throughput lines on top, p99 latency lines below.
pub fn throughput_and_p99(
    top: &[Line],
    bottom: &[Line],
    unit: &str,
    path: &Path,
) -> Result<(), String> {
    two_panels(
        Panel {
            title: "Throughput vs load",
            y_desc: "requests/s",
            lines: top,
        },
        Panel {
            title: "p99 latency vs load",
            y_desc: "seconds",
            lines: bottom,
        },
        unit,
        path,
    )
}

/// P50 and P99 of latency and TTFT versus load, on a logarithmic time axis.
pub fn latency_log(report: &Report, path: &Path) -> Result<(), String> {
    register_font();
    let pick = |f: &dyn Fn(&crate::stages::StageSummary) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .stages
            .iter()
            .filter_map(|s| f(s).filter(|v| *v > 0.0).map(|v| (s.level, v)))
            .collect()
    };
    let lines = [
        Line {
            label: "p50 latency".into(),
            points: pick(&|s| s.latency.and_then(|q| q.p50)),
            color: palette(0),
        },
        Line {
            label: "p99 latency".into(),
            points: pick(&|s| s.latency.map(|q| q.p99_estimate)),
            color: palette(1),
        },
        Line {
            label: "p50 TTFT".into(),
            points: pick(&|s| s.ttft.and_then(|q| q.p50)),
            color: palette(2),
        },
        Line {
            label: "p99 TTFT".into(),
            points: pick(&|s| s.ttft.map(|q| q.p99_estimate)),
            color: palette(4),
        },
    ];
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    if all.is_empty() {
        return Err("no latency to plot".into());
    }
    let (xlo, xhi) = all.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let (ylo, yhi) = all.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    let xhi = xhi.max(xlo * 1.0001);
    let unit = report.level_unit.as_str();
    write_svg_and_png(
        path,
        (900, 400),
        &LatencyLog {
            lines,
            xlo,
            xhi,
            ylo,
            yhi,
            unit,
        },
    )
}

struct LatencyLog<'a> {
    lines: [Line; 4],
    xlo: f64,
    xhi: f64,
    ylo: f64,
    yhi: f64,
    unit: &'a str,
}

impl Draw for LatencyLog<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let LatencyLog {
            lines,
            xlo,
            xhi,
            ylo,
            yhi,
            unit,
        } = self;
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut c = ChartBuilder::on(&root)
            .caption("Latency and TTFT vs load (log scale)", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (xlo * 0.9..xhi * 1.1).log_scale(),
                (ylo * 0.8..yhi * 1.25).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .light_line_style(WHITE)
            .x_labels(8)
            .x_label_formatter(&|v: &f64| crate::report::fmt_level((v * 100.0).round() / 100.0))
            .y_label_formatter(&|v: &f64| format!("{:.3}", v))
            .x_desc(format!("load ({unit})"))
            .y_desc("seconds")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut c, lines.as_slice())?;
        root.present().map_err(|e| e.to_string())
    }
}

/// The latency percentile spectrum at one level (HdrHistogram style): latency against the
/// percentile, with the percentile axis stretched as −log10(1 − p).
pub fn spectrum(points: &[(f64, f64)], title: &str, path: &Path) -> Result<(), String> {
    register_font();
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(p, _)| *p < 1.0)
        .map(|(p, v)| (-(1.0 - p).log10(), *v))
        .collect();
    if pts.len() < 2 {
        return Err("too few points for a spectrum".into());
    }
    let xmax = pts.iter().map(|p| p.0).fold(0.0f64, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max) * 1.15;
    write_svg_and_png(
        path,
        (900, 360),
        &Spectrum {
            pts,
            xmax,
            ymax,
            title,
        },
    )
}

struct Spectrum<'a> {
    pts: Vec<(f64, f64)>,
    xmax: f64,
    ymax: f64,
    title: &'a str,
}

impl Draw for Spectrum<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let Spectrum {
            pts,
            xmax,
            ymax,
            title,
        } = self;
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax.ceil().max(1.0), 0.0..ymax.max(1e-9))
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .light_line_style(WHITE)
            // One tick per "nine": 0 %, 90 %, 99 %, 99.9 %...
            .x_labels(xmax.ceil().max(1.0) as usize + 1)
            .x_label_formatter(&|x: &f64| {
                let p = (1.0 - 10f64.powf(-x)) * 100.0;
                if p >= 99.5 {
                    format!("{p:.1}%")
                } else {
                    format!("{p:.0}%")
                }
            })
            .x_desc("percentile")
            .y_desc("latency (s)")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let line = [Line {
            label: "service latency".into(),
            points: pts.clone(),
            color: palette(1),
        }];
        draw_lines(&mut c, &line)?;
        root.present().map_err(|e| e.to_string())
    }
}

/// Throughput (top) and every bottleneck class's score (bottom) over the same load axis:
/// where throughput stops growing, which finding rises.
pub fn bottlenecks(report: &Report, path: &Path) -> Result<(), String> {
    let mut classes: Vec<&str> = report
        .bottlenecks
        .iter()
        .flatten()
        .map(|f| f.class)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return Err("no bottleneck finding to plot".into());
    }
    let scores: Vec<Line> = classes
        .iter()
        .enumerate()
        .map(|(i, class)| Line {
            label: (*class).to_string(),
            points: report
                .stages
                .iter()
                .zip(&report.bottlenecks)
                .map(|(s, f)| {
                    (
                        s.level,
                        f.iter()
                            .find(|x| x.class == *class)
                            .map_or(0.0, |x| x.score),
                    )
                })
                .collect(),
            color: palette(i),
        })
        .collect();
    let tput = [Line {
        label: "throughput".into(),
        points: report
            .stages
            .iter()
            .map(|s| (s.level, s.throughput_rps))
            .collect(),
        color: BLACK,
    }];
    two_panels(
        Panel {
            title: "Throughput vs load",
            y_desc: "requests/s",
            lines: &tput,
        },
        Panel {
            title: "Bottleneck scores vs load (0.85 and above: saturated)",
            y_desc: "score",
            lines: &scores,
        },
        &report.level_unit,
        path,
    )
}
