//! `aifb export --prometheus URL RUN`: a run's series from Prometheus' range API into
//! `metrics.parquet`, in the schema of the loadgen's own scrapes (`aifb.metrics/1`), so
//! the analyzer reads either the same way.
//!
//! Every series carrying the run's `run_id` target label is fetched over the run's time
//! window, in chunks of at most 10 000 points per series (Prometheus refuses more than
//! 11 000). The run identity labels that file_sd added (`run_id`, `role`, `node`, `job_id`,
//! plus `job` and `instance`) are dropped, a label Prometheus renamed to `exported_X`
//! gets its name back, and the `role` becomes the `source` column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aifb_core::exit::Failure;
use aifb_core::metrics::{MetricSample, MetricsWriter};
use aifb_core::recipe::Recipe;
use aifb_core::run::{Manifest, RunDir};

/// Labels that identify the target, not the series.
const TARGET_LABELS: &[&str] = &[
    "__name__", "run_id", "role", "node", "job_id", "job", "instance",
];

/// The `source` column for a target role.
pub fn source_of(role: &str) -> &'static str {
    match role {
        "exporter" => "exporter",
        "service" => "service",
        r if r.starts_with("loadgen") => "loadgen",
        _ => "prometheus",
    }
}

/// Turns one series of a `query_range` matrix into samples.
pub fn samples_of(series: &serde_json::Value) -> Result<Vec<MetricSample>, String> {
    let metric = series["metric"]
        .as_object()
        .ok_or("a series without \"metric\"")?;
    let name = metric
        .get("__name__")
        .and_then(|v| v.as_str())
        .ok_or("a series without __name__")?
        .to_string();
    let source = source_of(metric.get("role").and_then(|v| v.as_str()).unwrap_or(""));
    let mut labels: Vec<(String, String)> = metric
        .iter()
        .filter(|(k, _)| !TARGET_LABELS.contains(&k.as_str()))
        .map(|(k, v)| {
            let k = k.strip_prefix("exported_").unwrap_or(k).to_string();
            (k, v.as_str().unwrap_or_default().to_string())
        })
        .collect();
    labels.sort();
    let values = series["values"]
        .as_array()
        .ok_or("a series without values")?;
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let t = v[0].as_f64().ok_or("a sample without a time")?;
        let value = match v[1].as_str() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some(s) => s
                .parse::<f64>()
                .map_err(|_| format!("sample value {s:?}"))?,
            None => return Err("a sample without a value".into()),
        };
        out.push(MetricSample {
            t_ms: (t * 1000.0).round() as i64,
            source: source.to_string(),
            metric: name.clone(),
            labels: labels.clone(),
            value,
        });
    }
    Ok(out)
}

