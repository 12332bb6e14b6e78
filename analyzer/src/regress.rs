//! The regression gate: `analyzer regress base new`.
//!
//! 1. **Comparability.** Runs compare only when they ran the same workload (workload hash)
//!    with the same pattern and levels; a different service version, CPU, GPU or driver is
//!    reported as a warning.
//! 2. **Pairing.** Levels are paired by their load value.
//! 3. **Verdicts.** For P99 latency, P99 TTFT and throughput at each level, the ratio
//!    new/base gets a 95 % interval from a block bootstrap: each run's measured window is
//!    cut into time batches and batches, not requests, are resampled, because requests close
//!    in time are correlated. With tolerance t (P99 +10 %, throughput −10 % by default):
//!    - REGRESSED: the whole interval is worse than the tolerance allows;
//!    - IMPROVED: the whole interval is better by more than the tolerance;
//!    - UNCHANGED: the whole interval lies within the tolerance (equivalence), or the
//!      difference is below the noise floor;
//!    - INCONCLUSIVE: anything else; the report says how many times more samples would
//!      narrow the interval enough.
//!
//!    Success rates are compared with Fisher's exact test: REGRESSED when the new rate is
//!    lower by more than the tolerance (in points) and p < 0.05. An error class that the base
//!    run never saw is REGRESSED outright.

use std::collections::{BTreeMap, BTreeSet};

use aifb_core::requests::RequestRow;
use aifb_core::run::{Manifest, StageWindow};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::{Rng, RngExt};
use serde::Serialize;

use crate::stages::percentile;

/// The verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Worse beyond the tolerance.
    Regressed,
    /// Better beyond the tolerance.
    Improved,
    /// Equivalent within the tolerance.
    Unchanged,
    /// The data cannot tell.
    Inconclusive,
}

/// Tolerances of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerances {
    /// Relative P99 increase tolerated.
    pub p99: f64,
    /// Relative throughput decrease tolerated.
    pub throughput: f64,
    /// Success-rate decrease tolerated, in percentage points.
    pub success_points: f64,
    /// Latency differences below this many seconds are noise.
    pub noise_floor_s: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            p99: 0.10,
            throughput: 0.10,
            success_points: 1.0,
            noise_floor_s: 0.001,
        }
    }
}

/// One compared metric at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Load level.
    pub level: f64,
    /// `p99_latency`, `p99_ttft`, `throughput`, `success_rate`, `error_classes`.
    pub metric: String,
    /// Base value.
    pub base: f64,
    /// New value.
    pub new: f64,
    /// new / base.
    pub ratio: f64,
    /// 95 % interval of the ratio (bootstrap), when computed.
    pub ci95: Option<(f64, f64)>,
    /// p-value, for the exact test.
    pub p_value: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
}

/// A change in a metric the gate does not act on, with its false-discovery-controlled
/// significance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// Load level.
    pub level: f64,
    /// `p50_latency`, `p50_ttft`.
    pub metric: String,
    /// Base value.
    pub base: f64,
    /// New value.
    pub new: f64,
    /// new / base.
    pub ratio: f64,
    /// Two-sided bootstrap p-value of "no change".
    pub p_value: f64,
    /// Benjamini–Hochberg adjusted p-value across every observation of the comparison.
    pub q_value: f64,
    /// q ≤ 0.05.
    pub significant: bool,
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the input order.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// The comparison of two runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Why the runs cannot be compared (exit 4), if so.
    pub not_comparable: Option<String>,
    /// Differences that do not prevent the comparison.
    pub warnings: Vec<String>,
    /// Findings, level by level.
    pub findings: Vec<Finding>,
    /// Ungated metrics, for information.
    pub ungated: Vec<Observation>,
    /// Tolerances used.
    pub tolerances: Tolerances,
}

