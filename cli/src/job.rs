//! `aifb job …`: the small steps a SLURM batch script asks of aifb: pick a port, record a
//! lifecycle state, write a discovery record, run the monitor group, finish the run.
//! They are internal (hidden from `--help`) and used by `slurm/job.sh`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aifb_core::clock::{rfc3339, wall_ns};
use aifb_core::discovery::{self, Record, State};
use aifb_core::exit::Failure;
use aifb_core::recipe::Recipe;
use aifb_core::run::{Manifest, RunDir, RunStatus};
use clap::Subcommand;

use crate::monitor;

/// The internal steps of a batch script.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Print a free TCP port of this node.
    Port,
    /// Record a lifecycle state in run.json.
    State {
        /// The run directory.
        run_dir: PathBuf,
        /// PENDING, LAUNCHING, READY, RUNNING, DONE, FAILED or CANCELLED.
        state: String,
        /// A SLURM job id of the run.
        #[arg(long)]
        job_id: Option<String>,
        /// A node of the run.
        #[arg(long)]
        node: Option<String>,
        /// Seconds the service took to get ready.
        #[arg(long)]
        time_to_ready: Option<f64>,
    },
    /// Write (or update) a discovery record, and its file_sd target once ready.
    Discover {
        /// The run directory.
        run_dir: PathBuf,
        /// `service`, `prometheus`, ...
        #[arg(long)]
        role: String,
        /// What runs (`redis`, `vllm`, ...).
        #[arg(long)]
        service: String,
        /// `host:port`.
        #[arg(long)]
        addr: String,
        /// Node name.
        #[arg(long)]
        node: String,
        /// starting, ready, stopped or failed.
        #[arg(long)]
        state: String,
        /// Metrics path for a file_sd target (none: not scraped).
        #[arg(long)]
        metrics_path: Option<String>,
        /// Process id of the component, when known.
        #[arg(long)]
        pid: Option<u32>,
        /// State directory of discovery records.
        #[arg(long, env = "STATE_DIR")]
        state_dir: PathBuf,
    },
    /// Write the final state and stage windows into run.json, then analyse the run.
    Finish {
        /// The run directory.
        run_dir: PathBuf,
        /// DONE, FAILED or CANCELLED.
        status: String,
        /// Why the run failed or was cancelled.
        #[arg(long)]
        error: Option<String>,
    },
    /// Run the monitor group: Prometheus (and Grafana) until SIGTERM, then leave a TSDB
    /// snapshot in the run directory.
    Monitor {
        /// The run directory.
        run_dir: PathBuf,
        /// State directory of discovery records.
        #[arg(long, env = "STATE_DIR")]
        state_dir: PathBuf,
        /// Node-local directory for the TSDB.
        #[arg(long)]
        scratch: PathBuf,
    },
}

fn parse_status(s: &str) -> Result<RunStatus, Failure> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).map_err(|_| {
        Failure::input(format!(
            "{s:?} is not a run state (PENDING, LAUNCHING, READY, RUNNING, DONE, FAILED, CANCELLED)"
        ))
    })
}

fn parse_state(s: &str) -> Result<State, Failure> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).map_err(|_| {
        Failure::input(format!(
            "{s:?} is not a discovery state (starting, ready, stopped, failed)"
        ))
    })
}

fn read_manifest(dir: &RunDir) -> Result<Manifest, Failure> {
    Manifest::read(&dir.manifest()).map_err(Failure::input)
}

fn write_manifest(dir: &RunDir, m: &Manifest) -> Result<(), Failure> {
    m.write(&dir.manifest())
        .map_err(|e| Failure::check(format!("{}: {e}", dir.manifest().display())))
}

/// A free TCP port on every interface of this node.
pub fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::check(format!("no free port: {e}")))
}

