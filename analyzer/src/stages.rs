//! Per-stage aggregates from request rows: throughput over the measured window, latency
//! and TTFT percentiles of the measured requests, error rate.

use std::collections::BTreeMap;

use aifb_core::requests::RequestRow;
use aifb_core::run::StageWindow;
use serde::Serialize;

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles of a distribution, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Quantiles {
    /// Quantiles of `values` (any order); `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        Some(Quantiles {
            count: values.len(),
            p50: percentile(&values, 0.50)?,
            p90: percentile(&values, 0.90)?,
            p99: percentile(&values, 0.99)?,
        })
    }
}

/// Aggregates of one load level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSummary {
    /// Stage index.
    pub stage: u32,
    /// Load level (users or requests/s).
    pub level: f64,
    /// Length of the measured window, seconds.
    pub measure_s: f64,
    /// Requests recorded in the stage (all phases).
    pub requests: usize,
    /// Requests started in the measured window.
    pub measured: usize,
    /// Failed requests among the measured.
    pub failed: usize,
    /// Failed / measured.
    pub error_rate: f64,
    /// Error classes among the measured.
    pub errors: BTreeMap<String, usize>,
    /// Successful completions inside the measured window per second.
    pub throughput_rps: f64,
    /// Output tokens of those completions per second.
    pub output_tokens_per_s: f64,
    /// Service latency (send to end) of successful measured requests.
    pub latency: Option<Quantiles>,
    /// Time to first token of successful measured requests.
    pub ttft: Option<Quantiles>,
}

/// Windows for rows that come without a manifest: from the rows' own measured phase.
pub fn windows_from_rows(rows: &[RequestRow]) -> Vec<StageWindow> {
    let mut by_stage: BTreeMap<u32, StageWindow> = BTreeMap::new();
    for r in rows {
        let w = by_stage.entry(r.stage).or_insert(StageWindow {
            stage: r.stage,
            concurrency: r.concurrency,
            rate: r.rate,
            start_ns: i64::MAX,
            measure_start_ns: i64::MAX,
            measure_end_ns: i64::MIN,
            end_ns: i64::MIN,
        });
        w.start_ns = w.start_ns.min(r.t_intended);
        w.end_ns = w.end_ns.max(r.t_end);
        if r.phase == "measure" {
            w.measure_start_ns = w.measure_start_ns.min(r.t_intended);
            w.measure_end_ns = w.measure_end_ns.max(r.t_intended);
        }
    }
    by_stage
        .into_values()
        .filter(|w| w.measure_end_ns > w.measure_start_ns)
        .collect()
}

/// Aggregates every stage of `windows`.
pub fn summarize(rows: &[RequestRow], windows: &[StageWindow]) -> Vec<StageSummary> {
    let mut by_stage: BTreeMap<u32, Vec<&RequestRow>> = BTreeMap::new();
    for r in rows {
        by_stage.entry(r.stage).or_default().push(r);
    }
    windows
        .iter()
        .map(|w| {
            let rows = by_stage.get(&w.stage).map(Vec::as_slice).unwrap_or(&[]);
            let measured: Vec<&&RequestRow> =
                rows.iter().filter(|r| r.phase == "measure").collect();
            let failed = measured.iter().filter(|r| !r.ok).count();
            let mut errors = BTreeMap::new();
            for r in measured.iter().filter(|r| !r.ok) {
                *errors
                    .entry(r.error.clone().unwrap_or_else(|| "unknown".into()))
                    .or_insert(0) += 1;
            }
            let ok: Vec<&&RequestRow> = measured.iter().filter(|r| r.ok).copied().collect();
            let secs = w.measure_secs();
            let in_window = |r: &&&RequestRow| {
                r.ok && r.t_end >= w.measure_start_ns && r.t_end < w.measure_end_ns
            };
            let done: Vec<&&RequestRow> = rows.iter().filter(|r| in_window(r)).collect();
            let tokens: u64 = done
                .iter()
                .filter_map(|r| r.output_tokens)
                .map(u64::from)
                .sum();
            let per_s = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
            StageSummary {
                stage: w.stage,
                level: w.level(),
                measure_s: secs,
                requests: rows.len(),
                measured: measured.len(),
                failed,
                error_rate: if measured.is_empty() {
                    0.0
                } else {
                    failed as f64 / measured.len() as f64
                },
                errors,
                throughput_rps: per_s(done.len() as f64),
                output_tokens_per_s: per_s(tokens as f64),
                latency: Quantiles::of(ok.iter().map(|r| r.latency_s()).collect()),
                ttft: Quantiles::of(ok.iter().filter_map(|r| r.ttft_s()).collect()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 0.0), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn row(stage: u32, phase: &str, sent: i64, end: i64, ok: bool) -> RequestRow {
        RequestRow {
            stage,
            concurrency: Some(2),
            phase: phase.into(),
            t_intended: sent,
            t_sent: sent,
            t_first_token: Some(sent + 10),
            t_end: end,
            ok,
            error: (!ok).then(|| "timeout".to_string()),
            output_tokens: Some(4),
            ..RequestRow::default()
        }
    }

    #[test]
    fn throughput_counts_completions_in_the_window() {
        let w = StageWindow {
            stage: 0,
            concurrency: Some(2),
            rate: None,
            start_ns: 0,
            measure_start_ns: 1_000,
            measure_end_ns: 3_000,
            end_ns: 4_000,
        };
        let rows = vec![
            row(0, "warmup", 0, 1_500, true), // ends inside: counts for throughput
            row(0, "measure", 1_000, 2_000, true),
            row(0, "measure", 2_000, 3_500, true), // ends after the window
            row(0, "measure", 2_500, 2_600, false),
        ];
        let s = &summarize(&rows, &[w])[0];
        assert_eq!(s.measured, 3);
        assert_eq!(s.failed, 1);
        assert!((s.throughput_rps - 2.0 / 2e-6).abs() < 1e-6);
        assert_eq!(s.errors.get("timeout"), Some(&1));
        assert_eq!(s.latency.unwrap().count, 2);
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
    }
}
