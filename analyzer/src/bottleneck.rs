//! Bottleneck attribution: why a level performs as it does, from the samples in
//! metrics.parquet aligned to the level's measured window.
//!
//! Each level gets findings `{class, score, evidence, recommendation}`. Scores are in
//! [0, 1]. Findings scoring 0.85 or more are saturated, and among them a cause ranks above a
//! symptom in the order of the table (a saturated CPU explains a full batch and a queue,
//! not the other way round); the rest follow by score. Classes:

//!
//! | class | evidence used |
//! |---|---|
//! | `client_bound` | users in flight, schedule lag (the run is then invalid) |
//! | `errors` | error rate and classes |
//! | `host_cpu` | CPU cores the service's processes used (a core or more, or most of a busy node) |
//! | `host_contention` | a busy node whose CPU goes to other processes |

//! | `host_memory` | node memory available, job cgroup memory against its limit, memory PSI |
//! | `gpu_compute`, `gpu_bandwidth` | GPM SM / tensor / DRAM activity; without them "insufficient evidence" |
//! | `gpu_throttled` | clock throttle reasons (power, thermal) |
//! | `kv_cache` | KV-cache usage with requests waiting |
//! | `scheduler_limit` | running sequences at the batch limit with requests waiting |
//! | `queueing` | requests waiting; TTFT against the lightest level |
//!
//! GPU boundness is never inferred from NVML utilization alone: it only says a kernel ran.

use std::collections::BTreeMap;

use aifb_core::metrics::MetricSample;
use aifb_core::run::StageWindow;
use serde::Serialize;

use crate::stages::StageSummary;

/// One explanation of a level's behaviour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Class (see the module table).
    pub class: &'static str,
    /// Strength in [0, 1].
    pub score: f64,
    /// The numbers behind it.
    pub evidence: Vec<String>,
    /// What to try.
    pub recommendation: String,
}

/// Samples of one series, by time.
#[derive(Debug, Default, Clone)]
pub struct Series(pub Vec<(i64, f64)>);

/// Samples indexed by (source, metric), every label set summed per timestamp unless
/// selected.
pub struct Samples<'a> {
    all: BTreeMap<(&'a str, &'a str), Vec<&'a MetricSample>>,
}

impl<'a> Samples<'a> {
    /// Indexes samples.
    pub fn new(samples: &'a [MetricSample]) -> Self {
        let mut all: BTreeMap<(&str, &str), Vec<&MetricSample>> = BTreeMap::new();
        for s in samples {
            all.entry((s.source.as_str(), s.metric.as_str()))
                .or_default()
                .push(s);
        }
        Self { all }
    }

    /// The series of `metric` from `source` whose labels include `labels`, summed per
    /// timestamp.
    pub fn series(&self, source: &str, metric: &str, labels: &[(&str, &str)]) -> Series {
        let mut by_t: BTreeMap<i64, f64> = BTreeMap::new();
        for s in self.all.get(&(source, metric)).into_iter().flatten() {
            if labels.iter().all(|(k, v)| s.label(k) == Some(v)) {
                *by_t.entry(s.t_ms).or_insert(0.0) += s.value;
            }
        }
        Series(by_t.into_iter().collect())
    }
}

impl Series {
    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Per-second increase of a counter over [start, end] (ms), counting a drop as a reset
    /// (the new value is the increase since the reset).
    pub fn rate(&self, start: i64, end: i64) -> Option<f64> {
        let inside: Vec<&(i64, f64)> = self
            .0
            .iter()
            .filter(|(t, _)| *t >= start && *t <= end)
            .collect();
        if inside.len() < 2 {
            return None;
        }
        let mut increase = 0.0;
        for w in inside.windows(2) {
            let (a, b) = (w[0].1, w[1].1);
            increase += if b >= a { b - a } else { b };
        }
        let secs = (inside[inside.len() - 1].0 - inside[0].0) as f64 / 1e3;
        (secs > 0.0).then(|| increase / secs)
    }

    /// Time-weighted mean of a gauge over [start, end] (ms): each sample holds until the next.
    pub fn mean(&self, start: i64, end: i64) -> Option<f64> {
        let mut total = 0.0;
        let mut weight = 0.0;
        for (i, (t, v)) in self.0.iter().enumerate() {
            let next = self.0.get(i + 1).map_or(end, |n| n.0);
            let (a, b) = ((*t).max(start), next.min(end));
            if b > a {
                total += v * (b - a) as f64;
                weight += (b - a) as f64;
            }
        }
        (weight > 0.0).then(|| total / weight)
    }

