//! The SLO watch: per-stage p99s of the measured requests, so a sweep can stop at the
//! first level that misses the recipe's SLOs (`workload.stop_at_slo_miss`) instead of
//! pushing an already saturated service further.
//!
//! The same definitions as the analyzer's SLO line: TTFT and end-to-end latency from send,
//! error rate over the measured requests.

use std::sync::Mutex;

use aifb_core::recipe::Slo;
use hdrhistogram::Histogram;

/// Aggregates of the running stage's measured requests.
#[derive(Debug)]
struct Watch {
    ttft: Histogram<u64>,
    e2e: Histogram<u64>,
    measured: u64,
    failed: u64,
}

fn micros() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

/// The SLO watch of one generator.
#[derive(Debug)]
pub struct SloWatch {
    inner: Mutex<Option<Watch>>,
}

impl Default for SloWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SloWatch {
    /// An empty watch.
    pub fn new() -> SloWatch {
        SloWatch {
            inner: Mutex::new(None),
        }
    }

    /// Forgets the previous stage.
    pub fn reset(&self) {
        if let Ok(mut w) = self.inner.lock() {
            *w = match (micros(), micros()) {
                (Some(ttft), Some(e2e)) => Some(Watch {
                    ttft,
                    e2e,
                    measured: 0,
                    failed: 0,
                }),
                _ => None,
            };
        }
    }

    /// Adds one measured request: TTFT and latency from send in nanoseconds when it
    /// succeeded, `None` when it failed.
    pub fn add(&self, outcome: Option<(Option<i64>, i64)>) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let Some(w) = guard.as_mut() else { return };
        w.measured += 1;
        match outcome {
            None => w.failed += 1,
            Some((ttft, e2e)) => {
                let us = |ns: i64| u64::try_from(ns / 1_000).unwrap_or(0).max(1);
                if let Some(t) = ttft {
                    let _ = w.ttft.record(us(t));
                }
                let _ = w.e2e.record(us(e2e));
            }
        }
    }

    /// Measured requests of the stage so far and how many of them failed.
    pub fn measured(&self) -> (u64, u64) {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|w| (w.measured, w.failed)))
            .unwrap_or((0, 0))
    }

    /// The objectives the stage missed, one phrase each; empty when it met them all (or
    /// measured nothing).
    pub fn missed(&self, slo: &Slo) -> Vec<String> {
        let Ok(guard) = self.inner.lock() else {
            return Vec::new();
        };
        let Some(w) = guard.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let p99 =
            |h: &Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e6);
        if let (Some(limit), Some(v)) = (slo.ttft_p99, p99(&w.ttft))
            && v > limit.as_secs_f64()
        {
            out.push(format!("ttft_p99 {:.1} ms > {limit}", v * 1e3));
        }
        if let (Some(limit), Some(v)) = (slo.e2e_p99, p99(&w.e2e))
            && v > limit.as_secs_f64()
        {
            out.push(format!("e2e_p99 {:.1} ms > {limit}", v * 1e3));
        }
        if let Some(limit) = slo.error_rate
            && w.measured > 0
        {
            let rate = w.failed as f64 / w.measured as f64;
            if rate > limit {
                out.push(format!("error_rate {rate:.4} > {limit}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aifb_core::duration::HumanDuration;

    #[test]
    fn a_stage_misses_exactly_the_objectives_it_breaks() {
        let w = SloWatch::new();
        w.reset();
        for i in 0..1000 {
            // TTFT 10 ms, latency 100 ms, one failure in 100.
            if i % 100 == 0 {
                w.add(None);
            } else {
                w.add(Some((Some(10_000_000), 100_000_000)));
            }
        }
        let slo = |ttft: u64, e2e: u64, err: f64| Slo {
            ttft_p99: Some(HumanDuration::millis(ttft)),
            e2e_p99: Some(HumanDuration::millis(e2e)),
            error_rate: Some(err),
        };
        assert!(w.missed(&slo(20, 200, 0.02)).is_empty());
        let m = w.missed(&slo(5, 50, 0.001));
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].starts_with("ttft_p99 10.0 ms"), "{m:?}");
        w.reset();
        assert!(
            w.missed(&slo(5, 50, 0.001)).is_empty(),
            "a fresh stage has measured nothing"
        );
    }
}
