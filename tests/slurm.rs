//! `executor.kind: slurm` on a real SLURM: slurmctld, four slurmd ("nodes" on this host)
//! and munged from Debian, started by `scripts/slurm-cluster.sh` on free ports in a
//! temporary directory. A run completes through a heterogeneous job (service group,
//! two-node client group, monitor group with a real Prometheus); discovery appears and is
//! cleaned up; the TSDB snapshot serves `aifb export` and every PromQL expression of the
//! dashboards and rules; a cancelled run ends CANCELLED with its finished requests kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aifb_tests::{Server, bin, free_port, only_run, request_rows, wait_until, workspace};

/// A private SLURM cluster, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("aifb-slurm-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new("bash")
            .arg(workspace().join("scripts/slurm-cluster.sh"))
            .arg("up")
            .arg(dir.path())
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "SLURM did not start (scripts/test.sh installs slurm-wlm and munge): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.path().join("etc/slurm.conf");
        Cluster { dir, conf }
    }

    /// `aifb ARGS` in `cwd` with this cluster's SLURM_CONF.
    fn aifb(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(bin("aifb"))
            .args(args)
            .current_dir(cwd)
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("aifb runs")
    }

    fn squeue_empty(&self) -> bool {
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("squeue runs");
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace().join("scripts/slurm-cluster.sh"))
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}

fn recipe(name: &str, levels: &str, measure: &str, clients: u32) -> String {
    format!(
        r#"name: {name}
executor:
  kind: slurm
  partition: debug
  time: 15m
  service: {{cpus: 1, memory: 512M}}
  clients: {{nodes: {clients}, cpus: 1, memory: 512M}}
  monitor: {{cpus: 1, memory: 512M}}
service:
  kind: simulator
  model: sim-llm
  simulator:
    max_num_seqs: 8
monitoring:
  scrape_interval: 1s
  chunks: true
  prometheus:
    scrape_interval: 1s
workload:
  pattern: closed
  levels: {levels}
  warmup: 1s
  measure: {measure}
  cooldown: 1s
  request:
    op: chat
    prompt_tokens: 16
    max_tokens: 8
    stream: true
"#
    )
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).expect("run.json"))
        .expect("run.json is JSON")
}

fn records(runs: &Path, run_id: &str) -> Vec<serde_json::Value> {
    let dir = runs.join(".state/discover").join(run_id);
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|r| r["role"].as_str().unwrap_or_default().to_string());
    out
}

/// Every PromQL expression of the dashboards and rules, with where it comes from.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboards = workspace().join("grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).expect("dashboards") {
        let path = entry.expect("entry").path();
        let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    format!("{name}: {}", p["title"].as_str().unwrap()),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
        for a in d["annotations"]["list"].as_array().unwrap() {
            out.push((
                format!("{name}: annotation"),
                a["target"]["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let rules: serde_json::Value = yaml_serde::from_str(
        &std::fs::read_to_string(workspace().join("prometheus/rules/aifb.rules.yml")).unwrap(),
    )
    .unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let what = r["record"].as_str().or(r["alert"].as_str()).unwrap();
            let expr = r["expr"].as_str().unwrap().to_string();
            if r["alert"].is_string() {
                // An alert is a condition that should not hold in a healthy run: its
                // input series must exist; each one is checked on its own.
                for series in series_names(&expr) {
                    out.push((
                        format!("rule {what} input"),
                        format!("{series}{{run_id=\"$run_id\"}}"),
                    ));
                }
            } else {
                out.push((format!("rule {what}"), expr.clone()));
                // The recorded series was evaluated live by the run's Prometheus.
                out.push((
                    format!("recorded {what}"),
                    format!("{what}{{run_id=\"$run_id\"}}"),
                ));
            }
        }
    }
    out
}

/// Metric names in a PromQL expression (identifiers followed by `{` or `[` or standing
/// alone, minus functions and keywords).
fn series_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b':'))
            {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            let in_braces = expr[..start].matches('{').count() > expr[..start].matches('}').count();
            let in_by = expr[..start].trim_end().ends_with('(')
                && ["by", "on", "without", "ignoring"].iter().any(|k| {
                    expr[..start]
                        .trim_end()
                        .trim_end_matches('(')
                        .trim_end()
                        .ends_with(k)
                });
            if (word.starts_with("aifb") || word.starts_with("vllm:") || word == "up")
                && next != Some('(')
                && !in_braces
                && !in_by
                && !names.contains(&word.to_string())
            {
                names.push(word.to_string());
            }
            continue;
        }
        i += 1;
    }
    names
}

