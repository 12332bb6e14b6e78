//! Probe collector: asks each configured service whether it is up, how long that took,
//! and, for some kinds, a few of its own counters.
//!
//! | kind | probe | extra series |
//! |---|---|---|
//! | `redis` | `INFO` | commands processed, clients, memory, keyspace hits and misses |
//! | `postgres` | `pg_stat_database`, summed | commits, rollbacks, backends, blocks hit and read |
//! | `vllm` | `GET /health` | (vLLM's own `/metrics` is scraped directly) |
//! | `ollama` | `GET /api/ps` | loaded models, their VRAM |
//! | `qdrant` | `GET /readyz` | |
//! | `chroma` | `GET /api/v2/heartbeat` | |
//! | `minio` | `GET /minio/health/ready` | |
//! | `http` | `GET` of the URL as given | |
//!
//! Every probe has its own timeout; a target that hangs costs its probe, never the scrape.

use std::time::{Duration, Instant};

use super::{Collector, Family, Kind};

/// Service kinds the collector can probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Redis `INFO`.
    Redis,
    /// PostgreSQL statistics.
    Postgres,
    /// vLLM `/health`.
    Vllm,
    /// Ollama `/api/ps`.
    Ollama,
    /// Qdrant `/readyz`.
    Qdrant,
    /// ChromaDB heartbeat.
    Chroma,
    /// MinIO readiness.
    Minio,
    /// Any URL answering 2xx.
    Http,
}

impl ProbeKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "redis" => Self::Redis,
            "postgres" | "postgresql" => Self::Postgres,
            "vllm" => Self::Vllm,
            "ollama" => Self::Ollama,
            "qdrant" => Self::Qdrant,
            "chroma" | "chromadb" => Self::Chroma,
            "minio" | "s3" => Self::Minio,
            "http" => Self::Http,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Vllm => "vllm",
            Self::Ollama => "ollama",
            Self::Qdrant => "qdrant",
            Self::Chroma => "chroma",
            Self::Minio => "minio",
            Self::Http => "http",
        }
    }

    fn health_path(self) -> &'static str {
        match self {
            Self::Vllm => "/health",
            Self::Ollama => "/api/ps",
            Self::Qdrant => "/readyz",
            Self::Chroma => "/api/v2/heartbeat",
            Self::Minio => "/minio/health/ready",
            _ => "",
        }
    }
}

/// One probe target: `KIND=URL` or `KIND=URL@SERVICE` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Kind.
    pub kind: ProbeKind,
    /// `redis://…`, `postgresql://…` or `http://…`.
    pub url: String,
    /// `service` label (defaults to the kind).
    pub service: String,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("--probe {s:?}: expected KIND=URL[@SERVICE]"))?;
        let kind = ProbeKind::parse(kind).ok_or_else(|| {
            format!("--probe {s:?}: unknown kind {kind:?} (redis, postgres, vllm, ollama, qdrant, chroma, minio, http)")
        })?;
        let (url, service) = match rest.rsplit_once('@') {
            Some((u, svc)) if !svc.contains('/') && !svc.contains(':') => {
                (u.to_string(), svc.to_string())
            }
            _ => (rest.to_string(), kind.name().to_string()),
        };
        let ok_scheme = match kind {
            ProbeKind::Redis => url.starts_with("redis://"),
            ProbeKind::Postgres => {
                url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.contains("host=")
            }
            _ => url.starts_with("http://") || url.starts_with("https://"),
        };
        if !ok_scheme {
            return Err(format!(
                "--probe {s:?}: URL does not suit a {} probe",
                kind.name()
            ));
        }
        Ok(Target { kind, url, service })
    }
}

/// Numbers a probe read, by metric.
type Extra = Vec<(&'static str, &'static str, Kind, f64)>;