    /// Largest value ever seen.
    pub fn max(&self) -> Option<f64> {
        self.0.iter().map(|(_, v)| *v).reduce(f64::max)
    }
}

fn rank(class: &str) -> usize {
    [
        "client_bound",
        "errors",
        "host_cpu",
        "host_memory",
        "gpu_throttled",
        "gpu_compute",
        "gpu_bandwidth",
        "kv_cache",
        "scheduler_limit",
        "queueing",
        "host_contention",
    ]
    .iter()
    .position(|c| *c == class)
    .unwrap_or(usize::MAX)
}

/// Findings for every level.
pub fn attribute(
    samples: &[MetricSample],
    windows: &[StageWindow],
    stages: &[StageSummary],
    batch_limit: Option<u32>,
) -> Vec<Vec<Finding>> {
    let idx = Samples::new(samples);
    let node_busy = |s: i64, e: i64| {
        let total = idx
            .series("exporter", "aifb_node_cpu_seconds_total", &[])
            .rate(s, e)?;
        let idle = idx
            .series(
                "exporter",
                "aifb_node_cpu_seconds_total",
                &[("mode", "idle")],
            )
            .rate(s, e)?;
        let iowait = idx
            .series(
                "exporter",
                "aifb_node_cpu_seconds_total",
                &[("mode", "iowait")],
            )
            .rate(s, e)
            .unwrap_or(0.0);
        (total > 0.0).then(|| ((total - idle - iowait) / total).clamp(0.0, 1.0))
    };
    let service_cpu = idx.series("exporter", "aifb_process_cpu_seconds_total", &[]);
    let running = idx.series("service", "vllm:num_requests_running", &[]);
    let waiting = idx.series("service", "vllm:num_requests_waiting", &[]);
    let kv = idx.series("service", "vllm:kv_cache_usage_perc", &[]);
    let limit = batch_limit.map(f64::from).or_else(|| running.max());
    let lightest_ttft = stages.iter().find_map(|s| s.ttft.and_then(|q| q.p50));
    let mut out = Vec::new();
    for (w, st) in windows.iter().zip(stages) {
        let (s, e) = (w.measure_start_ns / 1_000_000, w.measure_end_ns / 1_000_000);
        let mut f: Vec<Finding> = Vec::new();
        let mut push = |class: &'static str, score: f64, evidence: Vec<String>, rec: &str| {
            if score > 0.0 {
                f.push(Finding {
                    class,
                    score: score.clamp(0.0, 1.0),
                    evidence,
                    recommendation: rec.to_string(),
                });
            }
        };
        // The client.
        let client: Vec<String> = st
            .warnings
            .iter()
            .filter(|w| w.contains("client") || w.contains("schedule"))
            .cloned()
            .collect();
        if !client.is_empty() {
            push(
                "client_bound",
                1.0,
                client,
                "give the load generator more cores or shards; this level's numbers describe the client, not the service",
            );
        }
        // Errors.
        if st.error_rate > 0.01 {
            let classes: Vec<String> = st.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            push(
                "errors",
                (st.error_rate * 5.0).min(1.0),
                vec![format!(
                    "{:.1} % of measured requests failed ({})",
                    st.error_rate * 100.0,
                    classes.join(", ")
                )],
                "read the service log for this window; errors cap useful throughput before latency does",
            );
        }
        // Host CPU.
        let busy = node_busy(s, e);
        let cores = service_cpu.rate(s, e);
        // The service is CPU-bound when it uses the CPU itself: a core's worth or more
        // (its busiest thread may be pinned), or most of a busy node. A busy node whose
        // CPU goes elsewhere is contention, a weaker and different finding.
        let node_cores = idx
            .series("exporter", "aifb_node_cpu_seconds_total", &[])
            .rate(s, e);
        let service_share = match (cores, busy, node_cores) {
            (Some(c), Some(b), Some(n)) if b > 0.0 && n > 0.0 => (c / (b * n)).min(1.0),
            _ => 0.0,
        };
        let cpu_score = cores
            .map_or(0.0, |c| c.min(1.0))
            .max(if service_share >= 0.5 {
                busy.unwrap_or(0.0)
            } else {
                0.0
            });
        let mut cpu_ev = Vec::new();
        if let Some(b) = busy {
            cpu_ev.push(format!("node CPUs {:.0} % busy", b * 100.0));
        }
        if let Some(c) = cores {
            cpu_ev.push(format!("the service used {c:.2} CPU cores"));
        }
        if cpu_score >= 0.85 {
            push(
                "host_cpu",
                cpu_score,
                cpu_ev,
                "the service is bound by host CPU: more or faster cores, fewer threads contending, or offload the work",
            );
        } else if busy.is_some_and(|b| b >= 0.9) {
            push(
                "host_contention",
                0.5 * busy.unwrap_or(0.0),
                cpu_ev,
                "other processes (the load generator on the same node?) keep the CPUs busy: isolate the service before trusting this level",
            );
        }

        // Host memory.
        let avail = idx
            .series("exporter", "aifb_node_memory_available_bytes", &[])
            .mean(s, e);
        let total = idx
            .series("exporter", "aifb_node_memory_total_bytes", &[])
            .mean(s, e);
        let job_cur = idx
            .series("exporter", "aifb_job_memory_current_bytes", &[])
            .mean(s, e);
        let job_max = idx
            .series("exporter", "aifb_job_memory_max_bytes", &[])
            .mean(s, e);
        let mem_psi = idx
            .series(
                "exporter",
                "aifb_node_pressure_stall_seconds_total",
                &[("resource", "memory"), ("kind", "full")],
            )
            .rate(s, e);
        let mut mem_score: f64 = 0.0;
        let mut mem_ev = Vec::new();
        if let (Some(a), Some(t)) = (avail, total)
            && t > 0.0
            && a / t < 0.05
        {
            mem_score = mem_score.max(1.0 - a / t);
            mem_ev.push(format!(
                "only {:.1} % of node memory available",
                a / t * 100.0
            ));
        }
        if let (Some(c), Some(m)) = (job_cur, job_max)
            && m > 0.0
            && c / m > 0.95
        {
            mem_score = mem_score.max(c / m);
            mem_ev.push(format!(
                "job cgroup at {:.0} % of its memory limit",
                c / m * 100.0
            ));
        }
        if let Some(p) = mem_psi.filter(|p| *p > 0.1) {
            mem_score = mem_score.max(p.min(1.0));
            mem_ev.push(format!(
                "tasks fully stalled on memory {:.0} % of the time",
                p * 100.0
            ));
        }
        push(
            "host_memory",
            mem_score,
            mem_ev,
            "the service is short of memory: raise the limit, or shrink caches and batch sizes",
        );
        // GPUs: only with profiling metrics is a GPU class more than a hint.
        let sm = idx.series("exporter", "aifb_gpu_sm_active_ratio", &[]);
        let dram = idx.series("exporter", "aifb_gpu_dram_active_ratio", &[]);
        let util = idx.series("exporter", "aifb_gpu_utilization_ratio", &[]);
        let gpus = idx
            .series("exporter", "aifb_gpu_info", &[])
            .max()
            .unwrap_or(1.0)
            .max(1.0);
        if !sm.is_empty() {
            let smv = sm.mean(s, e).unwrap_or(0.0) / gpus;
            let dv = dram.mean(s, e).unwrap_or(0.0) / gpus;
            if smv >= 0.8 {
                push(
                    "gpu_compute",
                    smv,
                    vec![format!("SMs {:.0} % active (GPM)", smv * 100.0)],
                    "GPU compute-bound: a faster GPU, more GPUs, lower precision or a smaller model",
                );
            }
            if dv >= 0.8 {
                push(
                    "gpu_bandwidth",
                    dv,
                    vec![format!("DRAM bandwidth {:.0} % of peak (GPM)", dv * 100.0)],
                    "GPU memory-bandwidth-bound: larger batches, quantised weights or a GPU with more bandwidth",
                );
            }
        } else if let Some(u) = util.mean(s, e).map(|u| u / gpus).filter(|u| *u >= 0.8) {
            push(
                "gpu_compute",
                0.3,
                vec![format!(
                    "GPU busy {:.0} % of the time (NVML), but no profiling metrics: insufficient evidence of compute or bandwidth limits",
                    u * 100.0
                )],
                "run on a Hopper-or-newer GPU with GPM, or profile, before concluding the GPU is the limit",
            );
        }
        let throttled = [
            "sw_power_cap",
            "hw_slowdown",
            "sw_thermal_slowdown",
            "hw_thermal_slowdown",
            "hw_power_brake_slowdown",
        ]
        .iter()
        .filter_map(|r| {
            idx.series(
                "exporter",
                "aifb_gpu_clock_throttle_active",
                &[("reason", r)],
            )
            .mean(s, e)
            .filter(|m| *m > 0.1)
            .map(|m| (*r, m))
        })
        .collect::<Vec<_>>();
        if let Some(worst) = throttled.iter().map(|(_, m)| *m).reduce(f64::max) {
            let ev = throttled
                .iter()
                .map(|(r, m)| format!("{r} active {:.0} % of the time", m / gpus * 100.0))
                .collect();
            push(
                "gpu_throttled",
                (worst / gpus).min(1.0),
                ev,
                "the GPU clocks down: check power limits and cooling",
            );
        }
        // The service's scheduler and queue (vLLM-named metrics).
        let run_mean = running.mean(s, e);
        let wait_mean = waiting.mean(s, e);
        if let (Some(kvm), Some(wm)) = (kv.mean(s, e), wait_mean)
            && kvm >= 0.9
            && wm > 0.5
        {
            push(
                "kv_cache",
                kvm,
                vec![format!(
                    "KV cache {:.0} % used with {wm:.1} requests waiting",
                    kvm * 100.0
                )],
                "KV-cache-bound: more GPU memory for the cache, shorter contexts or quantised KV",
            );
        }
        if let (Some(r), Some(l), Some(wm)) = (run_mean, limit, wait_mean)
            && l > 0.0
            && r >= 0.85 * l
        {
            push(
                "scheduler_limit",
                r / l,
                vec![format!(
                    "{r:.1} of {l:.0} sequences running on average, {wm:.1} waiting"
                )],
                "every batch slot is busy: raise max_num_seqs if memory allows, or add replicas",
            );
        }
        let ttft_growth = match (st.ttft.and_then(|q| q.p50), lightest_ttft) {
            (Some(t), Some(l)) if l > 0.0 => Some(t / l),
            _ => None,
        };
        let queue_score = wait_mean.map_or(0.0, |wm| {
            (wm / (wm + run_mean.unwrap_or(0.0)).max(1e-9)).min(1.0)
        });
        let queue_score = queue_score.max(
            ttft_growth
                .filter(|g| *g > 3.0)
                .map_or(0.0, |g| (1.0 - 3.0 / g).min(1.0)),
        );
        if queue_score > 0.2 {
            let mut ev = Vec::new();
            if let Some(wm) = wait_mean {
                ev.push(format!("{wm:.1} requests waiting on average"));
            }
            if let Some(g) = ttft_growth {
                ev.push(format!("median TTFT {g:.1}x the lightest level's"));
            }
            push(
                "queueing",
                queue_score,
                ev,
                "offered load exceeds capacity: requests queue; reduce load or add capacity",
            );
        }
        // Saturated findings first, causes before symptoms among them; then by score.
        let saturated = |x: &Finding| x.score >= 0.85;
        f.sort_by(|a, b| {
            saturated(b)
                .cmp(&saturated(a))
                .then_with(|| {
                    if saturated(a) {
                        rank(a.class).cmp(&rank(b.class))
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .then(b.score.total_cmp(&a.score))
        });
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        source: &str,
        metric: &str,
        labels: &[(&str, &str)],
        t_ms: i64,
        value: f64,
    ) -> MetricSample {
        MetricSample {
            t_ms,
            source: source.into(),
            metric: metric.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn counter_rates_survive_resets() {
        let s = Series(vec![(0, 10.0), (1000, 20.0), (2000, 5.0), (3000, 15.0)]);
        // +10, reset to 5 (+5), +10 over 3 s.
        assert_eq!(s.rate(0, 3000), Some(25.0 / 3.0));
        assert_eq!(s.rate(5000, 6000), None);
    }

    #[test]
    fn gauges_are_time_weighted() {
        let s = Series(vec![(0, 0.0), (1000, 10.0), (4000, 0.0)]);
        // 0 for 1 s, 10 for 3 s, 0 for 1 s over [0, 5000].
        assert_eq!(s.mean(0, 5000), Some(6.0));
        assert_eq!(s.mean(1000, 2000), Some(10.0));
    }

    fn stage(users: u32, ttft_p50: f64) -> (StageWindow, StageSummary) {
        let w = StageWindow {
            stage: 0,
            concurrency: Some(users),
            rate: None,
            start_ns: 0,
            measure_start_ns: 0,
            measure_end_ns: 10_000_000_000,
            end_ns: 10_000_000_000,
            calibration: None,
        };
        let mut s = crate::stages::summarize(&[], std::slice::from_ref(&w)).remove(0);
        s.ttft = crate::stages::Quantiles::of(vec![ttft_p50; 10]);
        (w, s)
    }

    fn saturated(service_cpu_per_s: f64) -> Vec<MetricSample> {
        let mut v = Vec::new();
        for i in 0..=10 {
            let t = i * 1000;
            v.push(sample("service", "vllm:num_requests_running", &[], t, 16.0));
            v.push(sample("service", "vllm:num_requests_waiting", &[], t, 16.0));
            v.push(sample("service", "vllm:kv_cache_usage_perc", &[], t, 0.2));
            v.push(sample(
                "exporter",
                "aifb_process_cpu_seconds_total",
                &[("service", "simulator")],
                t,
                service_cpu_per_s * i as f64,
            ));
            v.push(sample(
                "exporter",
                "aifb_node_cpu_seconds_total",
                &[("mode", "idle")],
                t,
                1.2 * i as f64,
            ));
            v.push(sample(
                "exporter",
                "aifb_node_cpu_seconds_total",
                &[("mode", "user")],
                t,
                0.8 * i as f64,
            ));
        }
        v
    }

    #[test]
    fn a_full_batch_with_a_queue_is_scheduler_bound() {
        let (w0, s0) = stage(1, 0.01);
        let (w, s) = stage(32, 0.3);
        let f = attribute(&saturated(0.1), &[w0, w], &[s0, s], Some(16));
        let top = &f[1][0];
        assert_eq!(top.class, "scheduler_limit", "{f:?}");
        assert!(top.evidence[0].contains("16.0 of 16"), "{top:?}");
        assert!(f[1].iter().any(|x| x.class == "queueing"));
        assert!(f[1].iter().all(|x| x.class != "host_cpu"));
    }

    #[test]
    fn a_service_burning_a_core_is_cpu_bound() {
        let (w, s) = stage(32, 0.3);
        let f = attribute(&saturated(0.98), &[w], &[s], Some(16));
        assert_eq!(f[0][0].class, "host_cpu", "{f:?}");
        assert!(
            f[0][0]
                .evidence
                .iter()
                .any(|e| e.contains("0.98 CPU cores"))
        );
    }

    #[test]
    fn a_busy_node_with_an_idle_service_is_contention() {
        let (w, s) = stage(4, 0.01);
        let mut v = Vec::new();
        for i in 0..=10 {
            let t = i * 1000;
            v.push(sample(
                "exporter",
                "aifb_process_cpu_seconds_total",
                &[("service", "svc")],
                t,
                0.05 * i as f64,
            ));
            v.push(sample(
                "exporter",
                "aifb_node_cpu_seconds_total",
                &[("mode", "idle")],
                t,
                0.02 * i as f64,
            ));
            v.push(sample(
                "exporter",
                "aifb_node_cpu_seconds_total",
                &[("mode", "user")],
                t,
                1.98 * i as f64,
            ));
        }
        let f = attribute(&v, &[w], &[s], None);
        assert_eq!(f[0][0].class, "host_contention", "{f:?}");
        assert!(f[0].iter().all(|x| x.class != "host_cpu"));
    }

    #[test]
    fn nvml_utilization_alone_is_not_evidence() {
        let (w, s) = stage(8, 0.01);
        let mut v = Vec::new();
        for i in 0..=10 {
            v.push(sample(
                "exporter",
                "aifb_gpu_utilization_ratio",
                &[("gpu", "0")],
                i * 1000,
                1.0,
            ));
            v.push(sample(
                "exporter",
                "aifb_gpu_info",
                &[("gpu", "0")],
                i * 1000,
                1.0,
            ));
        }
        let f = attribute(&v, &[w], &[s], None);
        let g = f[0].iter().find(|x| x.class == "gpu_compute").unwrap();
        assert!(
            g.score < 0.5 && g.evidence[0].contains("insufficient evidence"),
            "{g:?}"
        );
    }
}
