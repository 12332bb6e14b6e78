//! Which level each stage runs: the recipe's fixed levels, or a rate search that picks the
//! next rate from what the stages so far measured.
//!
//! - `sweep` (GuideLLM's sweep): a synchronous stage (one user, no think time) and a
//!   throughput probe (many users) measure the two ends of the service's range; then
//!   `points` open-loop rates evenly spaced strictly between the two throughputs. The
//!   curve then covers the range the service can actually serve, whatever it is.
//! - `slo`: a throughput probe bounds the rate, then a bisection finds the highest rate
//!   whose stage meets every objective of the recipe's `slo`, to within `precision`. Its
//!   levels do not increase: the analysis orders the stages by rate.
//!
//! The planner is pure: it sees only the outcomes of the stages already run.

use aifb_core::recipe::{Pattern, Search, SearchMode, Workload};
use aifb_core::run::{Calibration, SearchResult};

/// The load of one stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Closed loop: users (no think time for calibration stages).
    Users(u32),
    /// Open loop: requests per second.
    Rate(f64),
}

/// One stage to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Its load.
    pub level: Level,
    /// Set for the calibration stages of a search.
    pub calibration: Option<Calibration>,
}

/// What a finished stage measured, as far as the planner cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The stage that ran.
    pub step: Step,
    /// Successful requests completed per second over the measured window.
    pub throughput: f64,
    /// Every objective of the recipe's `slo` was met (and the stage was not
    /// over-saturated, and the generator kept its schedule).
    pub met_slo: bool,
}

/// Chooses the stages of a run.
#[derive(Debug, Clone)]
pub struct Planner {
    kind: Kind,
    ended: Option<String>,
}

#[derive(Debug, Clone)]
enum Kind {
    Fixed { levels: Vec<f64>, pattern: Pattern },
    Search(Search),
}

impl Planner {
    /// The planner of `workload`.
    pub fn new(workload: &Workload) -> Planner {
        let kind = match &workload.search {
            Some(s) => Kind::Search(s.clone()),
            None => Kind::Fixed {
                levels: workload.levels.clone(),
                pattern: workload.pattern,
            },
        };
        Planner { kind, ended: None }
    }

    /// The next stage after `done`, or `None` when the run is complete.
    pub fn next(&mut self, done: &[Outcome]) -> Option<Step> {
        match &self.kind {
            Kind::Fixed { levels, pattern } => levels.get(done.len()).map(|&l| Step {
                level: match pattern {
                    Pattern::Closed => Level::Users(l as u32),
                    Pattern::Open => Level::Rate(l),
                },
                calibration: None,
            }),
            Kind::Search(s) => match s.mode {
                SearchMode::Sweep => self.sweep(s.clone(), done),
                SearchMode::Slo => self.slo(s.clone(), done),
            },
        }
    }

    fn end(&mut self, why: impl Into<String>) -> Option<Step> {
        self.ended.get_or_insert_with(|| why.into());
        None
    }

    fn sweep(&mut self, s: Search, done: &[Outcome]) -> Option<Step> {
        let calibrate = |level, c| {
            Some(Step {
                level,
                calibration: Some(c),
            })
        };
        match done.len() {
            0 => return calibrate(Level::Users(1), Calibration::Synchronous),
            1 => return calibrate(Level::Users(s.users), Calibration::Throughput),
            _ => {}
        }
        let (sync, max) = (done[0].throughput, done[1].throughput);
        if !(sync > 0.0 || max > 0.0) {
            return self.end("no request succeeded in the calibration stages");
        }
        let k = done.len() - 2;
        if k >= s.points as usize {
            return self.end(format!("{} rates run", s.points));
        }
        Some(Step {
            level: Level::Rate(sweep_rates(sync, max, s.points)[k]),
            calibration: None,
        })
    }

    fn slo(&mut self, s: Search, done: &[Outcome]) -> Option<Step> {
        if done.is_empty() {
            return Some(Step {
                level: Level::Users(s.users),
                calibration: Some(Calibration::Throughput),
            });
        }
        let probe = done[0].throughput;
        if probe <= 0.0 {
            return self.end("no request succeeded in the throughput probe");
        }
        let (lo, hi) = bracket(&done[1..]);
        if done.len() >= s.max_stages as usize {
            return self.end(format!("{} stages run (max_stages)", s.max_stages));
        }
        let rate = match (lo, hi) {
            // Start at the probe's throughput: the most the service completes.
            (None, None) => probe,
            // Everything run so far met the SLOs: go up.
            (Some(lo), None) => lo * 2.0,
            (lo, Some(hi)) => {
                let lo = lo.unwrap_or(0.0);
                if hi - lo <= s.precision * hi {
                    return self.end(format!(
                        "passing and failing rates within {:.0} %",
                        s.precision * 100.0
                    ));
                }
                // Below a hundredth of the probe nothing useful is left to find.
                if lo == 0.0 && hi < probe / 100.0 {
                    return self.end("no rate down to 1 % of the probe's throughput met the SLOs");
                }
                (lo + hi) / 2.0
            }
        };
        Some(Step {
            level: Level::Rate(round_rate(rate)),
            calibration: None,
        })
    }