impl Comparison {
    /// The worst verdict: any REGRESSED, else any INCONCLUSIVE, else UNCHANGED or IMPROVED.
    pub fn overall(&self) -> Verdict {
        let v: Vec<Verdict> = self.findings.iter().map(|f| f.verdict).collect();
        if v.contains(&Verdict::Regressed) {
            Verdict::Regressed
        } else if v.contains(&Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else if v.contains(&Verdict::Improved) {
            Verdict::Improved
        } else {
            Verdict::Unchanged
        }
    }
}

/// One run as the gate sees it.
pub struct Run<'a> {
    /// Its manifest (from the Parquet footer).
    pub manifest: &'a Manifest,
    /// Its request rows.
    pub rows: &'a [RequestRow],
}

/// Checks that two runs may be compared; returns the reason if not, and warnings.
pub fn comparable(base: &Manifest, new: &Manifest) -> (Option<String>, Vec<String>) {
    let mut warnings = Vec::new();
    if base.pattern != new.pattern {
        return (
            Some(format!(
                "pattern differs: {} vs {}",
                base.pattern, new.pattern
            )),
            warnings,
        );
    }
    match (&base.workload_hash, &new.workload_hash) {
        (Some(a), Some(b)) if a != b => {
            return (
                Some(format!("workload differs (hash {a} vs {b})")),
                warnings,
            );
        }
        (None, _) | (_, None) => {
            warnings.push("a run has no workload hash: workloads not checked".into())
        }
        _ => {}
    }
    let levels = |m: &Manifest| {
        m.stages
            .iter()
            .map(|s| s.level().to_bits())
            .collect::<BTreeSet<u64>>()
    };
    if levels(base).is_disjoint(&levels(new)) {
        return (Some("no load level in common".into()), warnings);
    }
    let (a, b) = (&base.environment, &new.environment);
    for (what, x, y) in [
        ("service version", &a.service_version, &b.service_version),
        ("GPU", &a.gpu, &b.gpu),
        ("GPU driver", &a.gpu_driver, &b.gpu_driver),
    ] {
        if x != y {
            warnings.push(format!("{what} differs: {x:?} vs {y:?}"));
        }
    }
    if a.cpu != b.cpu || a.cpus != b.cpus {
        warnings.push(format!(
            "CPU differs: {} x{} vs {} x{}",
            a.cpu, a.cpus, b.cpu, b.cpus
        ));
    }
    if base.nodes.len() != new.nodes.len() {
        warnings.push(format!(
            "node count differs: {} vs {}",
            base.nodes.len(),
            new.nodes.len()
        ));
    }
    (None, warnings)
}

const BATCHES: usize = 10;

/// Reads one value from a request.
type Measure = fn(&RequestRow) -> Option<f64>;
const RESAMPLES: usize = 1000;

/// Per-batch samples of a level's measured window: requests grouped by send time.
fn batches(
    rows: &[&RequestRow],
    w: &StageWindow,
    value: impl Fn(&RequestRow) -> Option<f64>,
) -> Vec<Vec<f64>> {
    let width = ((w.measure_end_ns - w.measure_start_ns) as f64 / BATCHES as f64).max(1.0);
    let mut out = vec![Vec::new(); BATCHES];
    for r in rows {
        if r.ok
            && r.phase == "measure"
            && let Some(v) = value(r)
        {
            let i = (((r.t_sent - w.measure_start_ns) as f64 / width).max(0.0) as usize)
                .min(BATCHES - 1);
            out[i].push(v);
        }
    }
    out
}

/// Completions per batch of the measured window (for throughput).
fn completion_batches(rows: &[&RequestRow], w: &StageWindow) -> Vec<f64> {
    let width = ((w.measure_end_ns - w.measure_start_ns) as f64 / BATCHES as f64).max(1.0);
    let mut out = vec![0.0; BATCHES];
    for r in rows
        .iter()
        .filter(|r| r.ok && r.t_end >= w.measure_start_ns && r.t_end < w.measure_end_ns)
    {
        let i = (((r.t_end - w.measure_start_ns) as f64 / width) as usize).min(BATCHES - 1);
        out[i] += 1.0 / (width / 1e9);
    }
    out
}