/// Parses the fields of Redis `INFO` the collector exports.
pub fn parse_redis_info(info: &str) -> Extra {
    let get = |key: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    };
    let mut out = Extra::new();
    let fields: [(&str, &'static str, &'static str, Kind); 5] = [
        (
            "total_commands_processed",
            "aifb_redis_commands_processed",
            "Commands processed by the server",
            Kind::Counter,
        ),
        (
            "connected_clients",
            "aifb_redis_connected_clients",
            "Client connections",
            Kind::Gauge,
        ),
        (
            "used_memory",
            "aifb_redis_memory_used_bytes",
            "Memory allocated by Redis",
            Kind::Gauge,
        ),
        (
            "keyspace_hits",
            "aifb_redis_keyspace_hits",
            "Successful key lookups",
            Kind::Counter,
        ),
        (
            "keyspace_misses",
            "aifb_redis_keyspace_misses",
            "Failed key lookups",
            Kind::Counter,
        ),
    ];
    for (key, name, help, kind) in fields {
        if let Some(v) = get(key) {
            out.push((name, help, kind, v));
        }
    }
    out
}

/// Parses Ollama's `/api/ps` answer: loaded models and their summed VRAM.
pub fn parse_ollama_ps(body: &str) -> Result<Extra, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("/api/ps is not JSON: {e}"))?;
    let models = v
        .get("models")
        .and_then(|m| m.as_array())
        .ok_or("/api/ps has no models list")?;
    let vram: f64 = models
        .iter()
        .filter_map(|m| m.get("size_vram").and_then(|s| s.as_f64()))
        .sum();
    Ok(vec![
        (
            "aifb_ollama_loaded_models",
            "Models loaded by Ollama",
            Kind::Gauge,
            models.len() as f64,
        ),
        (
            "aifb_ollama_vram_bytes",
            "VRAM used by the loaded models",
            Kind::Gauge,
            vram,
        ),
    ])
}

fn probe_redis(url: &str, timeout: Duration) -> Result<Extra, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    Ok(parse_redis_info(&info))
}

fn probe_postgres(url: &str, timeout: Duration) -> Result<Extra, String> {
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| e.to_string())?;
    config.connect_timeout(timeout);
    let mut client = config.connect(postgres::NoTls).map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT COALESCE(sum(xact_commit),0)::float8, COALESCE(sum(xact_rollback),0)::float8, \
             COALESCE(sum(numbackends),0)::float8, COALESCE(sum(blks_hit),0)::float8, COALESCE(sum(blks_read),0)::float8 \
             FROM pg_stat_database",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let v = |i: usize| row.try_get::<_, f64>(i).map_err(|e| e.to_string());
    Ok(vec![
        (
            "aifb_postgres_commits",
            "Transactions committed, all databases",
            Kind::Counter,
            v(0)?,
        ),
        (
            "aifb_postgres_rollbacks",
            "Transactions rolled back, all databases",
            Kind::Counter,
            v(1)?,
        ),
        (
            "aifb_postgres_backends",
            "Backends connected, all databases",
            Kind::Gauge,
            v(2)?,
        ),
        (
            "aifb_postgres_blocks_hit",
            "Buffer cache hits, all databases",
            Kind::Counter,
            v(3)?,
        ),
        (
            "aifb_postgres_blocks_read",
            "Blocks read from disk, all databases",
            Kind::Counter,
            v(4)?,
        ),
    ])
}

/// The probe collector.
pub struct Probes {
    targets: Vec<Target>,
    timeout: Duration,
    http: Option<reqwest::blocking::Client>,
}

impl Probes {
    /// Probes `targets`, each with `timeout`.
    pub fn new(targets: Vec<Target>, timeout: Duration) -> Self {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .ok();
        Self {
            targets,
            timeout,
            http,
        }
    }

    fn probe(&self, t: &Target) -> Result<Extra, String> {
        match t.kind {
            ProbeKind::Redis => probe_redis(&t.url, self.timeout),
            ProbeKind::Postgres => probe_postgres(&t.url, self.timeout),
            kind => {
                let http = self.http.as_ref().ok_or("no HTTP client")?;
                let url = format!("{}{}", t.url.trim_end_matches('/'), kind.health_path());
                let resp = http.get(&url).send().map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("{url}: HTTP {}", resp.status()));
                }
                if kind == ProbeKind::Ollama {
                    return parse_ollama_ps(&resp.text().map_err(|e| e.to_string())?);
                }
                Ok(Vec::new())
            }
        }
    }
}

