//! Discovery records: how a started component announces itself once it is ready.
//!
//! The process that started a component writes
//! `<state>/discover/<run_id>/<role>-<job_id>.json` atomically (temp file + rename), mode
//! 0600, and marks it `stopped` on exit. For Prometheus the same step writes a file_sd
//! target file (`[{targets, labels}]`). Readers treat a record whose job is gone as dead.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Lifecycle of a discovered component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started, not ready.
    Starting,
    /// Ready to serve.
    Ready,
    /// Exited cleanly.
    Stopped,
    /// Failed.
    Failed,
}

/// One discovery record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Run id.
    pub run_id: String,
    /// SLURM job id, or `local`.
    pub job_id: String,
    /// `service`, `exporter`, `loadgen`, ...
    pub role: String,
    /// What runs: `exporter`, `vllm`, `redis`, ...
    pub service: String,
    /// Host name.
    pub node: String,
    /// `host:port` to reach it.
    pub addr: String,
    /// Ports it listens on.
    pub ports: Vec<u16>,
    /// Process id.
    pub pid: u32,
    /// State.
    pub state: State,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
}

/// This host's name (the kernel's, as `hostname` prints it).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The SLURM job id of this process (`SLURM_JOB_ID`), or `local` outside a job.
pub fn job_id() -> String {
    std::env::var("SLURM_JOB_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// Whether a record's owner still exists: its SLURM job is still known to `squeue`, or,
/// outside SLURM, its process is alive. `None` when it cannot be told (no `squeue`).
pub fn owner_alive(record: &Record) -> Option<bool> {
    if record.job_id == "local" {
        return Some(Path::new(&format!("/proc/{}", record.pid)).exists());
    }
    let job = record.job_id.split('.').next().unwrap_or(&record.job_id);
    slurm_job_state(job).ok().map(|state| state.is_some())
}

/// A SLURM job's state as `squeue` shows it (`PENDING`, `RUNNING`, ...), `None` once the
/// job has left the queue; an error when `squeue` cannot be run.
pub fn slurm_job_state(job: &str) -> std::io::Result<Option<String>> {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-o", "%T", "-j", job])
        .stderr(std::process::Stdio::null())
        .output()?;
    // squeue exits non-zero for a job id it no longer knows.
    if !out.status.success() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string))
}

impl Record {
    /// The record of this process, listening on `listen` (an unspecified address is
    /// announced as this host's name).
    pub fn this_process(
        run_id: &str,
        role: &str,
        service: &str,
        listen: std::net::SocketAddr,
        state: State,
        started_at: &str,
    ) -> Record {
        let node = hostname();
        let host = if listen.ip().is_unspecified() {
            node.clone()
        } else {
            listen.ip().to_string()
        };
        Record {
            run_id: run_id.to_string(),
            job_id: job_id(),
            role: role.to_string(),
            service: service.to_string(),
            node,
            addr: format!("{host}:{}", listen.port()),
            ports: vec![listen.port()],
            pid: std::process::id(),
            state,
            started_at: started_at.to_string(),
            ready_at: (state == State::Ready)
                .then(|| crate::clock::rfc3339(crate::clock::wall_ns())),
        }
    }

    /// Writes the record into `state_dir` and its file_sd target into `file_sd`, each
    /// when given; errors name the flag and folder.
    pub fn announce(&self, state_dir: Option<&Path>, file_sd: Option<&Path>) -> Result<(), String> {
        if let Some(dir) = state_dir {
            self.write(dir)
                .map_err(|e| format!("--discovery.dir {}: {e}", dir.display()))?;
        }
        if let Some(dir) = file_sd {
            if self.state == State::Ready {
                self.write_file_sd(dir)
                    .map_err(|e| format!("--discovery.file-sd {}: {e}", dir.display()))?;
            } else {
                self.remove_file_sd(dir);
            }
        }
        Ok(())
    }

    /// `<state_dir>/discover/<run_id>/<role>-<job_id>.json`.
    pub fn path(&self, state_dir: &Path) -> PathBuf {
        state_dir
            .join("discover")
            .join(&self.run_id)
            .join(format!("{}-{}.json", self.role, self.job_id))
    }

    /// Writes the record (atomic, mode 0600); returns its path.
    pub fn write(&self, state_dir: &Path) -> std::io::Result<PathBuf> {
        let path = self.path(state_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_private(&path, &text)?;
        Ok(path)
    }

    fn file_sd_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}-{}.json", self.role, self.job_id))
    }

    /// Writes the Prometheus file_sd target file `<dir>/<role>-<job_id>.json`.
    pub fn write_file_sd(&self, dir: &Path) -> std::io::Result<PathBuf> {
        self.write_file_sd_at(dir, "/metrics")
    }

    /// Removes the file_sd target file, so Prometheus stops scraping a component that
    /// stopped on purpose (a missing file is not an error).
    pub fn remove_file_sd(&self, dir: &Path) {
        let _ = std::fs::remove_file(self.file_sd_path(dir));
    }

    /// Writes the file_sd target file for metrics served at `metrics_path`.
    pub fn write_file_sd_at(&self, dir: &Path, metrics_path: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = self.file_sd_path(dir);
        // Run identity only: a `service` target label would rename the exporter's own
        // `service` label to `exported_service`.
        let mut labels = serde_json::json!({"run_id": self.run_id, "role": self.role, "node": self.node, "job_id": self.job_id});
        if metrics_path != "/metrics" {
            labels["__metrics_path__"] = serde_json::Value::String(metrics_path.to_string());
        }
        let target = serde_json::json!([{"targets": [self.addr], "labels": labels}]);
        let text = serde_json::to_vec_pretty(&target).map_err(std::io::Error::other)?;
        write_private(&path, &text)?;
        Ok(path)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("record");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

/// Reads every record of a run.
pub fn read_run(state_dir: &Path, run_id: &str) -> Vec<Record> {
    let dir = state_dir.join("discover").join(run_id);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_private_atomic_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Record {
            run_id: "BM-20260101-000000-abcd".into(),
            job_id: "local".into(),
            role: "exporter".into(),
            service: "exporter".into(),
            node: "n1".into(),
            addr: "127.0.0.1:9835".into(),
            ports: vec![9835],
            pid: 1,
            state: State::Ready,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            ready_at: Some("2026-01-01T00:00:00.100Z".into()),
        };
        let p = r.write(dir.path()).unwrap();
        assert!(p.ends_with("discover/BM-20260101-000000-abcd/exporter-local.json"));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        r.state = State::Stopped;
        r.write(dir.path()).unwrap();
        assert_eq!(read_run(dir.path(), &r.run_id), vec![r.clone()]);
        let sd = r.write_file_sd(&dir.path().join("targets")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(sd).unwrap()).unwrap();
        assert_eq!(v[0]["targets"][0], "127.0.0.1:9835");
        assert_eq!(v[0]["labels"]["role"], "exporter");
    }
}