fn p99_of(batches: &[&Vec<f64>]) -> Option<f64> {
    let mut all: Vec<f64> = batches.iter().flat_map(|b| b.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    percentile(&all, 0.99)
}

fn resample<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> Vec<&'a T> {
    (0..items.len())
        .map(|_| &items[rng.random_range(0..items.len())])
        .collect()
}

/// 2.5 % and 97.5 % points of sorted values.
fn interval(mut v: Vec<f64>) -> Option<(f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.len() < 20 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((percentile(&v, 0.025)?, percentile(&v, 0.975)?))
}

/// Verdict for a ratio where larger is worse (latency): tolerance `t`.
pub fn verdict_higher_worse(ci: (f64, f64), t: f64) -> Verdict {
    let (lo, hi) = ci;
    if lo > 1.0 + t {
        Verdict::Regressed
    } else if hi < 1.0 - t {
        Verdict::Improved
    } else if lo >= 1.0 - t && hi <= 1.0 + t {
        Verdict::Unchanged
    } else {
        Verdict::Inconclusive
    }
}

/// Verdict for a ratio where smaller is worse (throughput): tolerance `t`.
pub fn verdict_lower_worse(ci: (f64, f64), t: f64) -> Verdict {
    let (lo, hi) = ci;
    if hi < 1.0 - t {
        Verdict::Regressed
    } else if lo > 1.0 + t {
        Verdict::Improved
    } else if lo >= 1.0 - t && hi <= 1.0 + t {
        Verdict::Unchanged
    } else {
        Verdict::Inconclusive
    }
}

fn more_samples_text(factor: f64) -> String {
    if factor.is_finite() {
        format!("about {factor:.1}x more samples needed")
    } else {
        "centred on the tolerance edge: more samples will not decide it".to_string()
    }
}

/// How many times more samples would let the interval clear the nearest edge of the
/// tolerance band (its half-width shrinks as 1/√n while its centre stays).
fn more_samples(ci: (f64, f64), t: f64) -> f64 {
    let (centre, half) = ((ci.0 + ci.1) / 2.0, (ci.1 - ci.0) / 2.0);
    let distance = [1.0 - t, 1.0 + t]
        .iter()
        .map(|e| (centre - e).abs())
        .fold(f64::INFINITY, f64::min);
    if distance <= 0.0 {
        f64::INFINITY
    } else {
        (half / distance).powi(2).max(1.0)
    }
}

fn ln_factorial(n: u64) -> f64 {
    statrs::function::gamma::ln_gamma(n as f64 + 1.0)
}

/// One-sided Fisher exact test: p of a success count in the new run this low or lower,
/// given both runs' totals (hypergeometric tail).
pub fn fisher_lower(base_ok: u64, base_n: u64, new_ok: u64, new_n: u64) -> f64 {
    let total_ok = base_ok + new_ok;
    let total = base_n + new_n;
    let ln_p = |k: u64| -> f64 {
        // P(new_ok = k) = C(total_ok, k) C(total − total_ok, new_n − k) / C(total, new_n)
        let ln_c = |n: u64, k: u64| ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k);
        ln_c(total_ok, k) + ln_c(total - total_ok, new_n - k) - ln_c(total, new_n)
    };
    let lo = new_n.saturating_sub(total - total_ok);
    (lo..=new_ok.min(total_ok))
        .filter(|&k| new_n >= k && total - total_ok >= new_n - k)
        .map(|k| ln_p(k).exp())
        .sum::<f64>()
        .min(1.0)
}

