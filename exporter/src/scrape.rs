//! One scrape: every enabled collector runs on its own blocking thread, all under one
//! deadline; a collector that fails, or is still running at the deadline, yields
//! `aifb_scrape_collector_success{collector} 0` and the rest of the scrape is served.
//! Families are encoded with prometheus-client (OpenMetrics text).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::collector::{Collector, Family, Kind};

type Shared = Arc<Mutex<Box<dyn Collector>>>;

/// The set of enabled collectors.
#[derive(Clone)]
pub struct Scraper {
    collectors: Vec<(&'static str, Shared, bool)>,
}

/// What one collector produced in one scrape.
struct Outcome {
    families: Vec<Family>,
    error: Option<String>,
    took: Duration,
}

fn run_one(c: &Shared) -> Outcome {
    let start = Instant::now();
    let mut families = Vec::new();
    // A collector still busy with an earlier, timed-out scrape is skipped, not waited for.
    let error = match c.try_lock() {
        Ok(mut guard) => guard.collect(&mut families).err(),
        Err(std::sync::TryLockError::WouldBlock) => {
            Some("still running from an earlier scrape".into())
        }
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().collect(&mut families).err(),
    };
    Outcome {
        families,
        error,
        took: start.elapsed(),
    }
}

impl Scraper {
    /// Wraps collectors.
    pub fn new(collectors: Vec<Box<dyn Collector>>) -> Self {
        Self {
            collectors: collectors
                .into_iter()
                .map(|c| (c.name(), c.may_block(), c))
                .map(|(name, blocks, c)| (name, Arc::new(Mutex::new(c)), blocks))
                .collect(),
        }
    }

    /// Names of the collectors, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.collectors.iter().map(|(n, _, _)| *n).collect()
    }

    /// Runs every collector once, waiting at most `deadline`: those that may block each on
    /// a thread of their own, the others together on one. Returns all families, health
    /// families included.
    pub async fn collect(&self, deadline: Duration) -> Vec<Family> {
        let start = Instant::now();
        let (local, isolated): (Vec<_>, Vec<_>) = self
            .collectors
            .iter()
            .cloned()
            .partition(|(_, _, blocks)| !blocks);
        let mut groups: Vec<Vec<(&'static str, Shared, bool)>> =
            isolated.into_iter().map(|c| vec![c]).collect();
        if !local.is_empty() {
            groups.insert(0, local);
        }
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let names: Vec<&'static str> = group.iter().map(|(n, _, _)| *n).collect();
                let task = tokio::task::spawn_blocking(move || {
                    group.iter().map(|(_, c, _)| run_one(c)).collect::<Vec<_>>()
                });
                (names, task)
            })
            .collect();
        let mut out = Vec::new();
        let mut success = Family::new(
            "aifb_scrape_collector_success",
            "Whether the collector succeeded in this scrape",
            Kind::Gauge,
        );
        let mut duration = Family::new(
            "aifb_scrape_collector_duration_seconds",
            "Time the collector took in this scrape",
            Kind::Gauge,
        );
        let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();
        for (names, handle) in handles {
            let left = deadline.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, handle).await {
                Ok(Ok(results)) => outcomes.extend(names.into_iter().zip(results)),
                Ok(Err(e)) => outcomes.extend(names.into_iter().map(|n| {
                    (
                        n,
                        Outcome {
                            families: vec![],
                            error: Some(format!("collector panicked: {e}")),
                            took: start.elapsed(),
                        },
                    )
                })),
                Err(_) => outcomes.extend(names.into_iter().map(|n| {
                    let error = format!(
                        "did not finish within the {:.1}s scrape deadline",
                        deadline.as_secs_f64()
                    );
                    (
                        n,
                        Outcome {
                            families: vec![],
                            error: Some(error),
                            took: start.elapsed(),
                        },
                    )
                })),
            }
        }
        let order = self.names();
        outcomes.sort_by_key(|(n, _)| order.iter().position(|o| o == n));
        for (name, outcome) in outcomes {
            if let Some(e) = &outcome.error {
                tracing::debug!("collector {name} failed: {e}");
            }
            success.push(
                vec![("collector", name.to_string())],
                if outcome.error.is_none() { 1.0 } else { 0.0 },
            );
            duration.push(
                vec![("collector", name.to_string())],
                outcome.took.as_secs_f64(),
            );
            out.extend(outcome.families);
        }
        let mut build = Family::new("aifb_exporter_build", "Version of the exporter", Kind::Info);
        build.push(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        );
        out.extend([success, duration, build]);
        out
    }
}

/// Families frozen for one encoding.
#[derive(Debug)]
struct Snapshot(std::sync::Arc<Vec<Family>>);

