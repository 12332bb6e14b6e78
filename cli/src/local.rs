//! The local executor: every process of a run on this machine.
//!
//! Order: service → exporter (watching the service's PID) → readiness → loadgen →
//! stop exporter and service → analyzer. Every exit path, a signal included, stops what was
//! started; the run directory keeps every request the loadgen finished.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use aifb_core::clock::{RunClock, rfc3339};
use aifb_core::exit::{CHECK_FAILED, Failure, USAGE};
use aifb_core::recipe::{Collector, Recipe, ServiceKind};
use aifb_core::run::{Manifest, RunDir, RunStatus, StageWindow};
use tokio::signal::unix::{SignalKind, signal};

use crate::procs::{self, Output, Proc};

/// Exit code of a run stopped by SIGINT or SIGTERM (its data is kept).
pub const CANCELLED: u8 = 130;

/// What the run produced.
pub struct Outcome {
    /// The run directory.
    pub dir: RunDir,
    /// The final manifest.
    pub manifest: Manifest,
    /// Failure, if any.
    pub failure: Option<Failure>,
}

/// The sibling binary `name` next to this executable, else `name` on PATH.
pub fn sibling(name: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| name.to_string())
}

fn free_port() -> Result<u16, Failure> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::check(format!("no free local port: {e}")))
}

struct Run {
    dir: RunDir,
    manifest: Manifest,
    procs: Vec<Proc>,
    recipe_dir: std::path::PathBuf,
    /// The service's `{data_dir}`, removed when the run ends.
    data_dir: Option<std::path::PathBuf>,
    /// Discovery records go here.
    state_dir: std::path::PathBuf,
}

impl Run {
    /// The exporter's and loadgen's discovery flags.
    fn discovery_args(&self) -> Vec<String> {
        vec![
            "--discovery.dir".into(),
            self.state_dir.display().to_string(),
            "--discovery.file-sd".into(),
            self.dir
                .root
                .join("prometheus")
                .join("targets")
                .display()
                .to_string(),
            "--discovery.run-id".into(),
            self.manifest.id.clone(),
        ]
    }
}

impl Run {
    fn save(&self) {
        if let Err(e) = self.manifest.write(&self.dir.manifest()) {
            eprintln!("aifb: warning: {}: {e}", self.dir.manifest().display());
        }
    }

    async fn stop_all(&mut self) {
        for p in self.procs.iter_mut().rev() {
            let status = procs::stop(p, Duration::from_secs(5)).await;
            if let Some(s) = status.filter(|s| !s.success() && s.code().is_some()) {
                eprintln!("aifb: {} exited with {s}", p.role);
            }
        }
        self.procs.clear();
    }
}

/// Waits for `loadgen ready` (the driver's own readiness check) to succeed, failing early
/// when the service exits.
async fn wait_service(
    run: &mut Run,
    base: &str,
    timeout: Duration,
    log: &Path,
) -> Result<Duration, Failure> {
    let start = Instant::now();
    let argv = [
        procs_path("loadgen"),
        "ready".into(),
        "--recipe".into(),
        run.dir.lock().display().to_string(),
        "--target".into(),
        base.to_string(),
        "--timeout".into(),
        format!("{}", timeout.as_secs_f64()),
    ];
    let mut probe = tokio::process::Command::new(&argv[0]);
    probe
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let probe = probe
        .spawn()
        .map_err(|e| Failure::check(format!("cannot start {}: {e}", argv[0])))?;
    let waited = probe.wait_with_output();
    tokio::pin!(waited);
    let service = run.procs.iter_mut().find(|p| p.role == "service");
    let outcome = match service {
        Some(p) => tokio::select! {
            out = &mut waited => Ok(out),
            status = p.child.wait() => Err(status),
        },
        None => Ok(waited.await),
    };
    match outcome {
        Ok(Ok(out)) if out.status.success() => Ok(start.elapsed()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr);
            let reason = text
                .lines()
                .last()
                .unwrap_or("not ready")
                .trim_start_matches("loadgen: error: ")
                .to_string();
            let code = if out.status.code() == Some(i32::from(USAGE)) {
                USAGE
            } else {
                CHECK_FAILED
            };
            Err(Failure {
                code,
                message: format!("{reason}; see {}", log.display()),
            })
        }
        Ok(Err(e)) => Err(Failure::check(format!("readiness check failed: {e}"))),
        Err(status) => {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let last = procs::last_line(log)
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            Err(Failure::input(format!(
                "service exited ({status}) before it was ready; see {}{last}",
                log.display()
            )))
        }
    }
}

