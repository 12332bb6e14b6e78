//! `aifb watch RUN`: one line every few seconds while a run goes on: its state, the
//! stage, offered and achieved rate, p99 of the service latency and errors, computed from
//! two consecutive reads of the loadgen's `/metrics` (found through its discovery record).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aifb_core::discovery::{self, State};
use aifb_core::exit::Failure;
use aifb_core::promtext::{self, Sample};
use aifb_core::run::{Manifest, RunDir};

/// The loadgen counters one line is computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `aifb_loadgen_stage`.
    pub stage: Option<f64>,
    /// `aifb_loadgen_offered_rate` (open loop).
    pub offered: Option<f64>,
    /// `aifb_loadgen_target_concurrency` (closed loop).
    pub users: Option<f64>,
    /// Requests by outcome.
    pub requests: BTreeMap<String, f64>,
    /// Cumulative buckets of `aifb_loadgen_request_duration_seconds`, summed over ops.
    pub buckets: BTreeMap<u64, (f64, f64)>,
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Sums the samples of several loadgens (shards) into one reading.
pub fn reading(samples: &[Sample]) -> Reading {
    let mut r = Reading::default();
    for s in samples {
        match s.name.as_str() {
            "aifb_loadgen_stage" => r.stage = Some(r.stage.unwrap_or(0.0).max(s.value)),
            "aifb_loadgen_offered_rate" => r.offered = Some(r.offered.unwrap_or(0.0) + s.value),
            "aifb_loadgen_target_concurrency" => r.users = Some(r.users.unwrap_or(0.0) + s.value),
            "aifb_loadgen_requests_total" => {
                *r.requests
                    .entry(label(s, "outcome").unwrap_or("?").to_string())
                    .or_default() += s.value;
            }
            "aifb_loadgen_request_duration_seconds_bucket" => {
                let le = match label(s, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::NAN),
                    None => f64::NAN,
                };
                if le.is_nan() {
                    continue;
                }
                let e = r.buckets.entry(le.to_bits()).or_insert((le, 0.0));
                e.1 += s.value;
            }
            _ => {}
        }
    }
    r
}

/// The `q` quantile of the requests between two readings, by linear interpolation in the
/// bucket that holds it (Prometheus' `histogram_quantile`); `None` without requests.
pub fn quantile_between(before: &Reading, after: &Reading, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = after
        .buckets
        .values()
        .map(|(le, c)| {
            let prev = before.buckets.get(&le.to_bits()).map_or(0.0, |b| b.1);
            (*le, (c - prev).max(0.0))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let frac = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, count);
    }
    None
}

/// One status line from two readings `secs` apart.
pub fn line(state: &str, before: &Reading, after: &Reading, secs: f64) -> String {
    let total = |r: &Reading| r.requests.values().sum::<f64>();
    let failed = |r: &Reading| {
        r.requests
            .iter()
            .filter(|(k, _)| k.as_str() != "ok")
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let rate = (total(after) - total(before)).max(0.0) / secs.max(1e-9);
    let errors = (failed(after) - failed(before)).max(0.0);
    let level = match (after.offered, after.users) {
        (Some(o), _) if o > 0.0 => format!("offered {o:.1}/s"),
        (_, Some(u)) if u > 0.0 => format!("users {u:.0}"),
        _ => "idle".into(),
    };
    let p99 = quantile_between(before, after, 0.99)
        .map_or("n/a".to_string(), |v| format!("{:.1} ms", v * 1e3));
    format!(
        "{state:<9} stage {:<3} {level:<18} achieved {rate:>9.1}/s  p99 {p99:>10}  errors {errors:.0}",
        after.stage.map_or("-".to_string(), |s| format!("{s:.0}")),
    )
}

async fn fetch(client: &reqwest::Client, url: &str) -> Option<Vec<Sample>> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    promtext::parse(&text).ok()
}

/// The /metrics URLs of a run's live loadgens.
fn loadgen_urls(state_dir: &Path, run_id: &str) -> Vec<String> {
    discovery::read_run(state_dir, run_id)
        .into_iter()
        .filter(|r| r.role.starts_with("loadgen") && r.state == State::Ready)
        .map(|r| format!("http://{}/metrics", r.addr))
        .collect()
}

