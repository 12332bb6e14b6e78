//! One scrape: runs every enabled collector, times it, and encodes its families together
//! with `aifb_scrape_collector_success{collector}`, `aifb_scrape_collector_duration_seconds`
//! and `aifb_exporter_build_info`. Plugged into prometheus-client as a custom collector.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::collector::{Collector, Family, Kind};

/// The set of enabled collectors.
pub struct Scraper {
    collectors: Mutex<Vec<Box<dyn Collector>>>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraper")
    }
}

impl Scraper {
    /// Wraps collectors.
    pub fn new(collectors: Vec<Box<dyn Collector>>) -> Self {
        Self {
            collectors: Mutex::new(collectors),
        }
    }

    /// Runs every collector once; returns all families, health families included.
    pub fn collect(&self) -> Vec<Family> {
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
        let mut collectors = match self.collectors.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for c in collectors.iter_mut() {
            let start = Instant::now();
            let ok = match c.collect(&mut out) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("collector {} failed: {e}", c.name());
                    false
                }
            };
            success.push(
                vec![("collector", c.name().to_string())],
                if ok { 1.0 } else { 0.0 },
            );
            duration.push(
                vec![("collector", c.name().to_string())],
                start.elapsed().as_secs_f64(),
            );
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

impl prometheus_client::collector::Collector for Scraper {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_families(&self.collect(), encoder)
    }
}

/// A registry holding the scraper; encode it with prometheus-client's text encoder.
pub fn registry(scraper: Scraper) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(scraper));
    r
}

/// Encodes one scrape as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
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

    #[test]
    fn failing_collector_costs_only_itself() {
        let r = registry(Scraper::new(vec![Box::new(Failing), Box::new(Fine)]));
        let classic = aifb_core::promtext::to_classic(&encode(&r));
        let samples = aifb_core::promtext::parse(&classic).unwrap();
        let get = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|s| {
                    s.name == name
                        && label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
                })
                .map(|s| s.value)
        };
        assert_eq!(
            get(
                "aifb_scrape_collector_success",
                Some(("collector", "failing"))
            ),
            Some(0.0)
        );
        assert_eq!(
            get("aifb_scrape_collector_success", Some(("collector", "fine"))),
            Some(1.0)
        );
        assert_eq!(
            get("aifb_test_events_total", Some(("kind", "a\"b"))),
            Some(3.0)
        );
        assert_eq!(get("aifb_test_partial", None), Some(2.0));
        assert_eq!(get("aifb_exporter_build_info", None), Some(1.0));
        assert!(
            classic.contains("# TYPE aifb_test_events_total counter"),
            "{classic}"
        );
    }
}
