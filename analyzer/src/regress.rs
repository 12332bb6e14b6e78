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

use aifb_core::run::{Manifest, StageWindow};
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
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
    /// q ≤ 0.05 and a change of at least [`MIN_EFFECT`].
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
    let shared = base
        .stages
        .iter()
        .any(|b| new.stages.iter().any(|n| n.same_load(b)));
    if !shared {
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

/// Smallest relative change an ungated metric must show to be reported as changed.
pub const MIN_EFFECT: f64 = 0.02;

const RESAMPLES: usize = 1000;

/// Latency counts over one shared grid of log-spaced bins (1 µs to 1 h, 2,048 bins, each
/// 1.08 % wide): quantiles within 0.54 %, and merging is adding counts, which is what a
/// bootstrap over time batches needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogBins {
    counts: Vec<u32>,
    total: u64,
}

const BINS: usize = 2048;
const MIN_S: f64 = 1e-6;
const MAX_S: f64 = 3600.0;

impl Default for LogBins {
    fn default() -> Self {
        Self {
            counts: vec![0; BINS],
            total: 0,
        }
    }
}

impl LogBins {
    fn width() -> f64 {
        (MAX_S / MIN_S).ln() / BINS as f64
    }

    /// Adds a value in seconds.
    pub fn record(&mut self, seconds: f64) {
        let x = seconds.clamp(MIN_S, MAX_S);
        let i = (((x / MIN_S).ln() / Self::width()) as usize).min(BINS - 1);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds `times` copies of `other`.
    fn add(&mut self, other: &LogBins, times: u32) {
        if times == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b * times;
        }
        self.total += other.total * u64::from(times);
    }

    /// The nearest-rank q-quantile, at the geometric centre of its bin.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(MIN_S * ((i as f64 + 0.5) * Self::width()).exp());
            }
        }
        None
    }
}

/// What the gate needs of one level of a run, in bounded memory.
#[derive(Debug, Clone, Default)]
pub struct LevelDigest {
    /// Service latency of successful measured requests, per time batch (by send time).
    pub latency: Vec<LogBins>,
    /// TTFT of the same, per batch.
    pub ttft: Vec<LogBins>,
    /// Successful completions per second, per batch of the measured window (by end time).
    pub completions: Vec<f64>,
    /// Requests started in the measured window.
    pub measured: u64,
    /// Successful among them.
    pub measured_ok: u64,
    /// Error classes seen at this level.
    pub errors: BTreeSet<String>,
}

/// A run reduced to what the gate compares: its manifest and a digest per stage.
#[derive(Debug, Clone)]
pub struct Digest {
    /// The manifest (from the footer).
    pub manifest: Manifest,
    /// Per stage index.
    pub stages: BTreeMap<u32, LevelDigest>,
    /// Error classes seen anywhere in the run.
    pub errors: BTreeSet<String>,
}

impl Digest {
    /// Streams a requests.parquet file into a digest.
    pub fn from_file(path: &std::path::Path) -> Result<Digest, String> {
        let manifest: Manifest = match aifb_core::requests::scan_footer(path)? {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                format!(
                    "{}: footer aifb.run is not a run manifest: {e}",
                    path.display()
                )
            })?,
            None => {
                return Err(format!(
                    "{}: no run manifest in the footer (aifb.run)",
                    path.display()
                ));
            }
        };
        if manifest.stages.is_empty() {
            return Err(format!("{}: the manifest lists no stage", path.display()));
        }
        let windows: BTreeMap<u32, StageWindow> = manifest
            .stages
            .iter()
            .map(|w| (w.stage, w.clone()))
            .collect();
        let mut stages: BTreeMap<u32, LevelDigest> = BTreeMap::new();
        let mut errors = BTreeSet::new();
        aifb_core::requests::scan(path, |c| {
            use arrow_array::Array;
            for i in 0..c.len() {
                let stage = c.stage.value(i);
                let Some(w) = windows.get(&stage) else {
                    continue;
                };
                let d = stages.entry(stage).or_insert_with(|| LevelDigest {
                    latency: vec![LogBins::default(); BATCHES],
                    ttft: vec![LogBins::default(); BATCHES],
                    completions: vec![0.0; BATCHES],
                    ..LevelDigest::default()
                });
                let width =
                    ((w.measure_end_ns - w.measure_start_ns) as f64 / BATCHES as f64).max(1.0);
                let batch = |t: i64| {
                    (((t - w.measure_start_ns) as f64 / width).max(0.0) as usize).min(BATCHES - 1)
                };
                let ok = c.ok.value(i);
                if let Some(e) = c.error(i)
                    && e != "cancelled"
                {
                    d.errors.insert(e.to_string());
                    errors.insert(e.to_string());
                }
                let end = c.t_end.value(i);
                if ok && end >= w.measure_start_ns && end < w.measure_end_ns {
                    d.completions[batch(end)] += 1.0 / (width / 1e9);
                }
                if c.phase(i) != Some("measure") {
                    continue;
                }
                d.measured += 1;
                if !ok {
                    continue;
                }
                d.measured_ok += 1;
                let sent = c.t_sent.value(i);
                let b = batch(sent);
                d.latency[b].record((end - sent) as f64 / 1e9);
                if !c.t_first_token.is_null(i) {
                    d.ttft[b].record((c.t_first_token.value(i) - sent) as f64 / 1e9);
                }
            }
            Ok(())
        })?;
        Ok(Digest {
            manifest,
            stages,
            errors,
        })
    }
}