/// Compares two runs level by level.
pub fn compare(base: &Run<'_>, new: &Run<'_>, tol: Tolerances, seed: u64) -> Comparison {
    let (not_comparable, warnings) = comparable(base.manifest, new.manifest);
    let mut out = Comparison {
        not_comparable,
        warnings,
        findings: Vec::new(),
        ungated: Vec::new(),
        tolerances: tol,
    };
    if out.not_comparable.is_some() {
        return out;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (b_rows, n_rows) = (by_stage(base.rows), by_stage(new.rows));

    let base_classes: BTreeSet<&str> = base
        .rows
        .iter()
        .filter_map(|r| r.error.as_deref())
        .collect();
    for bw in &base.manifest.stages {
        let Some(nw) = new.manifest.stages.iter().find(|s| s.level() == bw.level()) else {
            continue;
        };
        let empty = Vec::new();
        let (b, n) = (
            b_rows.get(&bw.stage).unwrap_or(&empty),
            n_rows.get(&nw.stage).unwrap_or(&empty),
        );
        let level = bw.level();
        // P99 latency and TTFT.
        let metrics: [(&str, Measure); 2] = [
            ("p99_latency", |r| Some(r.latency_s())),
            ("p99_ttft", |r| r.ttft_s()),
        ];
        for (metric, value) in metrics {
            let (bb, nb) = (batches(b, bw, value), batches(n, nw, value));
            let (Some(bv), Some(nv)) = (
                p99_of(&bb.iter().collect::<Vec<_>>()),
                p99_of(&nb.iter().collect::<Vec<_>>()),
            ) else {
                continue;
            };
            let ratios: Vec<f64> = (0..RESAMPLES)
                .filter_map(|_| {
                    let b = p99_of(&resample(&mut rng, &bb))?;
                    let n = p99_of(&resample(&mut rng, &nb))?;
                    (b > 0.0).then(|| n / b)
                })
                .collect();
            let ci = interval(ratios);
            let need = crate::stages::min_samples(0.99);
            let (nb_count, nn_count) = (
                bb.iter().map(Vec::len).sum::<usize>(),
                nb.iter().map(Vec::len).sum::<usize>(),
            );
            let (verdict, reason) = if nb_count.min(nn_count) < need {
                let have = nb_count.min(nn_count);
                (
                    Verdict::Inconclusive,
                    format!(
                        "{have} samples: a P99 needs {need} to be bounded, about {:.1}x more samples needed",
                        need as f64 / have.max(1) as f64
                    ),
                )
            } else if (nv - bv).abs() < tol.noise_floor_s {
                (
                    Verdict::Unchanged,
                    format!(
                        "difference below the {:.1} ms noise floor",
                        tol.noise_floor_s * 1e3
                    ),
                )
            } else {
                match ci {
                    Some(ci) => {
                        let v = verdict_higher_worse(ci, tol.p99);
                        let why = match v {
                            Verdict::Inconclusive => format!(
                                "interval [{:.3}, {:.3}] straddles the ±{:.0} % band: {}",
                                ci.0,
                                ci.1,
                                tol.p99 * 100.0,
                                more_samples_text(more_samples(ci, tol.p99))
                            ),
                            _ => format!(
                                "ratio interval [{:.3}, {:.3}], tolerance +{:.0} %",
                                ci.0,
                                ci.1,
                                tol.p99 * 100.0
                            ),
                        };
                        (v, why)
                    }
                    None => (
                        Verdict::Inconclusive,
                        "too few requests for an interval".into(),
                    ),
                }
            };
            out.findings.push(Finding {
                level,
                metric: metric.into(),
                base: bv,
                new: nv,
                ratio: nv / bv,
                ci95: ci,
                p_value: None,
                verdict,
                reason,
            });
        }
        // Ungated: medians, with a bootstrap p-value of "no change".
        let medians: [(&str, Measure); 2] = [
            ("p50_latency", |r| Some(r.latency_s())),
            ("p50_ttft", |r| r.ttft_s()),
        ];
        for (metric, value) in medians {
            let (bb, nb) = (batches(b, bw, value), batches(n, nw, value));
            let median = |bs: &[&Vec<f64>]| {
                let mut all: Vec<f64> = bs.iter().flat_map(|b| b.iter().copied()).collect();
                all.sort_by(f64::total_cmp);
                percentile(&all, 0.5)
            };
            let (Some(bv), Some(nv)) = (
                median(&bb.iter().collect::<Vec<_>>()),
                median(&nb.iter().collect::<Vec<_>>()),
            ) else {
                continue;
            };
            if bv <= 0.0 {
                continue;
            }
            let ratios: Vec<f64> = (0..RESAMPLES)
                .filter_map(|_| {
                    let b = median(&resample(&mut rng, &bb))?;
                    let n = median(&resample(&mut rng, &nb))?;
                    (b > 0.0).then(|| n / b)
                })
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let below = ratios.iter().filter(|r| **r <= 1.0).count();
            let above = ratios.len() - below;
            let p = ((2 * below.min(above) + 1) as f64 / (ratios.len() + 1) as f64).min(1.0);
            out.ungated.push(Observation {
                level,
                metric: metric.into(),
                base: bv,
                new: nv,
                ratio: nv / bv,
                p_value: p,
                q_value: 1.0,
                significant: false,
            });
        }
        // Throughput.
        let (bc, nc) = (completion_batches(b, bw), completion_batches(n, nw));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (bt, nt) = (mean(&bc), mean(&nc));
        if bt > 0.0 {
            let ratios: Vec<f64> = (0..RESAMPLES)
                .filter_map(|_| {
                    let b: f64 = resample(&mut rng, &bc).into_iter().sum::<f64>() / bc.len() as f64;
                    let n: f64 = resample(&mut rng, &nc).into_iter().sum::<f64>() / nc.len() as f64;
                    (b > 0.0).then(|| n / b)
                })
                .collect();
            let ci = interval(ratios);
            let (verdict, reason) = match ci {
                Some(ci) => (
                    verdict_lower_worse(ci, tol.throughput),
                    format!(
                        "ratio interval [{:.3}, {:.3}], tolerance −{:.0} %",
                        ci.0,
                        ci.1,
                        tol.throughput * 100.0
                    ),
                ),
                None => (
                    Verdict::Inconclusive,
                    "too few batches for an interval".into(),
                ),
            };
            out.findings.push(Finding {
                level,
                metric: "throughput".into(),
                base: bt,
                new: nt,
                ratio: nt / bt,
                ci95: ci,
                p_value: None,
                verdict,
                reason,
            });
        }
        // Success rate.
        let count = |rows: &[&RequestRow]| {
            let m: Vec<_> = rows.iter().filter(|r| r.phase == "measure").collect();
            (m.iter().filter(|r| r.ok).count() as u64, m.len() as u64)
        };
        let ((bo, bn), (no, nn)) = (count(b), count(n));
        if bn > 0 && nn > 0 {
            let (br, nr) = (bo as f64 / bn as f64, no as f64 / nn as f64);
            let p = fisher_lower(bo, bn, no, nn);
            let drop_points = (br - nr) * 100.0;
            let verdict = if drop_points > tol.success_points && p < 0.05 {
                Verdict::Regressed
            } else if drop_points > tol.success_points {
                Verdict::Inconclusive
            } else {
                Verdict::Unchanged
            };
            out.findings.push(Finding {
                level,
                metric: "success_rate".into(),
                base: br,
                new: nr,
                ratio: if br > 0.0 { nr / br } else { 1.0 },
                ci95: None,
                p_value: Some(p),
                verdict,
                reason: format!("{drop_points:+.2} points lower, Fisher exact p = {p:.3}"),
            });
        }
        // Error classes the base never saw.
        let new_classes: BTreeSet<&str> = n
            .iter()
            .filter_map(|r| r.error.as_deref())
            .filter(|c| *c != "cancelled" && !base_classes.contains(c))
            .collect();
        if !new_classes.is_empty() {
            let list: Vec<&str> = new_classes.into_iter().collect();
            out.findings.push(Finding {
                level,
                metric: "error_classes".into(),
                base: 0.0,
                new: list.len() as f64,
                ratio: f64::INFINITY,
                ci95: None,
                p_value: None,
                verdict: Verdict::Regressed,
                reason: format!("new error class: {}", list.join(", ")),
            });
        }
    }
    let q = benjamini_hochberg(&out.ungated.iter().map(|o| o.p_value).collect::<Vec<_>>());
    for (o, q) in out.ungated.iter_mut().zip(q) {
        o.q_value = q;
        o.significant = q <= 0.05;
    }
    out
}

/// The false-alarm rate of the gate on runs of one build: every pair compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Pairs compared.
    pub pairs: usize,
    /// Pairs with at least one REGRESSED finding.
    pub false_alarm_pairs: usize,
    /// Gated findings in all pairs.
    pub findings: usize,
    /// Gated findings that said REGRESSED.
    pub false_alarm_findings: usize,
    /// false_alarm_pairs / pairs.
    pub pair_rate: f64,
}

