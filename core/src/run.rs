//! Run identity, the run directory layout and the `run.json` manifest.
//!
//! ```text
//! runs/<run_id>/              run_id = BM-YYYYMMDD-HHMMSS-<4 hex>
//!   recipe.lock.yaml          the recipe with every default resolved, plus the aifb version
//!   run.json                  manifest (this module's Manifest)
//!   requests.parquet          one row per request
//!   metrics.parquet           scraped time series
//!   summary.json              per-stage aggregates from the histograms
//!   logs/                     service, exporter, loadgen logs
//!   report/                   report.md, report.json, plots
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Makes a run id `BM-YYYYMMDD-HHMMSS-<4 hex>` from UTC now and 16 random bits.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let suffix: u16 = rand::random();
    format!("BM-{}-{suffix:04x}", now.format("%Y%m%d-%H%M%S"))
}

/// True when `id` has the shape of a run id.
pub fn is_run_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 23
        && id.starts_with("BM-")
        && b[3..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'-'
        && b[12..18].iter().all(u8::is_ascii_digit)
        && b[18] == b'-'
        && b[19..].iter().all(|c| c.is_ascii_hexdigit())
}

/// Paths inside one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The run directory itself.
    pub root: PathBuf,
}

impl RunDir {
    /// A run directory at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// Creates the directory with its `logs/` and `report/` folders.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.logs())?;
        std::fs::create_dir_all(self.report())
    }
    /// `recipe.lock.yaml`.
    pub fn lock(&self) -> PathBuf {
        self.root.join("recipe.lock.yaml")
    }
    /// `run.json`.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("run.json")
    }
    /// `requests.parquet`.
    pub fn requests(&self) -> PathBuf {
        self.root.join("requests.parquet")
    }
    /// `chunks.parquet` (optional).
    pub fn chunks(&self) -> PathBuf {
        self.root.join("chunks.parquet")
    }

    /// `metrics.parquet`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.parquet")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// `report/`.
    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}

/// Lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    /// Submitted, waiting for resources (SLURM).
    Pending,
    /// Processes are being started.
    Launching,
    /// The service answered its readiness check.
    Ready,
    /// The workload is running.
    Running,
    /// Finished.
    Done,
    /// Failed; see `error`.
    Failed,
    /// Stopped by a signal; the data collected so far is kept.
    Cancelled,
}

/// One load level of the sweep and its time windows (Unix nanoseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageWindow {
    /// Index in the sweep.
    pub stage: u32,
    /// Closed loop: users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Open loop: offered requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Start of warmup.
    pub start_ns: i64,
    /// Start of the measured window.
    pub measure_start_ns: i64,
    /// End of the measured window.
    pub measure_end_ns: i64,
    /// End of cooldown (and of the stage's drain).
    pub end_ns: i64,
    /// A stage a rate search ran to calibrate its range (`synchronous`, `throughput`):
    /// closed-loop, not a point of the rate curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// What a rate search (`workload.search`) found: `summary.json`'s `search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// `sweep` or `slo`.
    pub mode: String,
    /// Throughput of the synchronous stage, requests/s (`sweep`).
    #[serde(default)]
    pub synchronous_rps: Option<f64>,
    /// Throughput of the throughput probe, requests/s.
    #[serde(default)]
    pub throughput_rps: Option<f64>,
    /// `slo`: the highest rate run that met every objective, below any that missed.
    #[serde(default)]
    pub max_rate_meeting_slo: Option<f64>,
    /// `slo`: the lowest rate run that missed an objective.
    #[serde(default)]
    pub min_rate_missing_slo: Option<f64>,
    /// Why the search ended.
    pub ended: String,
}

/// What a calibration stage of a rate search measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// One user, no think time: the service's rate for one request at a time.
    Synchronous,
    /// Many users, no think time: the most the service completes.
    Throughput,
}

impl Calibration {
    /// The name in run.json and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Calibration::Synchronous => "synchronous",
            Calibration::Throughput => "throughput",
        }
    }
}

impl StageWindow {
    /// Whether `other` applied the same load: the same users or rate, in the same role (a
    /// search's calibration stage of 64 users is not a 64 req/s stage).
    pub fn same_load(&self, other: &StageWindow) -> bool {
        self.concurrency == other.concurrency
            && self.rate == other.rate
            && self.calibration == other.calibration
    }