fn unix_s(rfc3339: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// `aifb export`.
pub fn export(
    prometheus: &str,
    root: &Path,
    run: &str,
    step: Option<Duration>,
    output: Option<PathBuf>,
) -> Result<(), Failure> {
    let (path, m) = crate::runs::find(root, Some(run))?;
    let dir = RunDir::new(&path);
    let step = step
        .or_else(|| {
            Recipe::load(&dir.lock())
                .ok()
                .map(|r| r.monitoring.prometheus.scrape_interval.get())
        })
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_millis(100));
    let start = unix_s(&m.started_at).ok_or_else(|| {
        Failure::input(format!(
            "{}: started_at {:?} is not RFC 3339",
            dir.manifest().display(),
            m.started_at
        ))
    })?;
    let end = match &m.finished_at {
        Some(f) => unix_s(f).ok_or_else(|| {
            Failure::input(format!(
                "{}: finished_at {f:?} is not RFC 3339",
                dir.manifest().display()
            ))
        })?,
        None => aifb_core::clock::wall_ns() as f64 / 1e9,
    };
    let out = match output {
        Some(o) => o,
        None => {
            // The loadgen's own scrapes are kept next to the export.
            let own = dir.metrics();
            let kept = dir.root.join("metrics.loadgen.parquet");
            if own.is_file() && !kept.exists() {
                std::fs::rename(&own, &kept)
                    .map_err(|e| Failure::check(format!("{}: {e}", own.display())))?;
                eprintln!(
                    "aifb: the loadgen's metrics.parquet is kept as {}",
                    kept.display()
                );
            }
            own
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
    let samples = rt.block_on(fetch(prometheus, &m, start, end, step))?;
    let mut writer = MetricsWriter::create(&out).map_err(Failure::input)?;
    let n = samples.len();
    writer.extend(samples).map_err(Failure::check)?;
    let manifest = serde_json::to_string(&m).map_err(|e| Failure::check(e.to_string()))?;
    writer.finish(Some(&manifest)).map_err(Failure::check)?;
    eprintln!(
        "aifb: {n} samples of run {} written to {}",
        m.id,
        out.display()
    );
    if n == 0 {
        return Err(Failure::check(format!(
            "{prometheus} has no series with run_id=\"{}\" between {} and {}",
            m.id,
            m.started_at,
            m.finished_at.as_deref().unwrap_or("now")
        )));
    }
    Ok(())
}

async fn fetch(
    prometheus: &str,
    m: &Manifest,
    start: f64,
    end: f64,
    step: Duration,
) -> Result<Vec<MetricSample>, Failure> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| Failure::check(format!("HTTP client: {e}")))?;
    let url = format!("{}/api/v1/query_range", prometheus.trim_end_matches('/'));
    let query = format!("{{run_id=\"{}\"}}", m.id);
    let step_s = step.as_secs_f64();
    let chunk = step_s * 10_000.0;
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let to = (from + chunk).min(end);
        let resp = client
            .get(&url)
            .query(&[
                ("query", query.as_str()),
                ("start", &format!("{from:.3}")),
                ("end", &format!("{to:.3}")),
                ("step", &format!("{step_s:.3}")),
            ])
            .send()
            .await
            .map_err(|e| Failure::input(format!("{url}: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Failure::input(format!("{url}: not a Prometheus API answer: {e}")))?;
        if !status.is_success() || body["status"] != "success" {
            return Err(Failure::input(format!(
                "{url}: {} {}",
                status.as_u16(),
                body["error"].as_str().unwrap_or("query failed")
            )));
        }
        for series in body["data"]["result"].as_array().into_iter().flatten() {
            out.extend(samples_of(series).map_err(|e| Failure::input(format!("{url}: {e}")))?);
        }
        // Range queries include both ends: the next chunk starts one step later.
        from = to + step_s;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_becomes_samples_without_target_labels() {
        let series = serde_json::json!({
            "metric": {"__name__": "aifb_process_cpu_seconds_total", "run_id": "BM-1", "role": "exporter",
                       "node": "n1", "job_id": "7", "job": "aifb", "instance": "n1:9100",
                       "exported_service": "redis"},
            "values": [[1700000000.5, "1.25"], [1700000001, "+Inf"]]
        });
        let s = samples_of(&series).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].t_ms, 1_700_000_000_500);
        assert_eq!(s[0].source, "exporter");
        assert_eq!(s[0].metric, "aifb_process_cpu_seconds_total");
        assert_eq!(
            s[0].labels,
            vec![("service".to_string(), "redis".to_string())]
        );
        assert_eq!(s[0].value, 1.25);
        assert!(s[1].value.is_infinite());
    }

    #[test]
    fn roles_map_to_sources_and_garbage_is_an_error() {
        assert_eq!(source_of("loadgen-3"), "loadgen");
        assert_eq!(source_of("service"), "service");
        assert_eq!(source_of("prometheus"), "prometheus");
        assert!(samples_of(&serde_json::json!({"metric": {}, "values": []})).is_err());
        let bad = serde_json::json!({"metric": {"__name__": "x"}, "values": [[1, "nope"]]});
        assert!(samples_of(&bad).is_err());
    }
}
