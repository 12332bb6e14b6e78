//! Where finished requests go: `requests.parquet` and per-stage HdrHistograms that become
//! `summary.json`.

use std::collections::BTreeMap;
use std::path::Path;

use aifb_core::recipe::{Slo, Validity};
use aifb_core::requests::{RequestRecord, RequestWriter, error_class};

use crate::sweep::StageRun;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Microsecond histogram up to one hour, 3 significant digits.
fn micros() -> Histogram<u64> {
    // Constant, valid bounds: 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The measured window of a stage and the SLO limits, known when the stage starts: what
/// the sink needs to count each request as it arrives, in memory that does not grow with
/// the number of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Measured window, Unix nanoseconds `[start, end)`.
    pub window: (i64, i64),
    /// TTFT limit of the SLO, nanoseconds.
    pub ttft_limit: Option<i64>,
    /// Latency limit of the SLO, nanoseconds.
    pub e2e_limit: Option<i64>,
}

/// Plans of the stages, shared by the sweep (which writes one as a stage starts) and the
/// sink (which reads it for the stage's first request).
pub type Plans = std::sync::Arc<std::sync::Mutex<BTreeMap<u32, Plan>>>;

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
    plan: Plan,
    /// Successes that ended in the measured window.
    done: u64,
    /// Of those, the ones within the SLO limits.
    good: u64,
    /// Output tokens of those.
    tokens: u64,
    /// Requests sent in the measured window (cancelled ones never were).
    sent: u64,
}

impl Default for StageStats {
    fn default() -> Self {
        Self::new()
    }
}