async fn read_all(client: &reqwest::Client, urls: &[String]) -> Option<Reading> {
    let mut samples = Vec::new();
    for u in urls {
        samples.extend(fetch(client, u).await?);
    }
    Some(reading(&samples))
}

/// `aifb watch [RUN]`: prints a line every `interval` seconds until the run ends.
pub fn watch(root: &Path, run: Option<&str>, interval: f64) -> Result<(), Failure> {
    let (path, _) = crate::runs::find(root, run)?;
    let dir = RunDir::new(&path);
    let every = Duration::try_from_secs_f64(interval)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| Failure::input(format!("--interval {interval}: must be at least 0.1")))?;
    let state_dir = crate::local::state_dir(root);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Failure::check(format!("HTTP client: {e}")))?;
        let mut last: Option<(Instant, Reading)> = None;
        loop {
            let m = Manifest::read(&dir.manifest()).map_err(Failure::input)?;
            let state = crate::runs::state(&m);
            if m.status.is_final() || state == "STALE" {
                println!("{state:<9} {}", m.error.as_deref().unwrap_or("run ended"));
                return Ok(());
            }
            let urls = loadgen_urls(&state_dir, &m.id);
            let now = Instant::now();
            match (urls.is_empty(), read_all(&client, &urls).await) {
                (false, Some(r)) => {
                    if let Some((t, before)) = &last {
                        println!(
                            "{}",
                            line(&state, before, &r, now.duration_since(*t).as_secs_f64())
                        );
                    }
                    last = Some((now, r));
                }
                _ => {
                    println!("{state:<9} waiting for the loadgen");
                    last = None;
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    fn hist(counts: [f64; 3], ok: f64, err: f64) -> Vec<Sample> {
        let b = "aifb_loadgen_request_duration_seconds_bucket";
        vec![
            sample(b, &[("op", "chat"), ("le", "0.1")], counts[0]),
            sample(b, &[("op", "chat"), ("le", "0.2")], counts[1]),
            sample(b, &[("op", "chat"), ("le", "+Inf")], counts[2]),
            sample(
                "aifb_loadgen_requests_total",
                &[("op", "chat"), ("outcome", "ok")],
                ok,
            ),
            sample(
                "aifb_loadgen_requests_total",
                &[("op", "chat"), ("outcome", "timeout")],
                err,
            ),
            sample("aifb_loadgen_stage", &[], 2.0),
            sample("aifb_loadgen_offered_rate", &[], 50.0),
        ]
    }

    #[test]
    fn rates_and_quantiles_come_from_the_difference_of_two_readings() {
        let before = reading(&hist([100.0, 100.0, 100.0], 100.0, 0.0));
        // 100 new requests: 50 under 0.1 s, 50 between 0.1 and 0.2 s; 4 of them failed.
        let after = reading(&hist([150.0, 200.0, 200.0], 196.0, 4.0));
        let p50 = quantile_between(&before, &after, 0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-12);
        let p99 = quantile_between(&before, &after, 0.99).unwrap();
        assert!((p99 - 0.198).abs() < 1e-12);
        let l = line("RUNNING", &before, &after, 2.0);
        assert!(l.contains("stage 2"), "{l}");
        assert!(l.contains("offered 50.0/s"), "{l}");
        assert!(l.contains("achieved      50.0/s"), "{l}");
        assert!(l.contains("p99   198.0 ms"), "{l}");
        assert!(l.ends_with("errors 4"), "{l}");
    }

    #[test]
    fn no_new_requests_means_no_quantile() {
        let r = reading(&hist([1.0, 2.0, 3.0], 3.0, 0.0));
        assert_eq!(quantile_between(&r, &r, 0.99), None);
        assert!(line("RUNNING", &r, &r, 1.0).contains("n/a"));
    }

    #[test]
    fn shards_add_up() {
        let mut both = hist([0.0, 0.0, 10.0], 10.0, 0.0);
        both.extend(hist([0.0, 0.0, 10.0], 10.0, 0.0));
        let r = reading(&both);
        assert_eq!(r.offered, Some(100.0));
        assert_eq!(r.requests["ok"], 20.0);
        assert_eq!(r.stage, Some(2.0));
    }
}
