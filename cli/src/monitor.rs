//! The monitor group of a SLURM run: a Prometheus that discovers the run's exporter,
//! service and loadgen through file_sd and evaluates aifb's rules, and optionally a
//! Grafana provisioned with aifb's dashboards. On SIGTERM the TSDB is snapshotted into
//! the run directory (`prometheus/snapshot/`), so the run can be looked at, or exported
//! with `aifb export --prometheus`, after the job is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aifb_core::clock::{rfc3339, wall_ns};
use aifb_core::discovery::{Record, State};
use aifb_core::exit::Failure;
use aifb_core::recipe::Recipe;
use aifb_core::run::{Manifest, RunDir};
use tokio::signal::unix::{SignalKind, signal};

use crate::job::{copy_tree, free_port, wait_http};
use crate::procs::{self, Output, Proc};

/// aifb's recording and alerting rules.
pub const RULES: &str = include_str!("../../prometheus/rules/aifb.rules.yml");
/// The prometheus.yml template.
const PROMETHEUS_YML: &str = include_str!("../../prometheus/prometheus.yml");
/// Grafana's provisioning: the run's Prometheus as data source.
const DATASOURCE_YML: &str = include_str!("../../grafana/provisioning/datasources/aifb.yml");
/// Grafana's provisioning: aifb's dashboards folder.
const DASHBOARDS_YML: &str = include_str!("../../grafana/provisioning/dashboards/aifb.yml");
/// The dashboards, by file name.
pub const DASHBOARDS: &[(&str, &str)] = &[
    (
        "aifb-run-overview.json",
        include_str!("../../grafana/dashboards/aifb-run-overview.json"),
    ),
    (
        "aifb-llm-serving.json",
        include_str!("../../grafana/dashboards/aifb-llm-serving.json"),
    ),
    (
        "aifb-gpu.json",
        include_str!("../../grafana/dashboards/aifb-gpu.json"),
    ),
    (
        "aifb-host-job.json",
        include_str!("../../grafana/dashboards/aifb-host-job.json"),
    ),
    (
        "aifb-data-services.json",
        include_str!("../../grafana/dashboards/aifb-data-services.json"),
    ),
];

/// Renders prometheus.yml for a run.
pub fn prometheus_yml(recipe: &Recipe, dir: &RunDir) -> String {
    let interval = recipe.monitoring.prometheus.scrape_interval.get();
    let timeout = interval.mul_f64(0.8).max(Duration::from_millis(500));
    let prom = dir.root.join("prometheus");
    PROMETHEUS_YML
        .replace("{{interval}}", &format!("{}ms", interval.as_millis()))
        .replace("{{timeout}}", &format!("{}ms", timeout.as_millis()))
        .replace(
            "{{rules}}",
            &prom
                .join("rules")
                .join("aifb.rules.yml")
                .display()
                .to_string(),
        )
        .replace("{{targets}}", &prom.join("targets").display().to_string())
}

/// Writes Grafana's provisioning and dashboards under `<run>/grafana/`; returns the
/// provisioning folder.
pub fn provision_grafana(dir: &RunDir, prometheus_url: &str) -> std::io::Result<PathBuf> {
    let root = dir.root.join("grafana");
    let dashboards = root.join("dashboards");
    let prov = root.join("provisioning");
    std::fs::create_dir_all(&dashboards)?;
    std::fs::create_dir_all(prov.join("datasources"))?;
    std::fs::create_dir_all(prov.join("dashboards"))?;
    for (name, text) in DASHBOARDS {
        std::fs::write(dashboards.join(name), text)?;
    }
    std::fs::write(
        prov.join("datasources").join("aifb.yml"),
        DATASOURCE_YML.replace("{{prometheus_url}}", prometheus_url),
    )?;
    std::fs::write(
        prov.join("dashboards").join("aifb.yml"),
        DASHBOARDS_YML.replace("{{dashboards}}", &dashboards.display().to_string()),
    )?;
    Ok(prov)
}

fn announce(record: &mut Record, state_dir: &Path, state: State) {
    record.state = state;
    if state == State::Ready {
        record.ready_at = Some(rfc3339(wall_ns()));
    }
    if let Err(e) = record.write(state_dir) {
        eprintln!("aifb: warning: discovery record: {e}");
    }
}

fn record(m: &Manifest, role: &str, port: u16) -> Record {
    Record::this_process(
        &m.id,
        role,
        role,
        std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        State::Starting,
        &rfc3339(wall_ns()),
    )
}

