//! The streaming per-level summary: counts, throughput and latency percentiles of a
//! `requests.parquet` file of any size, in bounded memory. Batches are read one at a time
//! with only the needed columns decoded; latencies go into HdrHistograms (microseconds, 3
//! significant digits: percentiles within 0.1 %).

use std::collections::BTreeMap;
use std::path::Path;

use aifb_core::requests;
use aifb_core::run::{Manifest, StageWindow};
use arrow_array::Array;
use hdrhistogram::Histogram;
use serde::Serialize;

/// One level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Stage index.
    pub stage: u32,
    /// Load level (from the manifest; 0 without one).
    pub level: f64,
    /// Rows of the stage.
    pub requests: u64,
    /// Rows started in the measured window.
    pub measured: u64,
    /// Failed among the measured.
    pub failed: u64,
    /// Successful completions inside the measured window per second (`None` without a
    /// manifest window).
    pub throughput_rps: Option<f64>,
    /// Latency percentiles of successful measured requests, seconds: p50, p90, p99, p99.9.
    pub latency_s: Option<[f64; 4]>,
    /// TTFT p50 and p99, seconds.
    pub ttft_s: Option<[f64; 2]>,
}

struct Acc {
    requests: u64,
    measured: u64,
    failed: u64,
    done: u64,
    latency: Histogram<u64>,
    ttft: Histogram<u64>,
}

impl Acc {
    fn new() -> Self {
        // Constant, valid bounds: 1 µs to 1 h, 3 significant digits.
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self {
            requests: 0,
            measured: 0,
            failed: 0,
            done: 0,
            latency: h(),
            ttft: h(),
        }
    }
}

/// Summarises a requests file in one streaming pass.
pub fn summarize(path: &Path) -> Result<(Vec<Level>, Option<Manifest>), String> {
    // The footer (with the stage windows) is read before the data.
    let manifest: Option<Manifest> = requests::scan_footer(path)?
        .map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                format!(
                    "{}: footer aifb.run is not a run manifest: {e}",
                    path.display()
                )
            })
        })
        .transpose()?;
    let windows: BTreeMap<u32, StageWindow> = manifest
        .iter()
        .flat_map(|m| m.stages.iter().map(|w| (w.stage, w.clone())))
        .collect();
    let mut acc: BTreeMap<u32, Acc> = BTreeMap::new();
    let us = |ns: i64| {
        u64::try_from(ns / 1_000)
            .unwrap_or(0)
            .clamp(1, 3_600_000_000)
    };
    requests::scan(path, |c| {
        for i in 0..c.len() {
            let stage = c.stage.value(i);
            let a = acc.entry(stage).or_insert_with(Acc::new);
            a.requests += 1;
            let ok = c.ok.value(i);
            if ok && let Some(w) = windows.get(&stage) {
                let end = c.t_end.value(i);
                if end >= w.measure_start_ns && end < w.measure_end_ns {
                    a.done += 1;
                }
            }
            if c.phase(i) != Some("measure") {
                continue;
            }
            a.measured += 1;
            if !ok {
                a.failed += 1;
                continue;
            }
            let sent = c.t_sent.value(i);
            let _ = a.latency.record(us(c.t_end.value(i) - sent));
            if !c.t_first_token.is_null(i) {
                let _ = a.ttft.record(us(c.t_first_token.value(i) - sent));
            }
        }
        Ok(())
    })?;
    let s = |v: u64| v as f64 / 1e6;
    let levels = acc
        .into_iter()
        .map(|(stage, a)| {
            let w = windows.get(&stage);
            Level {
                stage,
                level: w.map_or(0.0, StageWindow::level),
                requests: a.requests,
                measured: a.measured,
                failed: a.failed,
                throughput_rps: w
                    .filter(|w| w.measure_secs() > 0.0)
                    .map(|w| a.done as f64 / w.measure_secs()),
                latency_s: (!a.latency.is_empty())
                    .then(|| [0.5, 0.9, 0.99, 0.999].map(|q| s(a.latency.value_at_quantile(q)))),
                ttft_s: (!a.ttft.is_empty())
                    .then(|| [0.5, 0.99].map(|q| s(a.ttft.value_at_quantile(q)))),
            }
        })
        .collect();
    Ok((levels, manifest))
}