/// The merged quantile of batches drawn with replacement (`picks` are batch indexes).
fn quantile_of(batches: &[LogBins], picks: &[usize], q: f64) -> Option<f64> {
    let mut times = [0u32; BATCHES];
    for &p in picks {
        times[p] += 1;
    }
    let mut merged = LogBins::default();
    for (b, t) in batches.iter().zip(times) {
        merged.add(b, t);
    }
    merged.quantile(q)
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

/// Draws `BATCHES` batch indexes with replacement.
fn draw(rng: &mut StdRng) -> [usize; BATCHES] {
    let mut picks = [0usize; BATCHES];
    for p in picks.iter_mut() {
        *p = rng.random_range(0..BATCHES);
    }
    picks
}

const ALL: [usize; BATCHES] = {
    let mut a = [0usize; BATCHES];
    let mut i = 0;
    while i < BATCHES {
        a[i] = i;
        i += 1;
    }
    a
};

/// Compares two runs level by level.
pub fn compare(base: &Digest, new: &Digest, tol: Tolerances, seed: u64) -> Comparison {
    let (not_comparable, warnings) = comparable(&base.manifest, &new.manifest);
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
    for bw in &base.manifest.stages {
        let Some(nw) = new.manifest.stages.iter().find(|s| s.same_load(bw)) else {
            continue;
        };
        let (Some(b), Some(n)) = (base.stages.get(&bw.stage), new.stages.get(&nw.stage)) else {
            continue;
        };
        let level = bw.level();
        // P99 latency and TTFT.
        for (metric, bb, nb) in [
            ("p99_latency", &b.latency, &n.latency),
            ("p99_ttft", &b.ttft, &n.ttft),
        ] {
            let (Some(bv), Some(nv)) = (quantile_of(bb, &ALL, 0.99), quantile_of(nb, &ALL, 0.99))
            else {
                continue;
            };
            let ratios: Vec<f64> = (0..RESAMPLES)
                .filter_map(|_| {
                    let x = quantile_of(bb, &draw(&mut rng), 0.99)?;
                    let y = quantile_of(nb, &draw(&mut rng), 0.99)?;
                    (x > 0.0).then(|| y / x)
                })
                .collect();
            let ci = interval(ratios);
            let need = crate::stages::min_samples(0.99) as u64;
            let have = bb
                .iter()
                .map(LogBins::len)
                .sum::<u64>()
                .min(nb.iter().map(LogBins::len).sum::<u64>());
            let (verdict, reason) = if have < need {
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
        for (metric, bb, nb) in [
            ("p50_latency", &b.latency, &n.latency),
            ("p50_ttft", &b.ttft, &n.ttft),
        ] {
            let (Some(bv), Some(nv)) = (quantile_of(bb, &ALL, 0.5), quantile_of(nb, &ALL, 0.5))
            else {
                continue;
            };
            if bv <= 0.0 {
                continue;
            }
            let ratios: Vec<f64> = (0..RESAMPLES)
                .filter_map(|_| {
                    let x = quantile_of(bb, &draw(&mut rng), 0.5)?;
                    let y = quantile_of(nb, &draw(&mut rng), 0.5)?;
                    (x > 0.0).then(|| y / x)
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
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (bt, nt) = (mean(&b.completions), mean(&n.completions));
        if bt > 0.0 {
            let ratios: Vec<f64> = (0..RESAMPLES)
                .filter_map(|_| {
                    let x: f64 = draw(&mut rng)
                        .iter()
                        .map(|&i| b.completions[i])
                        .sum::<f64>()
                        / BATCHES as f64;
                    let y: f64 = draw(&mut rng)
                        .iter()
                        .map(|&i| n.completions[i])
                        .sum::<f64>()
                        / BATCHES as f64;
                    (x > 0.0).then(|| y / x)
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
        if b.measured > 0 && n.measured > 0 {
            let (br, nr) = (
                b.measured_ok as f64 / b.measured as f64,
                n.measured_ok as f64 / n.measured as f64,
            );
            let p = fisher_lower(b.measured_ok, b.measured, n.measured_ok, n.measured);
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
        let new_classes: Vec<&str> = n
            .errors
            .iter()
            .filter(|c| !base.errors.contains(*c))
            .map(String::as_str)
            .collect();
        if !new_classes.is_empty() {
            out.findings.push(Finding {
                level,
                metric: "error_classes".into(),
                base: 0.0,
                new: new_classes.len() as f64,
                ratio: f64::INFINITY,
                ci95: None,
                p_value: None,
                verdict: Verdict::Regressed,
                reason: format!("new error class: {}", new_classes.join(", ")),
            });
        }
    }
    // Statistically significant and large enough to matter: with hundreds of thousands
    // of requests, shifts of a fraction of a percent become "significant".
    let q = benjamini_hochberg(&out.ungated.iter().map(|o| o.p_value).collect::<Vec<_>>());
    for (o, q) in out.ungated.iter_mut().zip(q) {
        o.q_value = q;
        o.significant = q <= 0.05 && (o.ratio - 1.0).abs() >= MIN_EFFECT;
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
pub fn calibrate(runs: &[Digest], tol: Tolerances, seed: u64) -> Calibration {
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

#[cfg(test)]
mod bins_tests {
    use super::*;

    #[test]
    fn log_bins_quantiles_within_their_precision() {
        let mut b = LogBins::default();
        for i in 1..=1000 {
            b.record(f64::from(i) / 1000.0);
        }
        for (q, exact) in [(0.5, 0.5), (0.99, 0.99), (0.001, 0.001)] {
            let got = b.quantile(q).unwrap();
            assert!((got / exact - 1.0).abs() < 0.006, "q{q}: {got} vs {exact}");
        }
        assert_eq!(LogBins::default().quantile(0.5), None);
        // Merging k copies is the same as recording k times.
        let mut twice = LogBins::default();
        twice.add(&b, 2);
        assert_eq!(twice.len(), 2000);
        assert_eq!(twice.quantile(0.5), b.quantile(0.5));
    }
}