impl Collector for Probes {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn may_block(&self) -> bool {
        true
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
        let mut up = Family::new(
            "aifb_service_up",
            "Whether the service answered its probe",
            Kind::Gauge,
        );
        let mut took = Family::new(
            "aifb_service_probe_duration_seconds",
            "Time the probe took",
            Kind::Gauge,
        );
        let mut extra: std::collections::BTreeMap<&'static str, Family> = Default::default();
        for t in &self.targets {
            let start = Instant::now();
            let result = self.probe(t);
            let labels = || {
                vec![
                    ("service", t.service.clone()),
                    ("kind", t.kind.name().to_string()),
                ]
            };
            took.push(labels(), start.elapsed().as_secs_f64());
            match result {
                Ok(values) => {
                    up.push(labels(), 1.0);
                    for (name, help, kind, v) in values {
                        extra
                            .entry(name)
                            .or_insert_with(|| Family::new(name, help, kind))
                            .push(vec![("service", t.service.clone())], v);
                    }
                }
                Err(e) => {
                    tracing::debug!("probe {} {}: {e}", t.kind.name(), t.url);
                    up.push(labels(), 0.0);
                }
            }
        }
        out.push(up);
        out.push(took);
        out.extend(extra.into_values());
        // A service that is down is a finding, not a collector failure.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_optional_service() {
        let t: Target = "redis=redis://127.0.0.1:6379@cache".parse().unwrap();
        assert_eq!(
            (t.kind, t.url.as_str(), t.service.as_str()),
            (ProbeKind::Redis, "redis://127.0.0.1:6379", "cache")
        );
        let t: Target = "vllm=http://10.0.0.1:8000".parse().unwrap();
        assert_eq!(t.service, "vllm");
        let t: Target = "postgres=postgresql://bench@127.0.0.1:5432/bench"
            .parse()
            .unwrap();
        assert_eq!(
            (t.url.as_str(), t.service.as_str()),
            ("postgresql://bench@127.0.0.1:5432/bench", "postgres")
        );
        assert!(
            "mongo=mongodb://x"
                .parse::<Target>()
                .unwrap_err()
                .contains("unknown kind")
        );
        assert!(
            "redis=http://x"
                .parse::<Target>()
                .unwrap_err()
                .contains("does not suit")
        );
        assert!("redis".parse::<Target>().is_err());
    }

    #[test]
    fn redis_info_fields() {
        let info = "# Stats\r\ntotal_commands_processed:1200\r\nkeyspace_hits:7\r\nkeyspace_misses:3\r\n# Clients\r\nconnected_clients:2\r\nused_memory:1048576\r\n";
        let v = parse_redis_info(info);
        assert_eq!(v.len(), 5);
        assert!(v.contains(&(
            "aifb_redis_commands_processed",
            "Commands processed by the server",
            Kind::Counter,
            1200.0
        )));
        assert!(
            v.iter()
                .any(|x| x.0 == "aifb_redis_memory_used_bytes" && x.3 == 1_048_576.0)
        );
    }

    #[test]
    fn ollama_ps_as_documented() {
        // The shape of Ollama's documented /api/ps answer.
        let body = r#"{"models":[{"name":"mistral:latest","model":"mistral:latest","size":5137025024,"digest":"2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8","details":{"format":"gguf","family":"llama"},"expires_at":"2024-06-04T14:38:31.83753-07:00","size_vram":5137025024}]}"#;
        let v = parse_ollama_ps(body).unwrap();
        assert_eq!(v[0].3, 1.0);
        assert_eq!(v[1].3, 5_137_025_024.0);
        assert!(parse_ollama_ps("not json").is_err());
    }

    #[test]
    fn unreachable_targets_are_down_not_failures() {
        // Nothing listens on port 1 of loopback.
        let targets = vec![
            "redis=redis://127.0.0.1:1".parse().unwrap(),
            "vllm=http://127.0.0.1:1".parse().unwrap(),
        ];
        let mut c = Probes::new(targets, Duration::from_millis(500));
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert!(out[0].samples.iter().all(|(_, v)| *v == 0.0));
        assert_eq!(out[0].samples.len(), 2);
    }
}