    /// The load level: users or rate.
    pub fn level(&self) -> f64 {
        self.concurrency.map(f64::from).or(self.rate).unwrap_or(0.0)
    }
    /// Length of the measured window in seconds.
    pub fn measure_secs(&self) -> f64 {
        (self.measure_end_ns - self.measure_start_ns) as f64 / 1e9
    }
}

/// A process started for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `service`, `exporter`, `loadgen`.
    pub role: String,
    /// Process id.
    pub pid: u32,
    /// Command line.
    pub command: Vec<String>,
    /// Listening address, when it serves HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// Where the run ran.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Environment {
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// GPU model, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// GPU driver, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_driver: Option<String>,
    /// Service version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_version: Option<String>,
    /// Models the service said it serves (`/v1/models`, Ollama `/api/tags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_models: Vec<String>,
}

impl Environment {
    /// Reads host facts from `/proc` (best effort; missing facts stay empty).
    pub fn detect() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            gpu: None,
            gpu_driver: None,
            service_version: None,
            service_models: Vec::new(),
        }
    }
}

/// The run manifest: `run.json`, also stored in the Parquet footers under `aifb.run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Run id.
    pub id: String,
    /// Recipe name.
    pub name: String,
    /// aifb version.
    pub aifb_version: String,
    /// Lifecycle state.
    pub status: RunStatus,
    /// `local` or `slurm`.
    pub executor: String,
    /// SLURM job ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_ids: Vec<String>,
    /// Nodes used.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Environment fingerprint.
    pub environment: Environment,
    /// Processes started by the executor.
    #[serde(default)]
    pub processes: Vec<ProcessRecord>,
    /// `closed` or `open`.
    pub pattern: String,
    /// Identity of the resolved workload (`workload_hash`): two runs compare only when
    /// they ran the same workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_hash: Option<String>,
    /// Load levels and their windows.
    #[serde(default)]
    pub stages: Vec<StageWindow>,
    /// Why the run failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds from the service's start to its first successful readiness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_ready_s: Option<f64>,
}

impl RunStatus {
    /// Whether the run has ended (DONE, FAILED or CANCELLED).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Done | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl Manifest {
    /// A new run's manifest: a fresh id, this aifb's version, the environment of this
    /// host, and nothing recorded yet.
    pub fn new(name: &str, executor: &str, status: RunStatus, started_at: String) -> Manifest {
        Manifest {
            id: new_run_id(),
            name: name.to_string(),
            aifb_version: crate::VERSION.into(),
            status,
            executor: executor.into(),
            job_ids: vec![],
            nodes: vec![],
            started_at,
            finished_at: None,
            environment: Environment::detect(),
            processes: vec![],
            pattern: String::new(),
            workload_hash: None,
            stages: vec![],
            error: None,
            time_to_ready_s: None,
        }
    }

    /// Reads `run.json`.
    pub fn read(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a run manifest: {e}", path.display()))
    }

    /// Writes `run.json` atomically (temp file + rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, text.as_bytes())
    }
}

/// A stable 64-bit FNV-1a hash, hex: the same bytes give the same id on every platform
/// and Rust version.
pub fn stable_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Writes a file atomically: a temp file in the same folder, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_shape() {
        let id = new_run_id();
        assert!(is_run_id(&id), "{id}");
        assert!(!is_run_id("BM-2026-bad"));
    }

    #[test]
    fn manifest_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            id: new_run_id(),
            name: "t".into(),
            aifb_version: crate::VERSION.into(),
            status: RunStatus::Running,
            executor: "local".into(),
            job_ids: vec![],
            nodes: vec!["n1".into()],
            started_at: "2026-01-01T00:00:00.000Z".into(),
            finished_at: None,
            environment: Environment::detect(),
            processes: vec![],
            pattern: "closed".into(),
            workload_hash: Some(stable_hash(b"w")),
            stages: vec![StageWindow {
                stage: 0,
                concurrency: Some(4),
                rate: None,
                start_ns: 1,
                measure_start_ns: 2,
                measure_end_ns: 3,
                end_ns: 4,
                calibration: None,
            }],
            error: None,
            time_to_ready_s: None,
        };
        let p = dir.path().join("run.json");
        m.write(&p).unwrap();
        assert_eq!(Manifest::read(&p).unwrap(), m);
    }
}
