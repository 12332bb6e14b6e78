//! `report.html`: one self-contained page (inline CSS and SVG, no network, no script) with
//! the verdict and usable capacity first, then the plots, the level table, bottleneck
//! evidence per level, validity warnings and the environment.

use aifb_core::run::Manifest;

use crate::report::{Report, fmt_level};

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Strips the XML declaration so an SVG file can be inlined.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => "",
    }
}

/// Energy figures at each level, when the GPUs report energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Energy {
    /// Load level.
    pub level: f64,
    /// Joules per successful request.
    pub joules_per_request: f64,
    /// Joules per output token, when tokens were counted.
    pub joules_per_token: Option<f64>,
}

/// Renders the page. `plots` are (caption, SVG text) pairs, inlined in order.
pub fn render(
    report: &Report,
    manifest: Option<&Manifest>,
    plots: &[(&str, String)],
    energy: &[Energy],
) -> String {
    let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |s| format!("{:.1}", s * 1e3));
    let unit = &report.level_unit;
    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!(
        "<title>aifb report: {}</title>",
        escape(&report.name)
    ));
    h.push_str(
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}\
         h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}\
         .verdict{font-size:1.15em;background:#f3f7fb;border-left:4px solid #1f77b4;padding:.8em 1em}\
         table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}\
         th{background:#f5f5f5}td.l,th.l{text-align:left}.warn{color:#a33}figure{margin:1em 0}\
         figcaption{font-size:.85em;color:#555}svg{max-width:100%;height:auto}</style></head><body>\n",
    );
    h.push_str(&format!("<h1>aifb report: {}</h1>\n", escape(&report.name)));
    h.push_str(&format!(
        "<p>Run <code>{}</code>, {} loop, {}.</p>\n",
        escape(&report.run_id),
        escape(&report.pattern),
        escape(&report.status)
    ));
    h.push_str(&format!(
        "<p class=\"verdict\" id=\"verdict\"><strong>{}</strong>",
        escape(&report.headline())
    ));
    if let (Some(b), Some(p)) = (&report.saturation_bottleneck, &report.max_throughput) {
        h.push_str(&format!(
            "<br>Bottleneck at {} {unit}: <strong>{}</strong> ({}).",
            fmt_level(p.level),
            escape(b.class),
            escape(&b.evidence.join("; "))
        ));
    }
    h.push_str("</p>\n");
    if let Some(u) = &report.usl {
        h.push_str(&format!(
            "<p>USL fit: σ = {:.4}, κ = {:.2e}, λ = {:.3} req/s per user; R² = {:.3}{}.</p>\n",
            u.model.sigma,
            u.model.kappa,
            u.model.lambda,
            u.r_squared,
            if u.good { "" } else { " (poor fit)" }
        ));
    }
    for (caption, svg) in plots {
        h.push_str(&format!(
            "<figure>{}<figcaption>{}</figcaption></figure>\n",
            inline_svg(svg),
            escape(caption)
        ));
    }
    let llm = report.stages.iter().any(|s| s.ttft.is_some());
    let ttft_head = if llm {
        "<th>TTFT p50 ms</th><th>TTFT p99 ms</th>"
    } else {
        ""
    };
    h.push_str(&format!(
        "<h2>Levels</h2>\n<table><tr><th>stage</th><th>{unit}</th><th>throughput req/s</th><th>95 % interval</th>\
         <th>p50 ms</th><th>p99 ms</th>{ttft_head}<th>measured</th><th>errors</th>\
         <th class=\"l\">bottleneck</th></tr>\n"
    ));
    for (i, s) in report.stages.iter().enumerate() {
        let ci = s
            .throughput_ci95
            .map_or(String::new(), |(a, b)| format!("{a:.2} – {b:.2}"));
        let top = report
            .bottlenecks
            .get(i)
            .and_then(|f| f.first())
            .map_or(String::new(), |f| format!("{} ({:.2})", f.class, f.score));
        let ttft_cells = if llm {
            format!(
                "<td>{}</td><td>{}</td>",
                ms(s.ttft.and_then(|q| q.p50)),
                ms(s.ttft.and_then(|q| q.p99))
            )
        } else {
            String::new()
        };
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{ci}</td><td>{}</td><td>{}</td>{ttft_cells}<td>{}</td><td>{:.1} %</td><td class=\"l\">{}</td></tr>\n",
            s.stage,
            fmt_level(s.level),
            s.throughput_rps,
            ms(s.latency.and_then(|q| q.p50)),
            ms(s.latency.and_then(|q| q.p99)),
            s.measured,
            s.error_rate * 100.0,
            escape(&top)
        ));
    }
    h.push_str("</table>\n");
    if report.bottlenecks.iter().any(|f| !f.is_empty()) {
        h.push_str("<h2>Bottleneck evidence</h2>\n<table><tr><th>stage</th><th>");
        h.push_str(&escape(unit));
        h.push_str(
            "</th><th class=\"l\">class</th><th>score</th><th class=\"l\">evidence</th></tr>\n",
        );
        for (s, findings) in report.stages.iter().zip(&report.bottlenecks) {
            for f in findings {
                h.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{:.2}</td><td class=\"l\">{}</td></tr>\n",
                    s.stage,
                    fmt_level(s.level),
                    escape(f.class),
                    f.score,
                    escape(&f.evidence.join("; "))
                ));
            }
        }
        h.push_str("</table>\n");
    }
    if !energy.is_empty() {
        h.push_str(&format!("<h2>Energy</h2>\n<table><tr><th>{unit}</th><th>J per request</th><th>J per token</th></tr>\n"));
        for e in energy {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{:.2}</td><td>{}</td></tr>\n",
                fmt_level(e.level),
                e.joules_per_request,
                e.joules_per_token
                    .map_or("n/a".into(), |j| format!("{j:.3}"))
            ));
        }
        h.push_str("</table>\n");
    }
    let warnings: Vec<String> = report
        .knee_warning
        .iter()
        .map(|w| format!("knee: {w}"))
        .chain(report.stages.iter().flat_map(|s| {
            s.warnings
                .iter()
                .map(move |w| format!("stage {} ({} {unit}): {w}", s.stage, fmt_level(s.level)))
        }))
        .collect();
    if !warnings.is_empty() {
        h.push_str("<h2>Validity</h2>\n<ul>\n");
        for w in warnings {
            h.push_str(&format!("<li class=\"warn\">{}</li>\n", escape(&w)));
        }
        h.push_str("</ul>\n");
    }
    if let Some(m) = manifest {
        let e = &m.environment;
        h.push_str("<h2>Environment</h2>\n<table>\n");
        for (k, v) in [
            ("host", e.hostname.clone()),
            ("kernel", e.kernel.clone()),
            ("CPU", format!("{} ({} logical)", e.cpu, e.cpus)),
            ("GPU", e.gpu.clone().unwrap_or_else(|| "none seen".into())),
            ("GPU driver", e.gpu_driver.clone().unwrap_or_default()),
            ("service", e.service_version.clone().unwrap_or_default()),
            ("aifb", m.aifb_version.clone()),
            ("started", m.started_at.clone()),
            ("workload hash", m.workload_hash.clone().unwrap_or_default()),
        ] {
            h.push_str(&format!(
                "<tr><th class=\"l\">{k}</th><td class=\"l\">{}</td></tr>\n",
                escape(&v)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_inlines() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(
            inline_svg("<?xml version=\"1.0\"?>\n<svg a=\"1\"></svg>"),
            "<svg a=\"1\"></svg>"
        );
        let r = Report::new(None, None, Vec::new());
        let page = render(&r, None, &[("plot", "<svg></svg>".into())], &[]);
        assert!(
            page.starts_with("<!DOCTYPE html>")
                && page.contains("<figure><svg></svg>")
                && page.ends_with("</html>\n")
        );
        assert!(
            !page.contains("<script") && !page.contains("http"),
            "self-contained"
        );
    }
}
