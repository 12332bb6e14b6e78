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
    collectors: Vec<(&'static str, Shared)>,
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
                .map(|c| (c.name(), Arc::new(Mutex::new(c))))
                .collect(),
        }
    }

    /// Names of the collectors, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.collectors.iter().map(|(n, _)| *n).collect()
    }

    /// Runs every collector once, in parallel, waiting at most `deadline`. Returns all
    /// families, health families included.
    pub async fn collect(&self, deadline: Duration) -> Vec<Family> {
        let start = Instant::now();
        let handles: Vec<_> = self
            .collectors
            .iter()
            .map(|(name, c)| {
                let c = c.clone();
                (*name, tokio::task::spawn_blocking(move || run_one(&c)))
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
        for (name, handle) in handles {
            let left = deadline.saturating_sub(start.elapsed());
            let outcome = match tokio::time::timeout(left, handle).await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => Outcome {
                    families: vec![],
                    error: Some(format!("collector panicked: {e}")),
                    took: start.elapsed(),
                },
                Err(_) => Outcome {
                    families: vec![],
                    error: Some(format!(
                        "did not finish within the {:.1}s scrape deadline",
                        deadline.as_secs_f64()
                    )),
                    took: start.elapsed(),
                },
            };
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
struct Snapshot(Vec<Family>);

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
pub fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!("encoding failed: {e}");
    }
    text
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
        fn collect(&mut self, _: &mut Vec<Family>) -> Result<(), String> {
            let _ = self.0.recv();
            Ok(())
        }
    }

    fn samples(families: Vec<Family>) -> Vec<aifb_core::promtext::Sample> {
        aifb_core::promtext::parse(&aifb_core::promtext::to_classic(&encode(families))).unwrap()
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