    /// What the search found, once [`Planner::next`] has returned `None`; `None` for fixed
    /// levels.
    pub fn found(&self, done: &[Outcome]) -> Option<SearchResult> {
        let Kind::Search(s) = &self.kind else {
            return None;
        };
        let through = |c| {
            done.iter()
                .find(|o| o.step.calibration == Some(c))
                .map(|o| o.throughput)
        };
        let rates: Vec<Outcome> = done
            .iter()
            .filter(|o| o.step.calibration.is_none())
            .copied()
            .collect();
        let (lo, hi) = if s.mode == SearchMode::Slo {
            bracket(&rates)
        } else {
            (None, None)
        };
        Some(SearchResult {
            mode: match s.mode {
                SearchMode::Sweep => "sweep",
                SearchMode::Slo => "slo",
            }
            .into(),
            synchronous_rps: through(Calibration::Synchronous),
            throughput_rps: through(Calibration::Throughput),
            max_rate_meeting_slo: lo,
            min_rate_missing_slo: hi,
            ended: self
                .ended
                .clone()
                .unwrap_or_else(|| "the run was stopped".into()),
        })
    }
}

/// The highest rate that met the SLOs below the lowest that missed them, and that lowest
/// missing rate. A rate that met them above one that missed them (noise around the limit)
/// does not raise the passing bound.
fn bracket(rates: &[Outcome]) -> (Option<f64>, Option<f64>) {
    let rate = |o: &Outcome| match o.step.level {
        Level::Rate(r) => Some(r),
        Level::Users(_) => None,
    };
    let hi = rates
        .iter()
        .filter(|o| !o.met_slo)
        .filter_map(rate)
        .min_by(f64::total_cmp);
    let lo = rates
        .iter()
        .filter(|o| o.met_slo)
        .filter_map(rate)
        .filter(|r| hi.is_none_or(|h| *r < h))
        .max_by(f64::total_cmp);
    (lo, hi)
}

/// `points` rates evenly spaced strictly between the synchronous throughput `sync` and
/// the probe's `max`. When the probe did not beat the synchronous stage (a service that
/// serves one request at a time), the rates spread over (0, max] instead.
pub fn sweep_rates(sync: f64, max: f64, points: u32) -> Vec<f64> {
    let n = f64::from(points);
    let (lo, hi) = if max > sync * 1.01 {
        (sync, max)
    } else {
        (0.0, sync.max(max) * (n + 1.0) / n)
    };
    (1..=points)
        .map(|k| round_rate(lo + (hi - lo) * f64::from(k) / (n + 1.0)))
        .collect()
}