/// Compares every pair of runs (all of one build) and counts false alarms.
pub fn calibrate(runs: &[Run<'_>], tol: Tolerances, seed: u64) -> Calibration {
    let mut c = Calibration {
        pairs: 0,
        false_alarm_pairs: 0,
        findings: 0,
        false_alarm_findings: 0,
        pair_rate: 0.0,
    };
    for i in 0..runs.len() {
        for j in (i + 1)..runs.len() {
            let cmp = compare(
                &runs[i],
                &runs[j],
                tol,
                seed.wrapping_add((i * runs.len() + j) as u64),
            );
            c.pairs += 1;
            c.findings += cmp.findings.len();
            let regressed = cmp
                .findings
                .iter()
                .filter(|f| f.verdict == Verdict::Regressed)
                .count();
            c.false_alarm_findings += regressed;
            if regressed > 0 {
                c.false_alarm_pairs += 1;
            }
        }
    }
    c.pair_rate = if c.pairs > 0 {
        c.false_alarm_pairs as f64 / c.pairs as f64
    } else {
        0.0
    };
    c
}

fn by_stage(rows: &[RequestRow]) -> BTreeMap<u32, Vec<&RequestRow>> {
    let mut m: BTreeMap<u32, Vec<&RequestRow>> = BTreeMap::new();
    for r in rows {
        m.entry(r.stage).or_default().push(r);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_bands() {
        assert_eq!(verdict_higher_worse((1.2, 1.4), 0.1), Verdict::Regressed);
        assert_eq!(verdict_higher_worse((0.95, 1.05), 0.1), Verdict::Unchanged);
        assert_eq!(verdict_higher_worse((0.6, 0.8), 0.1), Verdict::Improved);
        assert_eq!(verdict_higher_worse((0.9, 1.3), 0.1), Verdict::Inconclusive);
        assert_eq!(verdict_lower_worse((0.6, 0.8), 0.1), Verdict::Regressed);
        assert_eq!(verdict_lower_worse((1.2, 1.3), 0.1), Verdict::Improved);
        // Centre 1.14, half-width 0.0425, nearest edge 1.1: (0.0425 / 0.04)² ≈ 1.13.
        assert!((more_samples((1.0975, 1.1825), 0.1) - 1.128_906_25).abs() < 1e-6);
        assert!(more_samples((0.9, 1.3), 0.1).is_infinite());
    }

    #[test]
    fn benjamini_hochberg_matches_the_textbook() {
        // p = (0.01, 0.04, 0.03, 0.20), m = 4: sorted 0.01, 0.03, 0.04, 0.20 give
        // 0.04, 0.06, 0.0533.., 0.20, then monotone from the top: 0.04, 0.0533, 0.0533, 0.20.
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.20]);
        let want = [0.04, 0.16 / 3.0, 0.16 / 3.0, 0.20];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
    }

    #[test]
    fn fisher_exact_tail() {
        // 100/100 against 90/100: a drop this large is unlikely under equal rates.
        let p = fisher_lower(100, 100, 90, 100);
        assert!(p < 0.01, "{p}");
        // Equal counts: the tail includes the middle, p well above 0.05.
        assert!(fisher_lower(95, 100, 95, 100) > 0.5);
        // Hypergeometric sums to 1 over the whole support.
        assert!((fisher_lower(5, 10, 10, 10) - 1.0).abs() < 1e-9);
    }
}