/// Runs a recipe on this machine; `recipe_dir` is the recipe file's directory
/// (`{recipe_dir}` in service commands).
pub async fn run(
    recipe: &Recipe,
    recipe_dir: &Path,
    runs_root: &Path,
    ci: bool,
) -> Result<Outcome, Failure> {
    let (dir, lock, mut manifest, clock) = create_run(recipe, recipe_dir, runs_root, "local")?;
    let id = manifest.id.clone();
    // `aifb cancel` signals this process.
    manifest.processes.push(aifb_core::run::ProcessRecord {
        role: "aifb".into(),
        pid: std::process::id(),
        command: std::env::args().collect(),
        addr: None,
    });
    let mut run = Run {
        dir,
        manifest,
        procs: Vec::new(),
        recipe_dir: recipe_dir.to_path_buf(),
        data_dir: None,
        state_dir: state_dir(runs_root),
    };
    run.save();
    eprintln!("aifb: run {id} in {}", run.dir.root.display());

    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::check(format!("signal handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::check(format!("signal handler: {e}")))?;

    let result = tokio::select! {
        r = drive(&mut run, &lock, ci) => r,
        _ = term.recv() => Err(Failure { code: CANCELLED, message: "terminated before the workload started".into() }),
        _ = int.recv() => Err(Failure { code: CANCELLED, message: "interrupted before the workload started".into() }),
    };
    let failure = match result {
        Ok(loadgen_index) => {
            // The workload runs: wait for the loadgen, forwarding a signal to it so it
            // drains and writes its files.
            let lg = &mut run.procs[loadgen_index];
            let mut cancelled = false;
            let status = loop {
                tokio::select! {
                    s = lg.child.wait() => break s.ok(),
                    _ = term.recv() => { cancelled = true; procs::signal(lg, libc::SIGTERM); }
                    _ = int.recv() => { cancelled = true; procs::signal(lg, libc::SIGTERM); }
                }
            };
            if cancelled {
                Some(Failure {
                    code: CANCELLED,
                    message: "cancelled: the requests finished so far are kept".into(),
                })
            } else {
                match status.and_then(|s| s.code()) {
                    Some(0) => None,
                    Some(code) => Some(Failure {
                        code: if code == i32::from(USAGE) {
                            USAGE
                        } else {
                            CHECK_FAILED
                        },
                        message: format!(
                            "loadgen failed (exit {code}); see {}",
                            run.dir.logs().join("loadgen.log").display()
                        ),
                    }),
                    None => Some(Failure::check("loadgen was killed by a signal")),
                }
            }
        }
        Err(f) => Some(f),
    };
    run.stop_all().await;
    recover_partial(&run.dir.root).await;
    if let Some(d) = run.data_dir.take()
        && let Err(e) = std::fs::remove_dir_all(&d)
    {
        eprintln!("aifb: warning: cannot remove {}: {e}", d.display());
    }

    merge_summary(&mut run.manifest, &run.dir);
    run.manifest.finished_at = Some(rfc3339(clock.now_ns()));
    run.manifest.status = match &failure {
        None => RunStatus::Done,
        Some(f) if f.code == CANCELLED => RunStatus::Cancelled,
        Some(_) => RunStatus::Failed,
    };
    run.manifest.error = failure.as_ref().map(|f| f.message.clone());
    run.save();
    Ok(Outcome {
        dir: run.dir,
        manifest: run.manifest,
        failure,
    })
}

/// Creates a run directory under `runs_root` with its lock file (paths relative to the
/// recipe made absolute) and first manifest.
pub fn create_run(
    recipe: &Recipe,
    recipe_dir: &Path,
    runs_root: &Path,
    executor: &str,
) -> Result<(RunDir, Recipe, Manifest, RunClock), Failure> {
    let clock = RunClock::start();
    let status = if executor == "slurm" {
        RunStatus::Pending
    } else {
        RunStatus::Launching
    };
    let mut manifest = Manifest::new(&recipe.name, executor, status, rfc3339(clock.now_ns()));
    let dir = RunDir::new(runs_root.join(&manifest.id));
    dir.create()
        .map_err(|e| Failure::input(format!("{}: {e}", dir.root.display())))?;
    let mut lock = recipe.resolved();
    // The loadgen reads the lock from the run directory: paths relative to the recipe
    // become absolute.
    for d in [
        lock.workload.request.dataset.as_mut(),
        lock.workload.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if d.is_relative() {
            *d = recipe_dir.join(&*d);
        }
    }
    std::fs::write(dir.lock(), lock.to_yaml())
        .map_err(|e| Failure::input(format!("{}: {e}", dir.lock().display())))?;
    if recipe.service.kind == ServiceKind::Simulator {
        manifest.environment.service_version = Some(format!("aifb-sim {}", aifb_core::VERSION));
    }
    if executor != "slurm" {
        manifest.nodes = vec![manifest.environment.hostname.clone()];
    }
    manifest.pattern = match recipe.workload.pattern {
        aifb_core::recipe::Pattern::Closed => "closed".into(),
        aifb_core::recipe::Pattern::Open => "open".into(),
    };
    manifest.workload_hash = Some(recipe.workload_hash());
    manifest
        .write(&dir.manifest())
        .map_err(|e| Failure::input(format!("{}: {e}", dir.manifest().display())))?;
    Ok((dir, lock, manifest, clock))
}

/// The state directory of discovery records: `AIFB_STATE_DIR`, else `<runs>/.state`.
pub fn state_dir(runs_root: &Path) -> std::path::PathBuf {
    std::env::var_os("AIFB_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| runs_root.join(".state"))
}

/// Starts service, exporter and loadgen; returns the loadgen's index in `run.procs`.
async fn drive(run: &mut Run, recipe: &Recipe, ci: bool) -> Result<usize, Failure> {
    let logs = run.dir.logs();
    let svc = &recipe.service;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| Failure::check(format!("HTTP client: {e}")))?;

    // Service.
    let base = match &svc.endpoint {
        Some(ep) => ep.trim_end_matches('/').to_string(),
        None => {
            let port = if svc.port == 0 {
                free_port()?
            } else {
                svc.port
            };
            let argv: Vec<String> = match svc.kind {
                ServiceKind::Simulator => vec![
                    procs_path("loadgen"),
                    "sim".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                    "--recipe".into(),
                    run.dir.lock().display().to_string(),
                ],
                _ => {
                    let mut data_dir = None;
                    if svc.command.iter().any(|a| a.contains("{data_dir}")) {
                        let d = std::env::temp_dir().join(format!("aifb-{}-data", run.manifest.id));
                        std::fs::create_dir_all(&d)
                            .map_err(|e| Failure::check(format!("{}: {e}", d.display())))?;
                        data_dir = Some(d);
                    }
                    let data = data_dir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default();
                    run.data_dir = data_dir;
                    let recipe_dir = run.recipe_dir.display().to_string();
                    svc.command
                        .iter()
                        .map(|a| {
                            a.replace("{port}", &port.to_string())
                                .replace("{bind}", "127.0.0.1")
                                .replace("{data_dir}", &data)
                                .replace("{recipe_dir}", &recipe_dir)
                        })
                        .collect()
                }
            };
            let addr = format!("127.0.0.1:{port}");
            let p = procs::spawn("service", &argv, &logs, Output::Log, Some(addr.clone()))
                .map_err(Failure::input)?;
            run.manifest.processes.push(p.record.clone());
            run.procs.push(p);
            format!("{}://{addr}", svc.kind.schemes()[0])
        }
    };
    let http = base.starts_with("http");
    let service_pid = run.procs.first().map(|p| p.record.pid);

    // Exporter.
    let mon = &recipe.monitoring;
    let mut scrape = Vec::new();
    if mon.exporter.enabled {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut argv = vec![
            procs_path("exporter"),
            "--web.listen-address".into(),
            addr.clone(),
        ];
        for c in [
            Collector::Node,
            Collector::Process,
            Collector::Gpu,
            Collector::Job,
        ] {
            if !mon.exporter.collectors.contains(&c) {
                argv.push(format!("--no-collector.{}", c.name()));
            }
        }
        if let Some(pid) =
            service_pid.filter(|_| mon.exporter.collectors.contains(&Collector::Process))
        {
            argv.extend([
                "--process.pid".into(),
                pid.to_string(),
                "--process.service".into(),
                svc.kind.name().into(),
            ]);
        }
        if let Some(url) = probe_url(recipe, &base) {
            argv.extend(["--probe".into(), url]);
        }
        argv.extend(run.discovery_args());
        let p = procs::spawn("exporter", &argv, &logs, Output::Log, Some(addr.clone()))
            .map_err(Failure::input)?;
        run.manifest.processes.push(p.record.clone());
        run.procs.push(p);
        scrape.push(format!("exporter=http://{addr}/metrics"));
    }
    if let Some(path) = svc.metrics().filter(|_| http) {
        scrape.push(format!("service={base}{path}"));
    }
    run.save();

    // Readiness: the driver's own check, through `loadgen ready`.
    let service_log = logs.join("service.log");
    let took = wait_service(run, &base, svc.health.timeout.get(), &service_log).await?;
    eprintln!(
        "aifb: service ready at {base} after {:.1}s",
        took.as_secs_f64()
    );
    if let Some(exp) = run.procs.iter_mut().find(|p| p.role == "exporter") {
        let url = format!(
            "http://{}/metrics",
            exp.record.addr.clone().unwrap_or_default()
        );
        let log = logs.join("exporter.log");
        crate::job::wait_http(&client, &url, Duration::from_secs(10), || {
            matches!(exp.child.try_wait(), Ok(None))
        })
        .await
        .map_err(|e| {
            let last = procs::last_line(&log)
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            Failure::check(format!("exporter {e}; see {}{last}", log.display()))
        })?;
    }

    // Workload.
    run.manifest.status = RunStatus::Running;
    let mut argv = vec![
        procs_path("loadgen"),
        "run".into(),
        "--recipe".into(),
        run.dir.lock().display().to_string(),
        "--target".into(),
        base,
        "--out".into(),
        run.dir.root.display().to_string(),
        "--log-file".into(),
        logs.join("loadgen.log").display().to_string(),
    ];
    for s in scrape {
        argv.extend(["--scrape".into(), s]);
    }
    argv.extend(run.discovery_args());
    if ci {
        argv.push("--ci".into());
    }
    let lg =
        procs::spawn("loadgen", &argv, &logs, Output::Inherit, None).map_err(Failure::input)?;
    run.manifest.processes.push(lg.record.clone());
    run.procs.push(lg);
    run.save();
    match &recipe.workload.search {
        Some(_) => eprintln!(
            "aifb: rate search, up to {} stages, at most about {:.0}s",
            recipe.max_stages(),
            recipe.planned_duration().as_secs_f64()
        ),
        None => eprintln!(
            "aifb: {} levels, about {:.0}s",
            recipe.workload.levels.len(),
            recipe.planned_duration().as_secs_f64()
        ),
    }
    Ok(run.procs.len() - 1)
}

/// A loadgen killed before it closed requests.parquet leaves the part files of its
/// checkpoints in `<dir>/partial`: join them into requests.parquet (`loadgen recover`).
pub async fn recover_partial(dir: &Path) {
    if !dir.join("partial").is_dir() {
        return;
    }
    let out = tokio::process::Command::new(sibling("loadgen"))
        .arg("recover")
        .arg("--out")
        .arg(dir)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("aifb: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        Ok(o) => eprintln!(
            "aifb: warning: recovering the checkpoints failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("aifb: warning: cannot start loadgen recover: {e}"),
    }
}

/// Copies what the loadgen's summary.json knows into the manifest: the stage windows and
/// the service's version and models.
pub fn merge_summary(m: &mut Manifest, dir: &RunDir) {
    if let Ok(text) = std::fs::read_to_string(dir.summary())
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let stages: Vec<StageWindow> = v["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| serde_json::from_value(s["window"].clone()).ok())
            .collect();
        m.stages = stages;
        if let Some(s) = v["service"]["version"].as_str() {
            m.environment.service_version = Some(s.to_string());
        }
        if let Some(models) = v["service"]["models"].as_array() {
            m.environment.service_models = models
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect();
        }
    }
}

/// The exporter's `--probe KIND=URL@SERVICE` for the service, when the exporter has a
/// probe for its kind. S3 stores other than MinIO have no MinIO health paths: no probe.
pub fn probe_url(recipe: &Recipe, base: &str) -> Option<String> {
    let svc = &recipe.service;
    let kind = svc.kind.probe().filter(|_| svc.kind != ServiceKind::S3)?;
    let mut url = base.to_string();
    if svc.kind == ServiceKind::Postgres && !base.contains('@') {
        let user = svc.auth.user.as_deref().unwrap_or("postgres");
        let db = svc.database.as_deref().unwrap_or("postgres");
        url = format!(
            "{}{user}@{}/{db}",
            "postgresql://",
            base.split("://").nth(1)?
        );
    }
    Some(format!("{kind}={url}@{}", svc.kind.name()))
}

fn procs_path(name: &str) -> String {
    sibling(name)
}

/// Runs `analyzer report` on the run directory; returns its stdout.
pub async fn analyze(dir: &Path) -> Result<String, String> {
    let out = tokio::process::Command::new(sibling("analyzer"))
        .arg("report")
        .arg(dir)
        .output()
        .await
        .map_err(|e| format!("cannot start analyzer: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