/// Series families this test cannot produce: no GPU, no SLURM job cgroup (proctrack
/// linuxproc), and data services other than the simulator.
fn exempt(expr: &str) -> bool {
    series_names(expr).iter().any(|n| {
        [
            "aifb_gpu_",
            "aifb:gpu_",
            "aifb_job_",
            "aifb_redis_",
            "aifb_postgres_",
            "aifb_ollama_",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    })
}

#[test]
fn series_names_finds_metrics_not_functions_or_labels() {
    assert_eq!(
        series_names(
            r#"sum by (run_id, op) (rate(aifb_loadgen_requests_total{outcome!="ok",x="aifb_no"}[1m])) / vllm:num_requests_running"#
        ),
        vec!["aifb_loadgen_requests_total", "vllm:num_requests_running"]
    );
    assert!(exempt("avg by (node) (aifb_gpu_utilization_ratio)"));
    assert!(!exempt("up{run_id=\"x\"}"));
}

#[test]
fn slurm_run_with_prometheus_discovery_and_export() {
    let cluster = Cluster::up();
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        work.path().join("slurm.yaml"),
        recipe("slurm-e2e", "[1, 4]", "6s", 2),
    )
    .unwrap();

    // --dry-run prints the script and submits nothing.
    let dry = cluster.aifb(
        work.path(),
        &["run", "slurm.yaml", "--dry-run", "--out", "runs"],
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let script = String::from_utf8_lossy(&dry.stdout);
    assert!(
        script.contains("#SBATCH hetjob")
            && script.contains("SRUN_CLIENT=(srun --het-group=1 --nodes=2")
    );
    assert!(
        !work.path().join("runs").exists(),
        "a dry run creates nothing"
    );

    let out = cluster.aifb(work.path(), &["run", "slurm.yaml", "--out", "runs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let runs = work.path().join("runs");
    let run = only_run(&runs);
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        std::fs::read_to_string(run.join("logs/slurm-1.out")).unwrap_or_default()
    );
    for state in ["PENDING", "RUNNING", "DONE"] {
        assert!(
            stderr.contains(&format!("aifb: {state}")),
            "{state} reported: {stderr}"
        );
    }
    let m = manifest(&run);
    let run_id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["status"], "DONE");
    assert_eq!(m["executor"], "slurm");
    assert_eq!(m["job_ids"].as_array().unwrap().len(), 1);
    assert!(
        m["time_to_ready_s"].as_f64().is_some_and(|t| t > 0.0),
        "{m}"
    );
    assert_eq!(
        m["stages"].as_array().unwrap().len(),
        2,
        "stage windows merged"
    );
    // The report was printed, and what ran where is on record.
    assert!(String::from_utf8_lossy(&out.stdout).contains("# aifb report: slurm-e2e"));
    for f in [
        "slurm/job.sbatch",
        "logs/slurm-env.txt",
        "logs/scontrol-job.txt",
        "recipe.lock.yaml",
        "summary.json",
        "report/report.md",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let env = std::fs::read_to_string(run.join("logs/slurm-env.txt")).unwrap();
    assert!(
        env.contains("SLURM_JOB_NODELIST_HET_GROUP_1="),
        "hetjob environment: {env}"
    );

    // Two shards on two client nodes, merged.
    let rows = request_rows(&run);
    assert!(rows.len() > 50, "{} rows", rows.len());
    let clients: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.client.as_str()).collect();
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert!(rows.iter().all(|r| r.ok));
    // Both shards' chunks, merged.
    let chunks = aifb_core::chunks::read(&run.join("chunks.parquet")).expect("chunks.parquet");
    let expected: u32 = rows.iter().filter_map(|r| r.chunks).sum();
    assert_eq!(chunks.len() as u32, expected);

    // Discovery: every component announced itself, and said it stopped; no file_sd
    // target is left for Prometheus.
    let recs = records(&runs, &run_id);
    let roles: Vec<&str> = recs.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "exporter",
            "loadgen-0",
            "loadgen-1",
            "prometheus",
            "service"
        ],
        "{recs:?}"
    );
    for r in &recs {
        assert_eq!(r["state"], "stopped", "{r}");
        assert!(r["ready_at"].is_string(), "{r}");
        let path = runs.join(".state/discover").join(&run_id).join(format!(
            "{}-{}.json",
            r["role"].as_str().unwrap(),
            r["job_id"].as_str().unwrap()
        ));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    assert_eq!(
        std::fs::read_dir(run.join("prometheus/targets"))
            .unwrap()
            .count(),
        0
    );
    let services = cluster.aifb(work.path(), &["services", "--out", "runs"]);
    let listing = String::from_utf8_lossy(&services.stdout);
    assert!(
        listing.lines().filter(|l| l.contains("stopped")).count() == 5,
        "{listing}"
    );
    let clean = cluster.aifb(work.path(), &["clean", "--out", "runs"]);
    assert!(clean.status.success());
    assert!(
        records(&runs, &run_id).is_empty(),
        "clean removes stopped records"
    );

    // The TSDB snapshot: a Prometheus on it answers for the run after the job is gone.
    let snapshot = run.join("prometheus/snapshot");
    assert!(snapshot.is_dir(), "TSDB snapshot copied into the run");
    let tsdb = work.path().join("tsdb");
    copy_tree(&snapshot, &tsdb);
    let port = free_port();
    let prom = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let config = work.path().join("empty.yml");
    std::fs::write(&config, "global: {}\n").unwrap();
    let _server = Server::start(
        &prom,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", tsdb.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--storage.tsdb.retention.time=100y",
        ],
        Some(&work.path().join("prometheus.log")),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    wait_until(
        "prometheus on the snapshot",
        Duration::from_secs(60),
        || {
            http.get(format!("{base}/-/ready"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        },
    );

    // Every expression of every dashboard and rule returns data at least once.
    let start = m["started_at"].as_str().unwrap();
    let end = m["finished_at"].as_str().unwrap();
    let mut checked = 0;
    let mut empty = Vec::new();
    for (what, expr) in expressions() {
        if exempt(&expr) {
            continue;
        }
        let q = expr
            .replace("$__rate_interval", "5s")
            .replace("$run_id", &run_id)
            .replace("$node", ".*");
        let v: serde_json::Value = http
            .get(format!("{base}/api/v1/query_range"))
            .query(&[
                ("query", q.as_str()),
                ("start", start),
                ("end", end),
                ("step", "1"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["status"], "success", "{what}: {q}: {v}");
        let has_data = v["data"]["result"].as_array().unwrap().iter().any(|s| {
            s["values"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p[1].as_str().is_some_and(|x| x != "NaN"))
        });
        if !has_data {
            empty.push(format!("{what}: {q}"));
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} expressions checked");
    assert!(
        empty.is_empty(),
        "expressions without data:\n{}",
        empty.join("\n")
    );

    // aifb export: the same schema as the loadgen's own scrapes.
    let exported = work.path().join("exported.parquet");
    let out = cluster.aifb(
        work.path(),
        &[
            "export",
            "--prometheus",
            &base,
            &run_id,
            "--out",
            "runs",
            "--step",
            "1s",
            "--output",
            exported.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = aifb_core::metrics::read(&exported).expect("metrics.parquet schema");
    let sources: std::collections::BTreeSet<&str> =
        samples.iter().map(|s| s.source.as_str()).collect();
    assert!(
        sources.contains("exporter") && sources.contains("loadgen") && sources.contains("service"),
        "{sources:?}"
    );
    let own =
        aifb_core::metrics::read(&run.join("metrics.parquet")).expect("loadgen's metrics.parquet");
    let own_names: std::collections::BTreeSet<&str> = own
        .iter()
        .filter(|s| s.source == "exporter")
        .map(|s| s.metric.as_str())
        .collect();
    let exported_names: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.source == "exporter")
        .map(|s| s.metric.as_str())
        .collect();
    let missing: Vec<&&str> = own_names.difference(&exported_names).collect();
    assert!(
        missing.is_empty(),
        "exporter series the export lacks: {missing:?}"
    );
    assert!(
        samples
            .iter()
            .all(|s| s.label("run_id").is_none() && s.label("role").is_none()),
        "target labels dropped"
    );
    let cpu = samples
        .iter()
        .find(|s| s.metric == "aifb_process_cpu_seconds_total")
        .expect("process series");
    assert_eq!(cpu.label("service"), Some("simulator"), "{:?}", cpu.labels);

    // The analyzer reads the export like the loadgen's file.
    let copy = work.path().join("exported-run");
    copy_tree(&run, &copy);
    std::fs::copy(&exported, copy.join("metrics.parquet")).unwrap();
    let report = Command::new(bin("analyzer"))
        .arg("report")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(cluster.squeue_empty());
}

#[test]
fn cancelled_slurm_run_keeps_its_finished_requests() {
    let cluster = Cluster::up();
    let work = tempfile::tempdir().expect("temp dir");
    let mut text = recipe("slurm-cancel", "[2]", "10m", 1);
    text = text.replace(
        "  prometheus:\n    scrape_interval: 1s\n",
        "  prometheus:\n    enabled: false\n",
    );
    std::fs::write(work.path().join("cancel.yaml"), text).unwrap();
    let out = cluster.aifb(
        work.path(),
        &["run", "cancel.yaml", "--out", "runs", "--detach"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = work.path().join("runs");
    let run = only_run(&runs);
    let run_id = manifest(&run)["id"].as_str().unwrap().to_string();
    // Cancel once the loadgen is measuring and has finished requests.
    wait_until("the loadgen measuring", Duration::from_secs(120), || {
        manifest(&run)["status"] == "RUNNING"
            && records(&runs, &run_id)
                .iter()
                .any(|r| r["role"] == "loadgen" && r["state"] == "ready")
            && loadgen_ok(&records(&runs, &run_id)) > 20.0
    });
    let watch = cluster.aifb(work.path(), &["status", &run_id, "--out", "runs"]);
    assert!(String::from_utf8_lossy(&watch.stdout).contains("RUNNING"));
    let c = cluster.aifb(work.path(), &["cancel", &run_id, "--out", "runs"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    wait_until("the job to end", Duration::from_secs(120), || {
        cluster.squeue_empty()
    });
    let m = manifest(&run);
    assert_eq!(m["status"], "CANCELLED", "{m}");
    assert!(m["error"].as_str().unwrap().contains("aifb cancel"), "{m}");
    // The USR1 trap drained the loadgen: its files are complete and readable.
    let rows = request_rows(&run);
    assert!(
        rows.iter().filter(|r| r.ok).count() > 20,
        "{} rows kept",
        rows.len()
    );
    assert!(run.join("summary.json").is_file());
    assert!(
        records(&runs, &run_id)
            .iter()
            .all(|r| r["state"] == "stopped"),
        "{:?}",
        records(&runs, &run_id)
    );
}

/// Successful requests so far, from the loadgen's /metrics.
fn loadgen_ok(records: &[serde_json::Value]) -> f64 {
    let Some(r) = records.iter().find(|r| r["role"] == "loadgen") else {
        return 0.0;
    };
    let url = format!("http://{}/metrics", r["addr"].as_str().unwrap());
    let Ok(text) = reqwest::blocking::get(url).and_then(|r| r.text()) else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with("aifb_loadgen_requests_total") && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The single-job layout: every role a step of one allocation on one node.
#[test]
fn single_job_layout_runs_every_role_in_one_allocation() {
    let cluster = Cluster::up();
    let work = tempfile::tempdir().expect("temp dir");
    let text = recipe("slurm-single", "[2]", "4s", 1).replace(
        "  partition: debug\n",
        "  partition: debug\n  layout: single\n",
    );
    std::fs::write(work.path().join("single.yaml"), text).unwrap();
    let out = cluster.aifb(work.path(), &["run", "single.yaml", "--out", "runs"]);
    let run = only_run(&work.path().join("runs"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(run.join("logs/slurm-1.out")).unwrap_or_default()
    );
    let m = manifest(&run);
    assert_eq!(m["status"], "DONE");
    let script = std::fs::read_to_string(run.join("slurm/job.sbatch")).unwrap();
    assert!(!script.contains("#SBATCH hetjob"));
    // One job: service, exporter, loadgen and monitor ran as its steps.
    let scontrol = std::fs::read_to_string(run.join("logs/scontrol-job.txt")).unwrap();
    assert!(!scontrol.contains("HetJobId"), "{scontrol}");
    assert!(request_rows(&run).iter().filter(|r| r.ok).count() > 10);
    assert!(run.join("prometheus/snapshot").is_dir());
    let roles: Vec<String> = records(&work.path().join("runs"), m["id"].as_str().unwrap())
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["role"].as_str().unwrap(),
                r["state"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            "exporter=stopped",
            "loadgen=stopped",
            "prometheus=stopped",
            "service=stopped"
        ]
    );
}

/// The time limit: SLURM sends USR1 `signal_margin` before it (`--signal=B:USR1@60`), and
/// the run drains and keeps its requests before the limit kills anything.
#[test]
fn the_time_limit_signal_drains_the_run_before_the_limit() {
    let cluster = Cluster::up();
    let work = tempfile::tempdir().expect("temp dir");
    let text = recipe("slurm-limit", "[2]", "10m", 1)
        .replace("  time: 15m\n", "  time: 2m\n  signal_margin: 60s\n")
        .replace(
            "  prometheus:\n    scrape_interval: 1s\n",
            "  prometheus:\n    enabled: false\n",
        );
    std::fs::write(work.path().join("limit.yaml"), text).unwrap();
    let out = cluster.aifb(work.path(), &["run", "limit.yaml", "--out", "runs"]);
    let run = only_run(&work.path().join("runs"));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest(&run);
    assert_eq!(m["status"], "CANCELLED", "{m}");
    assert!(
        m["error"].as_str().unwrap().contains("stopped by USR1"),
        "{m}"
    );
    let rows = request_rows(&run);
    assert!(rows.iter().filter(|r| r.ok).count() > 20);
    assert!(run.join("summary.json").is_file());
    assert!(
        run.join("report/report.md").is_file(),
        "analysed after the drain"
    );
}
