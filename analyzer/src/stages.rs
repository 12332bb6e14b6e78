//! Per-stage aggregates from request rows: throughput over the measured window, latency
//! and TTFT percentiles of the measured requests, error rate.

use std::collections::BTreeMap;

use aifb_core::requests::RequestRow;
use aifb_core::run::{Calibration, StageWindow};
use serde::Serialize;

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Samples needed before the q-quantile is bounded: with fewer, even the largest sample
/// is below the true quantile with probability above 2.5 %, so no 95 % interval closes
/// (`qⁿ ≤ 0.025`): 6 for the median, 36 for P90, 368 for P99.
pub fn min_samples(q: f64) -> usize {
    ((0.025f64).ln() / q.ln()).ceil() as usize
}

/// Percentiles of a distribution, in seconds; `None` ("n/a") where too few samples bound it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean.
    pub mean: f64,
    /// The P99 point estimate, bounded or not (what an SLO check can still compare).
    pub p99_estimate: f64,
}

impl Quantiles {
    /// Quantiles of `values` (any order); `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let q = |p: f64| {
            (n >= min_samples(p))
                .then(|| percentile(&values, p))
                .flatten()
        };
        Some(Quantiles {
            count: n,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            mean: values.iter().sum::<f64>() / n as f64,
            p99_estimate: percentile(&values, 0.99)?,
        })
    }
}

/// Mean and 95 % interval of throughput from batch means: the measured window cut into
/// `batches` equal slices, so that correlated requests inside one slice count once.
pub fn batch_means(
    ends: &[i64],
    start: i64,
    end: i64,
    batches: usize,
) -> Option<(f64, (f64, f64))> {
    if end <= start || batches < 2 {
        return None;
    }
    let width = (end - start) as f64 / batches as f64;
    let mut counts = vec![0.0f64; batches];
    for &t in ends.iter().filter(|&&t| t >= start && t < end) {
        let b = (((t - start) as f64 / width) as usize).min(batches - 1);
        counts[b] += 1.0;
    }
    let rates: Vec<f64> = counts.iter().map(|c| c / (width / 1e9)).collect();
    let k = batches as f64;
    let mean = rates.iter().sum::<f64>() / k;
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k - 1.0);
    let t = statrs::distribution::StudentsT::new(0.0, 1.0, k - 1.0)
        .map(|d| statrs::distribution::ContinuousCDF::inverse_cdf(&d, 0.975))
        .ok()?;
    let half = t * (var / k).sqrt();
    Some((mean, (mean - half, mean + half)))
}

/// Time-averaged number of requests in flight over [start, end): the overlap of every
/// request with the window, over the window's length.
pub fn mean_in_flight(rows: &[&RequestRow], start: i64, end: i64) -> f64 {
    if end <= start {
        return 0.0;
    }
    let busy: i64 = rows
        .iter()
        .map(|r| (r.t_end.min(end) - r.t_sent.max(start)).max(0))
        .sum();
    busy as f64 / (end - start) as f64
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
    /// 95 % interval of the throughput from 10 batch means.
    pub throughput_ci95: Option<(f64, f64)>,
    /// Time-averaged requests in flight during the measured window.
    pub mean_in_flight: f64,
    /// Little's law: |in flight − throughput × mean latency| / in flight.
    pub littles_law_error: Option<f64>,
    /// P99 of the delay between intended and actual send.
    pub schedule_lag_p99: Option<f64>,
    /// Where the per-window median latency shifts inside the measured window (seconds
    /// from its start), when it does.
    pub shift_at_s: Option<f64>,
    /// Why this level's numbers should be read with care.
    pub warnings: Vec<String>,
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
            calibration: None,
        });
        w.start_ns = w.start_ns.min(r.t_intended);
        w.end_ns = w.end_ns.max(r.t_end);
        if r.phase == "measure" {
            w.measure_start_ns = w.measure_start_ns.min(r.t_intended);
            w.measure_end_ns = w.measure_end_ns.max(r.t_intended);
        }
    }
    let mut windows: Vec<StageWindow> = by_stage
        .into_values()
        .filter(|w| w.measure_end_ns > w.measure_start_ns)
        .collect();
    // In a run with open-loop stages, closed-loop ones are a rate search's calibration.
    if windows.iter().any(|w| w.rate.is_some()) {
        for w in windows.iter_mut().filter(|w| w.rate.is_none()) {
            w.calibration = Some(if w.concurrency == Some(1) {
                Calibration::Synchronous
            } else {
                Calibration::Throughput
            });
        }
    }
    windows
}