impl StageStats {
    /// Empty aggregates.
    pub fn new() -> Self {
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
            plan: Plan::default(),
            done: 0,
            good: 0,
            tokens: 0,
            sent: 0,
        }
    }

    /// Empty aggregates of a stage with this plan.
    pub fn planned(plan: Plan) -> Self {
        Self {
            plan,
            ..Self::new()
        }
    }

    /// Adds one finished request.
    pub fn add(&mut self, r: &RequestRecord) {
        let us = |ns: i64| u64::try_from(ns / 1_000).unwrap_or(0).max(1);
        self.requests += 1;
        if let Some(e) = r.error {
            *self.errors.entry(e).or_default() += 1;
        }
        let (from, to) = self.plan.window;
        let in_window = |t: i64| t >= from && t < to;
        if r.error != Some(error_class::CANCELLED) && in_window(r.t_sent) {
            self.sent += 1;
        }
        if r.ok && in_window(r.t_end) {
            self.done += 1;
            self.tokens += u64::from(r.output_tokens.unwrap_or(0));
            // Goodput: a success whose own TTFT and latency meet the SLO limits.
            let ttft = r.t_first_token.map(|f| f - r.t_sent);
            let good = self
                .plan
                .ttft_limit
                .is_none_or(|l| ttft.is_some_and(|v| v <= l))
                && self.plan.e2e_limit.is_none_or(|l| r.t_end - r.t_sent <= l);
            if good {
                self.good += 1;
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

/// What the validity gate looks at in one stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageEvidence {
    /// Open loop: requests sent in the measured window over those scheduled in it.
    pub achieved_ratio: Option<f64>,
    /// Open loop: p99 of the schedule lag, seconds.
    pub schedule_lag_p99: Option<f64>,
    /// Share of the machine's CPUs the generator used while measuring.
    pub generator_cpu: Option<f64>,
    /// Successful requests in the measured window.
    pub measured_ok: u64,
}

/// Why a stage's numbers describe the generator rather than the service; empty when the
/// stage is valid.
pub fn invalid_reasons(e: &StageEvidence, v: &Validity) -> Vec<String> {
    let mut out = Vec::new();
    if e.measured_ok == 0 {
        out.push("no request succeeded in the measured window".to_string());
    }
    if let Some(r) = e.achieved_ratio.filter(|r| *r < v.min_achieved_ratio) {
        out.push(format!(
            "achieved/offered rate {r:.3} < {}: the generator did not send its schedule",
            v.min_achieved_ratio
        ));
    }
    let max_lag = v.max_schedule_lag_p99.get().as_secs_f64();
    if let Some(l) = e.schedule_lag_p99.filter(|l| *l > max_lag) {
        out.push(format!(
            "schedule lag p99 {:.2} ms > {:.2} ms: requests left late",
            l * 1e3,
            max_lag * 1e3
        ));
    }
    if let Some(c) = e.generator_cpu.filter(|c| *c > v.max_generator_cpu) {
        out.push(format!(
            "the generator used {:.0} % of the CPUs (limit {:.0} %): it may be the bottleneck",
            c * 100.0,
            v.max_generator_cpu * 100.0
        ));
    }
    out
}

/// The summary of a run: one object per stage, with its validity.
pub fn summary(
    run_id: &str,
    pattern: &str,
    runs: &[StageRun],
    stats: &BTreeMap<u32, StageStats>,
    validity: &Validity,
    slo: &Slo,
    cpus: f64,
) -> Value {
    let has_slo = slo.ttft_p99.is_some() || slo.e2e_p99.is_some();
    let empty = StageStats::new();
    let stages: Vec<Value> = runs
        .iter()
        .map(|run| {
            let w = &run.window;
            let s = stats.get(&w.stage).unwrap_or(&empty);
            let secs = w.measure_secs();
            // Per-user token rate: 1 / TPOT, so its p50 is 1 / TPOT's p50 and its
            // slowest decile 1 / TPOT's p90.
            let per_user = (!s.tpot.is_empty()).then(|| {
                let rate = |q: f64| 1e6 / s.tpot.value_at_quantile(q).max(1) as f64;
                json!({"p50": rate(0.5), "p10": rate(0.9)})
            });
            let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
            let sent = s.sent as f64;
            let open = w.rate.is_some();
            let evidence = StageEvidence {
                achieved_ratio: run
                    .scheduled
                    .filter(|&n| n > 0)
                    .map(|n| (sent / n as f64).min(1.0)),
                schedule_lag_p99: (open && !s.lag.is_empty())
                    .then(|| s.lag.value_at_quantile(0.99) as f64 / 1e6),
                generator_cpu: run
                    .generator_cpu_s
                    .filter(|_| secs > 0.0 && cpus > 0.0)
                    .map(|c| c / (secs * cpus)),
                measured_ok: s.measured_ok,
            };
            let reasons = invalid_reasons(&evidence, validity);
            json!({
                "stage": w.stage,
                "level": w.level(),
                "concurrency": w.concurrency,
                "rate": w.rate,
                "calibration": w.calibration,
                "window": w,
                "requests": s.requests,
                "measured": s.measured,
                "measured_ok": s.measured_ok,
                "errors": s.errors,
                "throughput_rps": per_s(s.done as f64),
                "output_tokens_per_s": per_s(s.tokens as f64),
                "goodput_rps": has_slo.then(|| per_s(s.good as f64)),
                "user_output_tokens_per_s": per_user,
                "latency_s": quantiles(&s.latency),
                "response_time_s": quantiles(&s.response),
                "ttft_s": quantiles(&s.ttft),
                "tpot_s": quantiles(&s.tpot),
                "schedule_lag_s": quantiles(&s.lag),
                "scheduled": run.scheduled,
                "achieved_ratio": evidence.achieved_ratio,
                "generator_cpu": evidence.generator_cpu,
                "slo_missed": run.slo_missed,
                "oversaturated": run.oversaturated,
                "valid": reasons.is_empty(),
                "invalid_reasons": reasons,
            })
        })
        .collect();
    json!({"run_id": run_id, "pattern": pattern, "stages": stages})
}

/// What [`drain`] hands back: the open writer, the per-stage stats, the first write error.
pub type Drained = (RequestWriter, BTreeMap<u32, StageStats>, Option<String>);

/// Starts [`drain`] on a thread of its own, below the request tasks' priority.
///
/// Encoding and compressing Parquet row groups and checkpoint files takes milliseconds at a
/// time; on the runtime's threads it would hold up sends and skew the schedule. On its own
/// thread with a lower priority, the kernel preempts it whenever a request task is ready.
pub fn spawn(
    rx: mpsc::UnboundedReceiver<RequestRecord>,
    writer: RequestWriter,
    plans: Plans,
    checkpoint: Option<Checkpoint>,
) -> std::io::Result<std::thread::JoinHandle<Drained>> {
    std::thread::Builder::new()
        .name("aifb-sink".into())
        .spawn(move || {
            // SAFETY: setpriority on this thread's own id; a failure only leaves the
            // priority as it was.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 10);
            }
            drain(rx, writer, plans, checkpoint)
        })
}

/// Consumes records until the channel closes; returns the open writer and the stats.
///
/// It polls the channel every 5 ms rather than waiting on it, so a request task
/// that sends a record never has to wake this thread (a system call per request).
pub fn drain(
    mut rx: mpsc::UnboundedReceiver<RequestRecord>,
    mut writer: RequestWriter,
    plans: Plans,
    mut checkpoint: Option<Checkpoint>,
) -> Drained {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut stats: BTreeMap<u32, StageStats> = BTreeMap::new();
    let mut failure = None;
    let every = checkpoint
        .as_ref()
        .map_or(std::time::Duration::from_secs(3600), |c| c.every);
    let mut next_checkpoint = std::time::Instant::now() + every;
    // With checkpoints, rows wait in the checkpoint until its next part is written, then
    // move on to the final file: each row is kept once, not copied. The clock is read
    // when the channel runs dry or every 1,024 rows, not per row.
    let mut since_clock = 0u32;
    loop {
        since_clock += 1;
        if since_clock >= 1024 {
            since_clock = 0;
            if std::time::Instant::now() >= next_checkpoint {
                next_checkpoint = std::time::Instant::now() + every;
                if let Some(c) = checkpoint.as_mut() {
                    if let Err(e) = c.write() {
                        // The run goes on: the final file does not depend on checkpoints.
                        tracing::warn!("checkpoint: {e}");
                    }
                    keep(&mut writer, &mut failure, c.pending.drain(..));
                }
            }
        }
        let r = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => {
                since_clock = 1024;
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        stats
            .entry(r.stage)
            .or_insert_with(|| {
                let plan = plans
                    .lock()
                    .ok()
                    .and_then(|p| p.get(&r.stage).copied())
                    .unwrap_or_default();
                StageStats::planned(plan)
            })
            .add(&r);
        match checkpoint.as_mut() {
            Some(c) => c.pending.push(r),
            None => keep(&mut writer, &mut failure, Some(r)),
        }
    }
    if let Some(c) = checkpoint.as_mut() {
        keep(&mut writer, &mut failure, c.pending.drain(..));
    }
    (writer, stats, failure)
}

/// Partial results while a run goes on: every `every`, the requests finished since the
/// last checkpoint are written as one complete Parquet file
/// `<dir>/requests-NNNNN.parquet`. A run killed without a chance to close
/// `requests.parquet` (SIGKILL, a node failure) keeps them; `loadgen recover` joins them.
/// A run that ends normally removes the folder.
pub struct Checkpoint {
    /// The folder of the part files (`<run>/partial`).
    pub dir: std::path::PathBuf,
    /// How often.
    pub every: std::time::Duration,
    pending: Vec<RequestRecord>,
    written: u32,
}

impl Checkpoint {
    /// Checkpoints into `dir` every `every`.
    pub fn new(dir: std::path::PathBuf, every: std::time::Duration) -> Self {
        Self {
            dir,
            every,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// Writes the pending requests as the next part file (nothing when there are none).
    pub fn write(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let name = format!("requests-{:05}.parquet", self.written);
        // Written under a temporary name, then renamed: a part file is always complete.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut w = RequestWriter::create(&tmp)?;
        w.write_rows(&self.pending)?;
        w.finish(None)?;
        std::fs::rename(&tmp, self.dir.join(&name))
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        self.written += 1;
        Ok(())
    }
}

/// Adds rows to the final file; after the first write error the rest are dropped and the
/// error is kept for the end of the run.
fn keep(
    writer: &mut RequestWriter,
    failure: &mut Option<String>,
    rows: impl IntoIterator<Item = RequestRecord>,
) {
    if failure.is_none()
        && let Err(e) = writer.extend(rows)
    {
        tracing::error!("{e}");
        *failure = Some(e);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_invalidates_a_stage() {
        let v = Validity::default();
        let good = StageEvidence {
            achieved_ratio: Some(0.995),
            schedule_lag_p99: Some(0.002),
            generator_cpu: Some(0.3),
            measured_ok: 100,
        };
        assert!(invalid_reasons(&good, &v).is_empty());
        let cases = [
            (
                StageEvidence {
                    achieved_ratio: Some(0.95),
                    ..good
                },
                "achieved/offered",
            ),
            (
                StageEvidence {
                    schedule_lag_p99: Some(0.05),
                    ..good
                },
                "schedule lag",
            ),
            (
                StageEvidence {
                    generator_cpu: Some(0.97),
                    ..good
                },
                "CPUs",
            ),
            (
                StageEvidence {
                    measured_ok: 0,
                    ..good
                },
                "no request succeeded",
            ),
        ];
        for (e, want) in cases {
            let r = invalid_reasons(&e, &v);
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(r[0].contains(want), "{r:?}");
        }
        // Closed loops have no schedule: only success and CPU apply.
        let closed = StageEvidence {
            achieved_ratio: None,
            schedule_lag_p99: None,
            ..good
        };
        assert!(invalid_reasons(&closed, &v).is_empty());
    }
}