/// Asks Prometheus for a TSDB snapshot and copies it into `<run>/prometheus/snapshot`.
async fn snapshot(
    client: &reqwest::Client,
    port: u16,
    tsdb: &Path,
    dir: &RunDir,
) -> Result<u64, String> {
    let url = format!("http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot");
    let v: serde_json::Value = client
        .post(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let name = v["data"]["name"]
        .as_str()
        .ok_or_else(|| format!("{url}: no snapshot name in {v}"))?;
    let target = dir.root.join("prometheus").join("snapshot");
    let _ = std::fs::remove_dir_all(&target);
    copy_tree(&tsdb.join("snapshots").join(name), &target)
        .map_err(|e| format!("copying the snapshot to {}: {e}", target.display()))
}

/// Runs the monitor group until SIGTERM or SIGINT.
pub async fn run(
    recipe: &Recipe,
    m: &Manifest,
    dir: &RunDir,
    state_dir: &Path,
    scratch: &Path,
) -> Result<(), Failure> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::check(format!("signal handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::check(format!("signal handler: {e}")))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::check(format!("HTTP client: {e}")))?;
    let logs = dir.logs();
    let prom_dir = dir.root.join("prometheus");
    let settings = &recipe.monitoring;
    let mut children: Vec<(Proc, Record)> = Vec::new();
    let mut prometheus: Option<(u16, PathBuf)> = None;

    if settings.prometheus.enabled {
        std::fs::create_dir_all(prom_dir.join("rules"))
            .and_then(|_| std::fs::create_dir_all(prom_dir.join("targets")))
            .and_then(|_| std::fs::write(prom_dir.join("rules").join("aifb.rules.yml"), RULES))
            .and_then(|_| {
                std::fs::write(prom_dir.join("prometheus.yml"), prometheus_yml(recipe, dir))
            })
            .map_err(|e| Failure::check(format!("{}: {e}", prom_dir.display())))?;
        let port = free_port()?;
        let tsdb = scratch.join(format!("aifb-{}-prometheus", m.id));
        std::fs::create_dir_all(&tsdb)
            .map_err(|e| Failure::check(format!("{}: {e}", tsdb.display())))?;
        let argv = vec![
            settings.prometheus.binary.clone(),
            format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address=0.0.0.0:{port}"),
            "--web.enable-admin-api".into(),
            "--web.enable-lifecycle".into(),
        ];
        let mut child =
            procs::spawn("prometheus", &argv, &logs, Output::Log, None).map_err(Failure::input)?;
        let mut rec = record(m, "prometheus", port);
        announce(&mut rec, state_dir, State::Starting);
        let ready = wait_http(
            &client,
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(120),
            || matches!(child.child.try_wait(), Ok(None)),
        )
        .await;
        if let Err(e) = ready {
            announce(&mut rec, state_dir, State::Failed);
            return Err(Failure::check(format!(
                "prometheus {e}; see {}",
                logs.join("prometheus.log").display()
            )));
        }
        announce(&mut rec, state_dir, State::Ready);
        eprintln!("aifb: prometheus ready at http://{}", rec.addr);
        prometheus = Some((port, tsdb));
        children.push((child, rec));
    }

    if settings.grafana.enabled {
        let prom_url = prometheus
            .as_ref()
            .map(|(p, _)| format!("http://127.0.0.1:{p}"))
            .unwrap_or_default();
        let prov = provision_grafana(dir, &prom_url)
            .map_err(|e| Failure::check(format!("grafana provisioning: {e}")))?;
        let port = free_port()?;
        let data = scratch.join(format!("aifb-{}-grafana", m.id));
        let _ = std::fs::create_dir_all(&data);
        let envs = vec![
            ("GF_SERVER_HTTP_PORT".to_string(), port.to_string()),
            ("GF_PATHS_PROVISIONING".into(), prov.display().to_string()),
            ("GF_PATHS_DATA".into(), data.display().to_string()),
            ("GF_AUTH_ANONYMOUS_ENABLED".into(), "true".into()),
            ("GF_AUTH_ANONYMOUS_ORG_ROLE".into(), "Viewer".into()),
            ("GF_ANALYTICS_REPORTING_ENABLED".into(), "false".into()),
        ];
        let argv = match (&settings.grafana.image, &settings.grafana.binary) {
            (_, Some(bin)) => vec![bin.clone(), "server".into()],
            (Some(image), None) => vec![
                recipe.executor.apptainer.binary.clone(),
                "exec".into(),
                "--bind".into(),
                dir.root.display().to_string(),
                "--bind".into(),
                data.display().to_string(),
                image.clone(),
                "grafana".into(),
                "server".into(),
                "--homepath".into(),
                "/usr/share/grafana".into(),
            ],
            (None, None) => {
                return Err(Failure::input(
                    "monitoring.grafana: enabled: true needs image (Apptainer) or binary",
                ));
            }
        };
        let mut child = procs::spawn_with_env("grafana", &argv, &logs, Output::Log, None, &envs)
            .map_err(Failure::input)?;
        let mut rec = record(m, "grafana", port);
        announce(&mut rec, state_dir, State::Starting);
        match wait_http(
            &client,
            &format!("http://127.0.0.1:{port}/api/health"),
            Duration::from_secs(120),
            || matches!(child.child.try_wait(), Ok(None)),
        )
        .await
        {
            Ok(_) => {
                announce(&mut rec, state_dir, State::Ready);
                eprintln!("aifb: grafana ready at http://{}", rec.addr);
            }
            // The benchmark does not need Grafana: go on without it.
            Err(e) => {
                announce(&mut rec, state_dir, State::Failed);
                eprintln!(
                    "aifb: warning: grafana {e}; see {}",
                    logs.join("grafana.log").display()
                );
            }
        }
        children.push((child, rec));
    }

    // The batch script asks for the end through a file: a signal to the step would also
    // reach Prometheus, which then could not take its snapshot.
    let stop_file = dir.root.join("slurm").join("stop-monitor");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if stop_file.exists() {
                    break;
                }
            }
        }
    }
    if let Some((port, tsdb)) = &prometheus {
        match snapshot(&client, *port, tsdb, dir).await {
            Ok(bytes) => {
                eprintln!("aifb: prometheus snapshot: {bytes} bytes in prometheus/snapshot")
            }
            Err(e) => eprintln!("aifb: warning: prometheus snapshot failed: {e}"),
        }
    }
    for (child, rec) in children.iter_mut().rev() {
        procs::stop(child, Duration::from_secs(20)).await;
        announce(rec, state_dir, State::Stopped);
    }
    if let Some((_, tsdb)) = &prometheus {
        let _ = std::fs::remove_dir_all(tsdb);
    }
    let _ = std::fs::remove_dir_all(scratch.join(format!("aifb-{}-grafana", m.id)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir() -> (tempfile::TempDir, RunDir, Recipe) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path().join("BM-20260101-000000-abcd"));
        std::fs::create_dir_all(dir.root.join("prometheus/rules")).unwrap();
        let recipe = Recipe::parse(
            "name: t\nservice: {kind: simulator}\nmonitoring:\n  prometheus: {scrape_interval: 2s}\nworkload: {pattern: closed, levels: [1], measure: 1s}\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        (tmp, dir, recipe)
    }

    #[test]
    fn prometheus_config_passes_promtool() {
        let (_tmp, dir, recipe) = run_dir();
        let text = prometheus_yml(&recipe, &dir);
        assert!(text.contains("scrape_interval: 2000ms"));
        assert!(text.contains("scrape_timeout: 1600ms"));
        assert!(text.contains(&format!("{}/prometheus/targets/*.json", dir.root.display())));
        let prom = dir.root.join("prometheus");
        std::fs::write(prom.join("rules/aifb.rules.yml"), RULES).unwrap();
        std::fs::write(prom.join("prometheus.yml"), &text).unwrap();
        let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
        match std::process::Command::new(promtool)
            .args(["check", "config"])
            .arg(prom.join("prometheus.yml"))
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            // The test script installs promtool; a bare `cargo test` may lack it.
            Err(e) => eprintln!("promtool not run: {e}"),
        }
    }

    #[test]
    fn grafana_provisioning_names_the_run_prometheus_and_dashboards() {
        let (_tmp, dir, _) = run_dir();
        let prov = provision_grafana(&dir, "http://n12:9090").unwrap();
        let ds = std::fs::read_to_string(prov.join("datasources/aifb.yml")).unwrap();
        assert!(ds.contains("url: http://n12:9090") && ds.contains("uid: aifb-prometheus"));
        let dash = std::fs::read_to_string(prov.join("dashboards/aifb.yml")).unwrap();
        let folder = dir.root.join("grafana/dashboards");
        assert!(dash.contains(&format!("path: {}", folder.display())));
        assert_eq!(
            std::fs::read_dir(&folder).unwrap().count(),
            DASHBOARDS.len()
        );
        for (_, text) in DASHBOARDS {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["panels"][0]["datasource"]["uid"], "aifb-prometheus");
        }
    }
}