/// A rate rounded to three significant digits, so stage labels stay readable.
fn round_rate(r: f64) -> f64 {
    if !(r.is_finite() && r > 0.0) {
        return r;
    }
    let scale = 10f64.powi(2 - r.log10().floor() as i32);
    (r * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(yaml: &str) -> Workload {
        let text = format!(
            "name: t\nservice: {{kind: simulator}}\nslo: {{e2e_p99: 1s}}\nworkload:\n  pattern: open\n{yaml}"
        );
        aifb_core::recipe::Recipe::parse(&text)
            .expect("valid recipe")
            .workload
    }

    /// Runs a planner against a service whose throughput at `n` users is `capacity(n)`
    /// and which meets the SLOs below `limit` requests/s.
    fn drive(w: &Workload, capacity: impl Fn(u32) -> f64, limit: f64) -> (Vec<Outcome>, Planner) {
        let mut p = Planner::new(w);
        let mut done = Vec::new();
        while let Some(step) = p.next(&done) {
            let (throughput, met_slo) = match step.level {
                Level::Users(n) => (capacity(n), true),
                Level::Rate(r) => (r.min(capacity(1000)), r < limit),
            };
            done.push(Outcome {
                step,
                throughput,
                met_slo,
            });
            assert!(done.len() < 100, "the planner never ends");
        }
        (done, p)
    }

    #[test]
    fn fixed_levels_run_in_order() {
        let w = workload("  levels: [1, 2.5, 4]\n");
        let (done, p) = drive(&w, |_| 1.0, 10.0);
        let levels: Vec<Level> = done.iter().map(|o| o.step.level).collect();
        assert_eq!(
            levels,
            vec![Level::Rate(1.0), Level::Rate(2.5), Level::Rate(4.0)]
        );
        assert!(p.found(&done).is_none());
    }

    #[test]
    fn sweep_calibrates_then_spreads_rates_between_the_ends() {
        let w = workload("  search: {mode: sweep, users: 64, points: 4}\n");
        let (done, p) = drive(&w, |n| 10.0 * f64::from(n.min(10)), 1e9);
        assert_eq!(done.len(), 6);
        assert_eq!(done[0].step.level, Level::Users(1));
        assert_eq!(done[0].step.calibration, Some(Calibration::Synchronous));
        assert_eq!(done[1].step.level, Level::Users(64));
        assert_eq!(done[1].step.calibration, Some(Calibration::Throughput));
        // Synchronous 10 req/s, probe 100 req/s: 4 rates strictly between.
        let rates: Vec<Level> = done[2..].iter().map(|o| o.step.level).collect();
        assert_eq!(
            rates,
            vec![
                Level::Rate(28.0),
                Level::Rate(46.0),
                Level::Rate(64.0),
                Level::Rate(82.0)
            ]
        );
        let found = p.found(&done).expect("a search");
        assert_eq!(found.synchronous_rps, Some(10.0));
        assert_eq!(found.throughput_rps, Some(100.0));
        assert_eq!(found.ended, "4 rates run");
    }

    #[test]
    fn sweep_of_a_serial_service_spreads_below_its_rate() {
        // The probe did no better than one user: rates over (0, 5 × 5/4].
        assert_eq!(sweep_rates(5.0, 5.0, 4), vec![1.25, 2.5, 3.75, 5.0]);
        assert_eq!(sweep_rates(5.0, 4.0, 1), vec![5.0]);
    }

    #[test]
    fn sweep_ends_when_nothing_succeeds() {
        let w = workload("  search: {mode: sweep}\n");
        let (done, p) = drive(&w, |_| 0.0, 1.0);
        assert_eq!(done.len(), 2);
        assert!(p.found(&done).unwrap().ended.contains("no request"));
    }

    #[test]
    fn slo_search_brackets_the_limit_within_its_precision() {
        let w = workload("  search: {mode: slo, users: 32, precision: 0.02, max_stages: 30}\n");
        // Capacity 200 req/s; the SLO holds below 137 req/s.
        let (done, p) = drive(&w, |n| 200.0f64.min(20.0 * f64::from(n)), 137.0);
        assert_eq!(done[0].step.level, Level::Users(32));
        assert_eq!(
            done[1].step.level,
            Level::Rate(200.0),
            "starts at the probe"
        );
        let found = p.found(&done).unwrap();
        let (lo, hi) = (
            found.max_rate_meeting_slo.unwrap(),
            found.min_rate_missing_slo.unwrap(),
        );
        assert!(lo < 137.0 && hi >= 137.0, "{lo} {hi}");
        assert!(hi - lo <= 0.02 * hi, "{lo} {hi}");
        assert!(found.ended.contains("within 2 %"), "{}", found.ended);
        assert!(done.len() < 15, "bisection, not a scan: {}", done.len());
    }

    #[test]
    fn slo_search_goes_up_when_the_probe_rate_passes() {
        let w = workload("  search: {mode: slo, users: 4, max_stages: 6}\n");
        // The probe with 4 users sees 40 req/s, but the SLO holds up to 1,000 req/s.
        let (done, p) = drive(&w, |n| 10.0 * f64::from(n), 1000.0);
        let rates: Vec<Level> = done[1..].iter().map(|o| o.step.level).collect();
        assert_eq!(rates[0], Level::Rate(40.0));
        assert_eq!(rates[1], Level::Rate(80.0));
        assert_eq!(done.len(), 6, "stops at max_stages");
        let found = p.found(&done).unwrap();
        assert!(found.ended.contains("max_stages"), "{}", found.ended);
        assert_eq!(found.min_rate_missing_slo, None);
    }

    #[test]
    fn slo_search_gives_up_when_no_rate_passes() {
        let w = workload("  search: {mode: slo, users: 4, max_stages: 50}\n");
        let (done, p) = drive(&w, |n| 10.0 * f64::from(n), 0.0);
        let found = p.found(&done).unwrap();
        assert_eq!(found.max_rate_meeting_slo, None);
        assert!(found.ended.contains("1 %"), "{}", found.ended);
    }

    #[test]
    fn a_noisy_pass_above_a_failure_does_not_raise_the_bound() {
        let o = |r: f64, met_slo: bool| Outcome {
            step: Step {
                level: Level::Rate(r),
                calibration: None,
            },
            throughput: r,
            met_slo,
        };
        assert_eq!(
            bracket(&[
                o(100.0, false),
                o(50.0, true),
                o(75.0, false),
                o(90.0, true)
            ]),
            (Some(50.0), Some(75.0))
        );
    }

    #[test]
    fn rates_keep_three_significant_digits() {
        assert_eq!(round_rate(123.456), 123.0);
        assert_eq!(round_rate(0.012345), 0.0123);
        assert_eq!(round_rate(4.0), 4.0);
    }
}