/// Splits a run's windows into the points of its load curve, ordered by level (a
/// search's rates are run in no particular order), and the calibration stages of a rate
/// search, which measure the service in another way and are kept apart.
pub fn split_calibration(windows: &[StageWindow]) -> (Vec<StageWindow>, Vec<StageWindow>) {
    let (mut curve, calibration): (Vec<StageWindow>, Vec<StageWindow>) = windows
        .iter()
        .cloned()
        .partition(|w| w.calibration.is_none());
    curve.sort_by(|a, b| a.level().total_cmp(&b.level()).then(a.stage.cmp(&b.stage)));
    (curve, calibration)
}

/// Where the median latency of successive slices of the measured window shifts, if it
/// does (E-divisive, p ≤ 0.01); `None` for a steady level or too little data.
fn steadiness_shift(ok: &[&&RequestRow], start: i64, end: i64) -> Option<f64> {
    const SLICES: usize = 16;
    if end <= start || ok.len() < SLICES * 4 {
        return None;
    }
    let width = (end - start) as f64 / SLICES as f64;
    let mut slices: Vec<Vec<f64>> = vec![Vec::new(); SLICES];
    for r in ok {
        if r.t_sent >= start && r.t_sent < end {
            let i = (((r.t_sent - start) as f64 / width) as usize).min(SLICES - 1);
            slices[i].push(r.latency_s());
        }
    }
    if slices.iter().any(Vec::is_empty) {
        return None;
    }
    let medians: Vec<f64> = slices
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    let settings = crate::changepoint::Settings {
        pvalue: 0.01,
        permutations: 199,
        min_size: 4,
        seed: 7,
    };
    let found = crate::changepoint::e_divisive_1d(&medians, &settings);
    // A shift smaller than 10 % of the median is noise for capacity planning.
    let overall = {
        let mut m = medians.clone();
        m.sort_by(f64::total_cmp);
        m[m.len() / 2]
    };
    found
        .into_iter()
        .find(|&i| {
            let before = medians[..i].iter().sum::<f64>() / i as f64;
            let after = medians[i..].iter().sum::<f64>() / (medians.len() - i) as f64;
            (after - before).abs() > 0.10 * overall
        })
        .map(|i| i as f64 * width / 1e9)
}