/// Runs one internal step.
pub fn run(cmd: JobCommand) -> Result<(), Failure> {
    match cmd {
        JobCommand::Port => {
            println!("{}", free_port()?);
            Ok(())
        }
        JobCommand::State {
            run_dir,
            state,
            job_id,
            node,
            time_to_ready,
        } => {
            let dir = RunDir::new(run_dir);
            let mut m = read_manifest(&dir)?;
            m.status = parse_status(&state)?;
            if m.status == RunStatus::Launching {
                // The submit host is not where the run runs: describe the service node.
                let detected = aifb_core::run::Environment::detect();
                m.environment = aifb_core::run::Environment {
                    service_version: m.environment.service_version.take(),
                    service_models: std::mem::take(&mut m.environment.service_models),
                    ..detected
                };
            }
            if let Some(j) = job_id.filter(|j| !m.job_ids.contains(j)) {
                m.job_ids.push(j);
            }
            if let Some(n) = node.filter(|n| !m.nodes.contains(n)) {
                m.nodes.push(n);
            }
            if time_to_ready.is_some() {
                m.time_to_ready_s = time_to_ready;
            }
            write_manifest(&dir, &m)
        }
        JobCommand::Discover {
            run_dir,
            role,
            service,
            addr,
            node,
            state,
            metrics_path,
            pid,
            state_dir,
        } => {
            let dir = RunDir::new(run_dir);
            let m = read_manifest(&dir)?;
            let state = parse_state(&state)?;
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| Failure::input(format!("--addr {addr:?}: expected HOST:PORT")))?;
            let now = rfc3339(wall_ns());
            let mut record = Record {
                run_id: m.id.clone(),
                job_id: discovery::job_id(),
                role,
                service,
                node,
                addr,
                ports: vec![port],
                pid: 0,
                state,
                started_at: now.clone(),
                ready_at: None,
            };
            // Keep what an earlier record of the same component said.
            if let Ok(text) = std::fs::read(record.path(&state_dir))
                && let Ok(old) = serde_json::from_slice::<Record>(&text)
            {
                record.started_at = old.started_at;
                record.ready_at = old.ready_at;
                record.pid = old.pid;
            }
            if let Some(p) = pid.filter(|p| *p > 0) {
                record.pid = p;
            }
            if state == State::Ready && record.ready_at.is_none() {
                record.ready_at = Some(now);
            }
            let targets = dir.root.join("prometheus").join("targets");
            record
                .write(&state_dir)
                .map_err(|e| Failure::input(format!("{}: {e}", state_dir.display())))?;
            match metrics_path {
                Some(path) if state == State::Ready => record
                    .write_file_sd_at(&targets, &path)
                    .map(|_| ())
                    .map_err(|e| Failure::input(format!("{}: {e}", targets.display()))),
                _ => {
                    record.remove_file_sd(&targets);
                    Ok(())
                }
            }
        }
        JobCommand::Finish {
            run_dir,
            status,
            error,
        } => {
            let dir = RunDir::new(run_dir);
            let mut m = read_manifest(&dir)?;
            crate::local::merge_summary(&mut m, &dir);
            m.status = parse_status(&status)?;
            m.error = error;
            m.finished_at = Some(rfc3339(wall_ns()));
            write_manifest(&dir, &m)?;
            if dir.requests().is_file() {
                analyze_into_log(&dir);
            }
            Ok(())
        }
        JobCommand::Monitor {
            run_dir,
            state_dir,
            scratch,
        } => {
            let dir = RunDir::new(run_dir);
            let m = read_manifest(&dir)?;
            let recipe = Recipe::load(&dir.lock()).map_err(|e| Failure::input(e.join("; ")))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
            rt.block_on(monitor::run(&recipe, &m, &dir, &state_dir, &scratch))
        }
    }
}

/// Runs `analyzer report` on the run directory, its output into `logs/analyzer.log`.
fn analyze_into_log(dir: &RunDir) {
    let log = dir.logs().join("analyzer.log");
    let Ok(out) = std::fs::File::create(&log) else {
        return;
    };
    let err = out.try_clone().ok();
    let mut cmd = std::process::Command::new(crate::local::sibling("analyzer"));
    cmd.arg("report").arg(&dir.root).stdout(out);
    if let Some(e) = err {
        cmd.stderr(e);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!(
            "aifb: warning: analyzer exited with {s}; see {}",
            log.display()
        ),
        Err(e) => eprintln!("aifb: warning: cannot start analyzer: {e}"),
    }
}

/// Polls `url` until it answers 2xx, `deadline` passes, or `alive` says the process died.
pub async fn wait_http(
    client: &reqwest::Client,
    url: &str,
    deadline: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if !alive() {
            return Err("exited before it was ready".into());
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return Err(format!(
                "{url} did not answer within {:.0}s",
                deadline.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Copies a directory tree (a TSDB snapshot is hard links inside the TSDB: they cannot
/// cross filesystems, so the files are copied).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            bytes += copy_tree(&entry.path(), &target)?;
        } else {
            bytes += std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_in_any_case_and_reject_others() {
        assert_eq!(parse_status("ready").ok(), Some(RunStatus::Ready));
        assert_eq!(parse_status("CANCELLED").ok(), Some(RunStatus::Cancelled));
        assert!(parse_status("PAUSED").is_err());
        assert_eq!(parse_state("READY").ok(), Some(State::Ready));
        assert!(parse_state("gone").is_err());
    }

    #[test]
    fn copy_tree_copies_nested_files() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("x/y")).unwrap();
        std::fs::write(a.path().join("x/y/z"), b"12345").unwrap();
        std::fs::write(a.path().join("top"), b"1").unwrap();
        let b = tempfile::tempdir().unwrap();
        let n = copy_tree(a.path(), &b.path().join("c")).unwrap();
        assert_eq!(n, 6);
        assert_eq!(std::fs::read(b.path().join("c/x/y/z")).unwrap(), b"12345");
    }
}