fn encode_families(
    families: &[Family],
    mut encoder: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    for f in families {
        if f.samples.is_empty() {
            continue;
        }
        let metric_type = match f.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Info => MetricType::Info,
        };
        let mut me = encoder.encode_descriptor(f.name, f.help, None, metric_type)?;
        if let [(labels, value)] = f.samples.as_slice()
            && labels.is_empty()
        {
            match f.kind {
                Kind::Info => me.encode_info(labels)?,
                Kind::Counter => ConstCounter::new(*value).encode(me)?,
                Kind::Gauge => ConstGauge::new(*value).encode(me)?,
            }
            continue;
        }
        for (labels, value) in &f.samples {
            match f.kind {
                Kind::Info => me.encode_info(labels)?,
                Kind::Counter => ConstCounter::new(*value).encode(me.encode_family(labels)?)?,
                Kind::Gauge => ConstGauge::new(*value).encode(me.encode_family(labels)?)?,
            }
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_families(&self.0, encoder)
    }
}

/// Encodes families as OpenMetrics text.
pub fn encode(families: std::sync::Arc<Vec<Family>>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!("encoding failed: {e}");
    }
    text
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(v: f64, out: &mut String) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Encodes families directly in the classic text format (what `promtool` and scrapers
/// that do not ask for OpenMetrics read): counters take their `_total` name, info families
/// become gauges named `_info`.
pub fn encode_classic(families: &[Family]) -> String {
    let mut out = String::with_capacity(families.len() * 160);
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let (suffix, kind) = match f.kind {
            Kind::Counter => ("_total", "counter"),
            Kind::Gauge => ("", "gauge"),
            Kind::Info => ("_info", "gauge"),
        };
        for line in [("# HELP ", f.help), ("# TYPE ", kind)] {
            out.push_str(line.0);
            out.push_str(f.name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(line.1);
            out.push('\n');
        }
        for (labels, value) in &f.samples {
            out.push_str(f.name);
            out.push_str(suffix);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            push_value(if f.kind == Kind::Info { 1.0 } else { *value }, &mut out);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;
    impl Collector for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
            out.push(Family::single(
                "aifb_test_partial",
                "pushed before the failure",
                Kind::Gauge,
                2.0,
            ));
            Err("boom".into())
        }
    }

    struct Fine;
    impl Collector for Fine {
        fn name(&self) -> &'static str {
            "fine"
        }
        fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
            let mut f = Family::new("aifb_test_events", "events", Kind::Counter);
            f.push(vec![("kind", "a\"b".into())], 3.0);
            out.push(f);
            Ok(())
        }
    }

    /// Blocks until the test process ends: a probe target that never answers.
    struct Hanging(std::sync::mpsc::Receiver<()>);
    impl Collector for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn may_block(&self) -> bool {
            true
        }
        fn collect(&mut self, _: &mut Vec<Family>) -> Result<(), String> {
            let _ = self.0.recv();
            Ok(())
        }
    }

    fn samples(families: Vec<Family>) -> Vec<aifb_core::promtext::Sample> {
        let families = std::sync::Arc::new(families);
        let direct = aifb_core::promtext::parse(&encode_classic(&families)).unwrap();
        let via_openmetrics =
            aifb_core::promtext::parse(&aifb_core::promtext::to_classic(&encode(families)))
                .unwrap();
        // Both encodings say the same thing.
        assert_eq!(format!("{direct:?}"), format!("{via_openmetrics:?}"));
        direct
    }

    fn get(
        s: &[aifb_core::promtext::Sample],
        name: &str,
        label: Option<(&str, &str)>,
    ) -> Option<f64> {
        s.iter()
            .find(|s| {
                s.name == name
                    && label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

    #[tokio::test]
    async fn failing_collector_costs_only_itself() {
        let scraper = Scraper::new(vec![Box::new(Failing), Box::new(Fine)]);
        let s = samples(scraper.collect(Duration::from_secs(5)).await);
        assert_eq!(
            get(
                &s,
                "aifb_scrape_collector_success",
                Some(("collector", "failing"))
            ),
            Some(0.0)
        );
        assert_eq!(
            get(
                &s,
                "aifb_scrape_collector_success",
                Some(("collector", "fine"))
            ),
            Some(1.0)
        );
        assert_eq!(
            get(&s, "aifb_test_events_total", Some(("kind", "a\"b"))),
            Some(3.0)
        );
        assert_eq!(get(&s, "aifb_test_partial", None), Some(2.0));
        assert_eq!(get(&s, "aifb_exporter_build_info", None), Some(1.0));
    }

    #[tokio::test]
    async fn a_hanging_collector_does_not_hold_the_scrape() {
        let (_keep, rx) = std::sync::mpsc::channel();
        let scraper = Scraper::new(vec![Box::new(Hanging(rx)), Box::new(Fine)]);
        let s = samples(scraper.collect(Duration::from_millis(200)).await);
        assert_eq!(
            get(
                &s,
                "aifb_scrape_collector_success",
                Some(("collector", "hanging"))
            ),
            Some(0.0)
        );
        assert_eq!(get(&s, "aifb_test_events_total", None), Some(3.0));
        // The next scrape finds it still busy and does not wait for it either.
        let s = samples(scraper.collect(Duration::from_secs(30)).await);
        assert_eq!(
            get(
                &s,
                "aifb_scrape_collector_success",
                Some(("collector", "hanging"))
            ),
            Some(0.0)
        );
    }
}