/// Adds the load generator's own verdicts from `summary.json` to the stages' warnings:
/// what only the generator knows (achieved/offered rate against its schedule, its own CPU
/// share) and where an SLO-bounded sweep stopped. Checks the analysis makes itself from the
/// rows (schedule lag, no success) are not repeated.
pub fn add_generator_verdicts(stages: &mut [StageSummary], loadgen: &serde_json::Value) {
    for entry in loadgen["stages"].as_array().into_iter().flatten() {
        let Some(stage) = entry["stage"].as_u64() else {
            continue;
        };
        let Some(s) = stages.iter_mut().find(|s| u64::from(s.stage) == stage) else {
            continue;
        };
        for reason in entry["invalid_reasons"].as_array().into_iter().flatten() {
            if let Some(r) = reason.as_str()
                && (r.contains("achieved/offered") || r.contains("CPUs"))
            {
                s.warnings.push(format!("load generator: {r}"));
            }
        }
        let missed: Vec<&str> = entry["slo_missed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        if !missed.is_empty() {
            // A rate search runs on past misses; a sweep with stop_at_slo_miss stops.
            let what = if loadgen["search"].is_object() {
                "missed its SLOs"
            } else {
                "the sweep stopped after this level: it missed its SLOs"
            };
            s.warnings.push(format!("{what} ({})", missed.join(", ")));
        }
    }
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
            let rows_ok: Vec<&RequestRow> = rows.iter().filter(|r| r.ok).copied().collect();
            let ends: Vec<i64> = rows_ok.iter().map(|r| r.t_end).collect();
            let throughput_ci95 = batch_means(&ends, w.measure_start_ns, w.measure_end_ns, 10).map(|(_, ci)| ci);
            let all: Vec<&RequestRow> = rows.to_vec();
            let in_flight = mean_in_flight(&all, w.measure_start_ns, w.measure_end_ns);
            let throughput = per_s(done.len() as f64);
            let latency = Quantiles::of(ok.iter().map(|r| r.latency_s()).collect());
            let littles_law_error =
                latency.filter(|_| in_flight > 0.0).map(|q| (in_flight - throughput * q.mean).abs() / in_flight);
            let lag = Quantiles::of(measured.iter().map(|r| (r.t_sent - r.t_intended) as f64 / 1e9).collect());
            let shift_at_s = steadiness_shift(&ok, w.measure_start_ns, w.measure_end_ns);
            let mut warnings = Vec::new();
            if ok.is_empty() {
                warnings.push("no successful request in the measured window".to_string());
            }
            if let Some(e) = littles_law_error.filter(|e| *e > 0.05) {
                warnings.push(format!("Little's law off by {:.0} %: in-flight, throughput and latency disagree", e * 100.0));
            }
            if let Some(n) = w.concurrency.filter(|_| !ok.is_empty())
                && in_flight < 0.95 * f64::from(n) {
                    warnings.push(format!(
                        "only {in_flight:.2} of {n} users in flight on average: the client, not the service, set the pace"
                    ));
                }
            if let Some(p99) = lag.and_then(|q| q.p99).filter(|l| w.rate.is_some() && *l > 0.010) {
                warnings.push(format!("schedule lag p99 {:.1} ms: the generator fell behind its arrival schedule", p99 * 1e3));
            }
            if let Some(t) = shift_at_s {
                warnings.push(format!("not steady: latency shifts {t:.1} s into the measured window"));
            }
            if latency.is_some_and(|q| q.p99.is_none()) {
                warnings.push(format!("{} successful requests: too few for a bounded P99 (368 needed)", ok.len()));
            }
            StageSummary {
                throughput_ci95,
                mean_in_flight: in_flight,
                littles_law_error,
                schedule_lag_p99: lag.and_then(|q| q.p99),
                shift_at_s,
                warnings,
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
                throughput_rps: throughput,
                output_tokens_per_s: per_s(tokens as f64),
                latency,
                ttft: Quantiles::of(ok.iter().filter_map(|r| r.ttft_s()).collect()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_needed_to_bound_a_quantile() {
        assert_eq!(min_samples(0.99), 368);
        assert_eq!(min_samples(0.90), 36);
        assert_eq!(min_samples(0.50), 6);
        let q = Quantiles::of((1..=367).map(f64::from).collect()).unwrap();
        assert_eq!((q.p50, q.p99), (Some(184.0), None));
        assert_eq!(
            Quantiles::of((1..=368).map(f64::from).collect())
                .unwrap()
                .p99,
            Some(365.0)
        );
    }

    #[test]
    fn in_flight_and_batch_means() {
        let r = |sent: i64, end: i64| RequestRow {
            t_sent: sent,
            t_end: end,
            ok: true,
            ..RequestRow::default()
        };
        let rows = [r(0, 100), r(50, 150), r(0, 200)];
        let refs: Vec<&RequestRow> = rows.iter().collect();
        // Over [0, 200): busy 100 + 100 + 200 = 400 → 2 in flight on average.
        assert_eq!(mean_in_flight(&refs, 0, 200), 2.0);
        // 10 batches of 1 s with 5 completions each: 5/s, zero-width interval.
        let ends: Vec<i64> = (0..50).map(|i| i * 200_000_000 + 1).collect();
        let (mean, (lo, hi)) = batch_means(&ends, 0, 10_000_000_000, 10).unwrap();
        assert!((mean - 5.0).abs() < 1e-9 && (hi - lo).abs() < 1e-9);
    }

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
            calibration: None,
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
        assert_eq!(s.latency.unwrap().p99, None, "2 samples cannot bound a P99");
        assert!(s.warnings.iter().any(|w| w.contains("bounded P99")));
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
    }
}
