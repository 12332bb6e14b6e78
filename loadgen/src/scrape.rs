//! Scrapes `/metrics` endpoints (and the loadgen's own registry) every interval into
//! `metrics.parquet`, on the run's clock. Each source also gets an `up` sample (1 or 0),
//! as Prometheus records it.

use std::sync::Arc;
use std::time::Duration;

use aifb_core::clock::RunClock;
use aifb_core::metrics::{MetricSample, MetricsWriter};
use aifb_core::promtext;
use tokio::sync::watch;

use crate::telemetry::Telemetry;

/// One endpoint to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    /// `source` column value: `exporter`, `service`, ...
    pub source: String,
    /// Full URL of the metrics endpoint.
    pub url: String,
    /// A header sent with every scrape (the service's API key), never logged.
    pub header: Option<(String, String)>,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (source, url) = s
            .split_once('=')
            .ok_or_else(|| format!("--scrape {s:?}: expected SOURCE=URL"))?;
        if source.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--scrape {s:?}: expected SOURCE=http://HOST:PORT/PATH"
            ));
        }
        Ok(Target {
            source: source.to_string(),
            url: url.to_string(),
            header: None,
        })
    }
}

/// Turns exposition text into samples with sorted labels.
pub fn to_samples(
    text: &str,
    source: &str,
    t_ms: i64,
) -> Result<Vec<MetricSample>, promtext::ParseError> {
    Ok(promtext::parse(text)?
        .into_iter()
        .map(|s| {
            let mut labels = s.labels;
            labels.sort();
            MetricSample {
                t_ms,
                source: source.to_string(),
                metric: s.name,
                labels,
                value: s.value,
            }
        })
        .collect())
}

fn up(source: &str, t_ms: i64, value: f64) -> MetricSample {
    MetricSample {
        t_ms,
        source: source.to_string(),
        metric: "up".into(),
        labels: vec![],
        value,
    }
}

async fn scrape_once(
    client: &reqwest::Client,
    targets: &[Target],
    clock: &RunClock,
    telemetry: &Telemetry,
    warned: &mut [bool],
) -> Vec<MetricSample> {
    let t_ms = clock.now_ns() / 1_000_000;
    let mut out = Vec::new();
    let fetches = targets.iter().map(|t| async move {
        let mut req = client.get(&t.url);
        if let Some((k, v)) = &t.header {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        resp.text().await.map_err(|e| e.to_string())
    });
    let results = futures_util::future::join_all(fetches).await;
    for ((t, result), warned) in targets.iter().zip(results).zip(warned.iter_mut()) {
        let parsed =
            result.and_then(|text| to_samples(&text, &t.source, t_ms).map_err(|e| e.to_string()));
        match parsed {
            Ok(samples) => {
                out.extend(samples);
                out.push(up(&t.source, t_ms, 1.0));
            }
            Err(e) => {
                if !*warned {
                    tracing::warn!("scrape of {} ({}) failed: {e}", t.source, t.url);
                    *warned = true;
                }
                out.push(up(&t.source, t_ms, 0.0));
            }
        }
    }
    match to_samples(&telemetry.encode(), "loadgen", t_ms) {
        Ok(samples) => out.extend(samples),
        Err(e) => tracing::warn!("own metrics did not parse: {e}"),
    }
    out
}

/// Scrapes every `interval` until `stop` turns true, then once more; returns the writer
/// (still open) so the caller can add the footer.
pub async fn run(
    targets: Vec<Target>,
    interval: Duration,
    clock: RunClock,
    telemetry: Arc<Telemetry>,
    mut writer: MetricsWriter,
    mut stop: watch::Receiver<bool>,
) -> (MetricsWriter, Option<String>) {
    let client = reqwest::Client::builder()
        .timeout(interval.clamp(Duration::from_millis(200), Duration::from_secs(5)))
        .build()
        .unwrap_or_default();
    let mut warned = vec![false; targets.len()];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failure = None;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let samples = scrape_once(&client, &targets, &clock, &telemetry, &mut warned).await;
        if failure.is_none()
            && let Err(e) = writer.extend(samples)
        {
            tracing::error!("{e}");
            failure = Some(e);
        }
        if last {
            return (writer, failure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t: Target = "exporter=http://127.0.0.1:9/metrics".parse().unwrap();
        assert_eq!(t.source, "exporter");
        assert!("nope".parse::<Target>().is_err());
        assert!("x=ftp://a".parse::<Target>().is_err());
    }

    #[test]
    fn samples_have_sorted_labels() {
        let s = to_samples("m{b=\"2\",a=\"1\"} 3\n", "svc", 7).unwrap();
        assert_eq!(
            s[0].labels,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
        assert_eq!((s[0].t_ms, s[0].source.as_str()), (7, "svc"));
    }
}
