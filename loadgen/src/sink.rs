//! Where finished requests go: `requests.parquet` and per-stage HdrHistograms that become
//! `summary.json`.

use std::collections::BTreeMap;
use std::path::Path;

use aifb_core::requests::{RequestRecord, RequestWriter};
use aifb_core::run::StageWindow;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Microsecond histogram up to one hour, 3 significant digits.
fn micros() -> Histogram<u64> {
    // Constant, valid bounds: 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Aggregates of one stage.
#[derive(Debug)]
pub struct StageStats {
    requests: u64,
    measured: u64,
    measured_ok: u64,
    errors: BTreeMap<&'static str, u64>,
    latency: Histogram<u64>,
    response: Histogram<u64>,
    ttft: Histogram<u64>,
    tpot: Histogram<u64>,
    lag: Histogram<u64>,
    ok_ends: Vec<i64>,
    output_tokens_ends: Vec<(i64, u32)>,
}

impl StageStats {
    fn new() -> Self {
        Self {
            requests: 0,
            measured: 0,
            measured_ok: 0,
            errors: BTreeMap::new(),
            latency: micros(),
            response: micros(),
            ttft: micros(),
            tpot: micros(),
            lag: micros(),
            ok_ends: Vec::new(),
            output_tokens_ends: Vec::new(),
        }
    }

    fn add(&mut self, r: &RequestRecord) {
        let us = |ns: i64| u64::try_from(ns / 1_000).unwrap_or(0).max(1);
        self.requests += 1;
        if let Some(e) = r.error {
            *self.errors.entry(e).or_default() += 1;
        }
        if r.ok {
            self.ok_ends.push(r.t_end);
            if let Some(n) = r.output_tokens {
                self.output_tokens_ends.push((r.t_end, n));
            }
        }
        if r.phase != "measure" {
            return;
        }
        self.measured += 1;
        let _ = self.lag.record(us(r.t_sent - r.t_intended));
        if !r.ok {
            return;
        }
        self.measured_ok += 1;
        let _ = self.latency.record(us(r.t_end - r.t_sent));
        let _ = self.response.record(us(r.t_end - r.t_intended));
        if let Some(ft) = r.t_first_token {
            let _ = self.ttft.record(us(ft - r.t_sent));
            if let Some(n) = r.output_tokens.filter(|&n| n > 1) {
                let _ = self.tpot.record(us((r.t_end - ft) / i64::from(n - 1)));
            }
        }
    }
}

fn quantiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let s = |v: u64| v as f64 / 1e6;
    json!({
        "count": h.len(),
        "p50": s(h.value_at_quantile(0.50)),
        "p90": s(h.value_at_quantile(0.90)),
        "p99": s(h.value_at_quantile(0.99)),
        "max": s(h.max()),
        "mean": h.mean() / 1e6,
    })
}

/// The summary of a run: one object per stage.
pub fn summary(
    run_id: &str,
    pattern: &str,
    windows: &[StageWindow],
    stats: &BTreeMap<u32, StageStats>,
) -> Value {
    let empty = StageStats::new();
    let stages: Vec<Value> = windows
        .iter()
        .map(|w| {
            let s = stats.get(&w.stage).unwrap_or(&empty);
            let secs = w.measure_secs();
            let in_window = |t: i64| t >= w.measure_start_ns && t < w.measure_end_ns;
            let done = s.ok_ends.iter().filter(|&&t| in_window(t)).count();
            let tokens: u64 = s
                .output_tokens_ends
                .iter()
                .filter(|(t, _)| in_window(*t))
                .map(|(_, n)| u64::from(*n))
                .sum();
            let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
            json!({
                "stage": w.stage,
                "level": w.level(),
                "concurrency": w.concurrency,
                "rate": w.rate,
                "window": w,
                "requests": s.requests,
                "measured": s.measured,
                "measured_ok": s.measured_ok,
                "errors": s.errors,
                "throughput_rps": per_s(done as f64),
                "output_tokens_per_s": per_s(tokens as f64),
                "latency_s": quantiles(&s.latency),
                "response_time_s": quantiles(&s.response),
                "ttft_s": quantiles(&s.ttft),
                "tpot_s": quantiles(&s.tpot),
                "schedule_lag_s": quantiles(&s.lag),
            })
        })
        .collect();
    json!({"run_id": run_id, "pattern": pattern, "stages": stages})
}

/// Consumes records until the channel closes; returns the open writer and the stats.
pub async fn drain(
    mut rx: mpsc::UnboundedReceiver<RequestRecord>,
    mut writer: RequestWriter,
) -> (RequestWriter, BTreeMap<u32, StageStats>, Option<String>) {
    let mut stats: BTreeMap<u32, StageStats> = BTreeMap::new();
    let mut failure = None;
    while let Some(r) = rx.recv().await {
        stats.entry(r.stage).or_insert_with(StageStats::new).add(&r);
        if failure.is_none()
            && let Err(e) = writer.push(r)
        {
            tracing::error!("{e}");
            failure = Some(e);
        }
    }
    (writer, stats, failure)
}

/// Opens the requests file.
pub fn create(path: &Path) -> Result<RequestWriter, String> {
    RequestWriter::create(path)
}

impl StageStats {
    /// Error classes and their counts.
    pub fn error_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.errors.iter().map(|(k, v)| (*k, *v))
    }
}
