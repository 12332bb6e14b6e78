//! The benchmark recipe: one YAML file describing service, monitoring, workload, SLOs and
//! analysis settings.
//!
//! Unknown keys are rejected. Every error names the file, the key path and the line:
//! `demo.yaml: workload.levels[2]: must be > 0 (line 14)`. [`Recipe::resolved`] fills in
//! every default so the lock file (`recipe.lock.yaml`) says exactly what ran.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
pub use crate::workloads::*;
use crate::yamlpath::LineIndex;

/// A whole benchmark description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Short name of the benchmark (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Written by aifb into `recipe.lock.yaml`: the version that resolved the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aifb_version: Option<String>,
    /// Where the benchmark runs.
    #[serde(default)]
    pub executor: Executor,
    /// The service under test.
    pub service: Service,
    /// What is scraped during the run.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// The load applied.
    pub workload: Workload,
    /// Service-level objectives the analysis checks.
    #[serde(default)]
    pub slo: Slo,
    /// Analysis settings.
    #[serde(default)]
    pub analysis: Analysis,
}

/// Executor kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Processes on this machine.
    #[default]
    Local,
    /// sbatch jobs on a SLURM cluster.
    Slurm,
}

/// Where and how the processes of a run are started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Executor {
    /// `local` (default) or `slurm`.
    #[serde(default)]
    pub kind: ExecutorKind,
    /// SLURM account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// SLURM partition (required for `slurm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// SLURM QOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// SLURM time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<HumanDuration>,
    /// Environment modules to load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// `hetjob` (default): one heterogeneous job with a service group (service and
    /// exporter), a client group (loadgen shards) and a monitor group (Prometheus,
    /// Grafana); `single`: every role in one allocation, for small or hetjob-less sites.
    #[serde(default)]
    pub layout: Layout,
    /// Node-local directory for writable state (service data, Prometheus TSDB); shell
    /// variables are expanded on the node (default `${TMPDIR:-/tmp}`).
    #[serde(default = "d_scratch")]
    pub scratch: String,
    /// How long before the time limit SLURM sends USR1, so the run drains and keeps its
    /// data (`--signal=B:USR1@…`).
    #[serde(default = "d_signal_margin")]
    pub signal_margin: HumanDuration,
    /// Resources of the service group (service and exporter).
    #[serde(default = "Resources::service")]
    pub service: Resources,
    /// Resources of the client group; `nodes` > 1 runs one loadgen shard per node.
    #[serde(default = "Resources::clients")]
    pub clients: Resources,
    /// Resources of the monitor group (Prometheus, Grafana).
    #[serde(default = "Resources::monitor")]
    pub monitor: Resources,
    /// Extra `#SBATCH` options, written as given (e.g. `--constraint=gpu`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch: Vec<String>,
    /// Apptainer settings for services given as `service.image`.
    #[serde(default)]
    pub apptainer: Apptainer,
}

fn d_scratch() -> String {
    "${TMPDIR:-/tmp}".into()
}

fn d_signal_margin() -> HumanDuration {
    HumanDuration::secs(120)
}

/// How the roles of a SLURM run are laid out in jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One heterogeneous job: service, client and monitor groups.
    #[default]
    Hetjob,
    /// One ordinary job holding every role.
    Single,
}

/// Resources of one group of a SLURM job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Nodes (only the client group may use more than one).
    #[serde(default = "d_one")]
    pub nodes: u32,
    /// CPUs per node (`--cpus-per-task`, one task per node).
    pub cpus: u32,
    /// Memory per node in SLURM's notation (`512M`, `16G`).
    pub memory: String,
    /// GPUs per node (`--gpus-per-node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Generic resources instead of `gpus` (`--gres`, e.g. `gpu:a100:2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
}

fn d_one() -> u32 {
    1
}

impl Resources {
    fn service() -> Self {
        Self {
            nodes: 1,
            cpus: 2,
            memory: "4G".into(),
            gpus: None,
            gres: None,
        }
    }
    fn clients() -> Self {
        Self {
            nodes: 1,
            cpus: 2,
            memory: "2G".into(),
            gpus: None,
            gres: None,
        }
    }
    fn monitor() -> Self {
        Self {
            nodes: 1,
            cpus: 1,
            memory: "1G".into(),
            gpus: None,
            gres: None,
        }
    }
    /// Whether the group asks for GPUs.
    pub fn wants_gpus(&self) -> bool {
        self.gpus.is_some_and(|g| g > 0)
            || self.gres.as_deref().is_some_and(|g| g.starts_with("gpu"))
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::Local,
            account: None,
            partition: None,
            qos: None,
            time: None,
            modules: Vec::new(),
            layout: Layout::Hetjob,
            scratch: d_scratch(),
            signal_margin: d_signal_margin(),
            service: Resources::service(),
            clients: Resources::clients(),
            monitor: Resources::monitor(),
            sbatch: Vec::new(),
            apptainer: Apptainer::default(),
        }
    }
}

/// `512M`, `16G`, `1024` (megabytes): SLURM's memory notation.
fn is_slurm_memory(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty()
        && digits.len() + 1 >= s.len()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

/// How a `service.image` is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Apptainer {
    /// The apptainer (or singularity) binary.
    #[serde(default = "d_apptainer")]
    pub binary: String,
    /// Bind mounts (`SRC:DST[:ro]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<String>,
    /// Extra arguments to `apptainer exec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

fn d_apptainer() -> String {
    "apptainer".into()
}

impl Default for Apptainer {
    fn default() -> Self {
        Self {
            binary: d_apptainer(),
            binds: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// Kind of service under test; it picks the driver that sends the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// The built-in simulated OpenAI/vLLM server (`loadgen sim`), driven through its
    /// OpenAI API.
    Simulator,
    /// Any OpenAI-compatible server (llama-server, Ollama's `/v1`, TGI, SGLang, ...).
    Openai,
    /// vLLM's OpenAI server: the OpenAI driver plus per-chunk usage
    /// (`continuous_usage_stats`) and its `/metrics`.
    Vllm,
    /// Ollama's native API (`/api/chat`, `/api/generate`, NDJSON streaming).
    Ollama,
    /// Redis (RESP over TCP).
    Redis,
    /// PostgreSQL (wire protocol).
    Postgres,
    /// An S3 object store (MinIO, Garage, Ceph RGW, AWS), SigV4-signed.
    #[serde(alias = "minio")]
    S3,
    /// ChromaDB's HTTP v2 API.
    Chroma,
    /// Qdrant's REST API.
    Qdrant,
    /// Any HTTP service: one configurable request.
    Http,
}

impl ServiceKind {
    /// The recipe spelling of the kind.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Simulator => "simulator",
            ServiceKind::Openai => "openai",
            ServiceKind::Vllm => "vllm",
            ServiceKind::Ollama => "ollama",
            ServiceKind::Redis => "redis",
            ServiceKind::Postgres => "postgres",
            ServiceKind::S3 => "s3",
            ServiceKind::Chroma => "chroma",
            ServiceKind::Qdrant => "qdrant",
            ServiceKind::Http => "http",
        }
    }

    /// URL schemes accepted for `service.endpoint`; the first one is used for a started
    /// service.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            ServiceKind::Redis => &["redis"],
            ServiceKind::Postgres => &["postgres", "postgresql"],
            _ => &["http", "https"],
        }
    }

    /// True for the LLM kinds, whose requests follow `workload.request`.
    pub fn is_llm(self) -> bool {
        matches!(
            self,
            ServiceKind::Simulator | ServiceKind::Openai | ServiceKind::Vllm | ServiceKind::Ollama
        )
    }

    /// The HTTP readiness path when the recipe gives none; `None` for services whose
    /// readiness is a protocol-level check (Redis `PING`, PostgreSQL `SELECT 1`, a signed
    /// S3 `ListBuckets`).
    pub fn default_health_path(self) -> Option<&'static str> {
        match self {
            ServiceKind::Simulator | ServiceKind::Openai | ServiceKind::Vllm => Some("/health"),
            ServiceKind::Ollama => Some("/api/tags"),
            ServiceKind::Chroma => Some("/api/v2/heartbeat"),
            ServiceKind::Qdrant => Some("/readyz"),
            ServiceKind::Http => Some("/"),
            ServiceKind::Redis | ServiceKind::Postgres | ServiceKind::S3 => None,
        }
    }

    /// The Prometheus metrics path the service itself serves, when it has one.
    pub fn default_metrics_path(self) -> Option<&'static str> {
        match self {
            ServiceKind::Simulator | ServiceKind::Openai | ServiceKind::Vllm => Some("/metrics"),
            ServiceKind::Qdrant => Some("/metrics"),
            _ => None,
        }
    }

    /// The exporter's probe kind for this service, if it has one.
    pub fn probe(self) -> Option<&'static str> {
        match self {
            ServiceKind::Redis => Some("redis"),
            ServiceKind::Postgres => Some("postgres"),
            ServiceKind::Vllm | ServiceKind::Simulator => Some("vllm"),
            ServiceKind::Ollama => Some("ollama"),
            ServiceKind::Qdrant => Some("qdrant"),
            ServiceKind::Chroma => Some("chroma"),
            ServiceKind::S3 => Some("minio"),
            ServiceKind::Openai | ServiceKind::Http => None,
        }
    }
}

/// Credentials of the service. Prefer `password_env`: a literal `password` is copied into
/// `recipe.lock.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// User name (PostgreSQL role, Redis ACL user, S3 access key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password (S3 secret key; for OpenAI-compatible, Chroma and Qdrant servers the API
    /// key or bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Environment variable holding the password, read when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl Auth {
    /// The password: the literal one, else the environment variable's value.
    pub fn secret(&self) -> Result<Option<String>, String> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        match &self.password_env {
            None => Ok(None),
            Some(name) => std::env::var(name).map(Some).map_err(|_| {
                format!("service.auth.password_env: environment variable {name} is not set")
            }),
        }
    }
}

/// The service under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Which service, hence which driver.
    pub kind: ServiceKind,
    /// Command line that starts the service. `{port}` is replaced by the chosen port,
    /// `{data_dir}` by a fresh temporary directory removed after the run, `{recipe_dir}`
    /// by the directory of the recipe file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Address of a service that is already running (nothing is started):
    /// `http://host:port` for HTTP services, `redis://host:port`,
    /// `postgres://user@host:port/db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Apptainer/Docker image of the service, for executors that run containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Credentials.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: Auth,
    /// PostgreSQL database (default `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// S3 region used in signatures (Garage: `garage`; MinIO: `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Port for a started service; 0 picks a free one.
    #[serde(default)]
    pub port: u16,
    /// Model name sent in requests.
    #[serde(default = "default_model")]
    pub model: String,
    /// Readiness check.
    #[serde(default)]
    pub health: Health,
    /// Path of the service's Prometheus metrics, scraped into metrics.parquet. Absent:
    /// the kind's own (`/metrics` for vLLM, the simulator, OpenAI servers and Qdrant);
    /// `""` turns scraping off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// Parameters of the built-in simulator.
    #[serde(default)]
    pub simulator: SimulatorSettings,
}

fn default_model() -> String {
    "sim-llm".into()
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Service {
    /// The HTTP readiness path: the recipe's, else the kind's.
    pub fn health_path(&self) -> Option<String> {
        self.health
            .path
            .clone()
            .or_else(|| self.kind.default_health_path().map(str::to_string))
    }

    /// The metrics path to scrape, if any.
    pub fn metrics(&self) -> Option<String> {
        match &self.metrics_path {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(p.clone()),
            None => self.kind.default_metrics_path().map(str::to_string),
        }
    }
}

/// Readiness check of a started service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// HTTP path that answers 200 once the service is ready. Absent: the kind's own
    /// (`/health`, Ollama `/api/tags`, Chroma `/api/v2/heartbeat`, Qdrant `/readyz`); Redis,
    /// PostgreSQL and S3 are checked through their protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long to wait for readiness before giving up.
    #[serde(default = "default_health_timeout")]
    pub timeout: HumanDuration,
}

fn default_health_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}

impl Default for Health {
    fn default() -> Self {
        Self {
            path: None,
            timeout: default_health_timeout(),
        }
    }
}

/// Parameters of the simulated continuous-batching LLM server. See
/// `docs/simulator.md` for the capacity formula they imply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Most sequences decoded together (vLLM `max_num_seqs`).
    #[serde(default = "d_max_num_seqs")]
    pub max_num_seqs: u32,
    /// KV-cache budget in tokens; a request reserves prompt + max tokens while it runs.
    #[serde(default = "d_kv_cache_tokens")]
    pub kv_cache_tokens: u64,
    /// Prefill time per prompt token.
    #[serde(default = "d_prefill")]
    pub prefill_per_token: HumanDuration,
    /// Fixed time of one decode step.
    #[serde(default = "d_step_base")]
    pub decode_step_base: HumanDuration,
    /// Extra decode-step time per running sequence.
    #[serde(default = "d_step_per_seq")]
    pub decode_step_per_seq: HumanDuration,
    /// Scheduler time per step for each waiting request.
    #[serde(default = "d_sched")]
    pub scheduler_per_waiting: HumanDuration,
    /// Burn CPU for the modelled time instead of sleeping.
    #[serde(default)]
    pub burn_cpu: bool,
    /// Coefficient of variation of a log-normal factor (mean 1) applied to every step's
    /// time, so TTFT and inter-token latency have a spread; 0 keeps the model exact.
    #[serde(default, skip_serializing_if = "is_default")]
    pub step_jitter: f64,
    /// Seed of the jitter.
    #[serde(default, skip_serializing_if = "is_default")]
    pub seed: u64,
}

fn d_max_num_seqs() -> u32 {
    16
}
fn d_kv_cache_tokens() -> u64 {
    65_536
}
fn d_prefill() -> HumanDuration {
    HumanDuration(std::time::Duration::from_micros(20))
}
fn d_step_base() -> HumanDuration {
    HumanDuration::millis(8)
}
fn d_step_per_seq() -> HumanDuration {
    HumanDuration(std::time::Duration::from_micros(250))
}
fn d_sched() -> HumanDuration {
    HumanDuration(std::time::Duration::from_micros(100))
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            max_num_seqs: d_max_num_seqs(),
            kv_cache_tokens: d_kv_cache_tokens(),
            prefill_per_token: d_prefill(),
            decode_step_base: d_step_base(),
            decode_step_per_seq: d_step_per_seq(),
            scheduler_per_waiting: d_sched(),
            burn_cpu: false,
            step_jitter: 0.0,
            seed: 0,
        }
    }
}

/// What is watched during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Interval of the loadgen's scrapes into metrics.parquet.
    #[serde(default = "d_scrape")]
    pub scrape_interval: HumanDuration,
    /// The per-node exporter.
    #[serde(default)]
    pub exporter: ExporterSettings,
    /// A Prometheus started for the run (SLURM executor): scrapes exporter, service and
    /// loadgen through file_sd, evaluates aifb's rules, and leaves a TSDB snapshot in
    /// the run directory.
    #[serde(default)]
    pub prometheus: PrometheusSettings,
    /// A Grafana started for the run (SLURM executor), provisioned with aifb's
    /// dashboards and the run's Prometheus.
    #[serde(default)]
    pub grafana: GrafanaSettings,
    /// Write `chunks.parquet`: every streamed chunk of every LLM request (time, tokens
    /// when the server counts them, answer or reasoning).
    #[serde(default)]
    pub chunks: bool,
}

/// The run's own Prometheus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSettings {
    /// Start it (SLURM executor only).
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// The prometheus binary (or an absolute path).
    #[serde(default = "d_prometheus")]
    pub binary: String,
    /// Scrape and rule evaluation interval.
    #[serde(default = "d_prom_interval")]
    pub scrape_interval: HumanDuration,
}

fn d_prometheus() -> String {
    "prometheus".into()
}
fn d_prom_interval() -> HumanDuration {
    HumanDuration::secs(5)
}

impl Default for PrometheusSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            binary: d_prometheus(),
            scrape_interval: d_prom_interval(),
        }
    }
}

/// The run's own Grafana.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrafanaSettings {
    /// Start it (SLURM executor only; needs `image` or `binary`).
    #[serde(default)]
    pub enabled: bool,
    /// Apptainer image of Grafana (e.g. `docker://grafana/grafana-oss:12.2.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A grafana binary instead of an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

fn d_scrape() -> HumanDuration {
    HumanDuration::secs(1)
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            scrape_interval: d_scrape(),
            exporter: ExporterSettings::default(),
            prometheus: PrometheusSettings::default(),
            grafana: GrafanaSettings::default(),
            chunks: false,
        }
    }
}

/// Exporter settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExporterSettings {
    /// Start the exporter next to the service.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Collectors to enable (`node`, `process`, `gpu`, `job`).
    #[serde(default = "d_collectors")]
    pub collectors: Vec<Collector>,
}

fn d_true() -> bool {
    true
}
fn d_collectors() -> Vec<Collector> {
    vec![
        Collector::Node,
        Collector::Process,
        Collector::Gpu,
        Collector::Job,
    ]
}

impl Default for ExporterSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            collectors: d_collectors(),
        }
    }
}

/// Exporter collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Collector {
    /// Node CPU and memory.
    Node,
    /// The service's processes.
    Process,
    /// NVIDIA GPUs through NVML.
    Gpu,
    /// The SLURM job's cgroup (exports nothing outside a job).
    Job,
}

impl Collector {
    /// The collector's name on the exporter command line.
    pub fn name(self) -> &'static str {
        match self {
            Collector::Node => "node",
            Collector::Process => "process",
            Collector::Gpu => "gpu",
            Collector::Job => "job",
        }
    }
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// N users, each sending its next request after the previous one ends and a think time.
    Closed,
    /// Requests arrive on a schedule independent of responses.
    Open,
}

/// Arrival process of the open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Exponential inter-arrival times.
    #[default]
    Poisson,
    /// Evenly spaced arrivals.
    Constant,
    /// Gamma-distributed inter-arrival times: bursts (`burstiness` > 1) or a steadier
    /// stream (< 1) at the same mean rate.
    Gamma,
    /// The send times of a recorded trace (`workload.trace`); each level is a speed
    /// factor (1 = as recorded, 2 = twice as fast).
    Trace,
}

/// Distribution of a closed-loop user's think time around `think_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThinkDistribution {
    /// Exactly `think_time`.
    #[default]
    Fixed,
    /// Exponential with mean `think_time` (users acting independently).
    Exponential,
}

/// How the generator chooses an open loop's rates by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// A synchronous stage (one user) and a throughput probe (`users` users) calibrate
    /// the range, then `points` rates evenly spaced strictly between the two measured
    /// throughputs are run, as GuideLLM's sweep does.
    Sweep,
    /// A throughput probe, then a bisection over the rate for the highest one whose
    /// stage meets every objective of `slo`, to within `precision`.
    Slo,
}

/// `workload.search`: the generator picks the rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// `sweep` or `slo`.
    pub mode: SearchMode,
    /// Users of the throughput probe (closed loop, no think time): enough to saturate
    /// the service.
    #[serde(default = "d_search_users")]
    pub users: u32,
    /// `sweep`: rates run between the synchronous and the probe's throughput.
    #[serde(default = "d_search_points")]
    pub points: u32,
    /// `slo`: the search stops once the highest passing and the lowest failing rate are
    /// this close, relative to the failing one.
    #[serde(default = "d_search_precision")]
    pub precision: f64,
    /// `slo`: stages at most, the probe included.
    #[serde(default = "d_search_max_stages")]
    pub max_stages: u32,
}

fn d_search_users() -> u32 {
    256
}
fn d_search_points() -> u32 {
    8
}
fn d_search_precision() -> f64 {
    0.05
}
fn d_search_max_stages() -> u32 {
    10
}

impl Search {
    /// Most stages the search can run.
    pub fn max_stages(&self) -> u32 {
        match self.mode {
            SearchMode::Sweep => self.points.saturating_add(2),
            SearchMode::Slo => self.max_stages,
        }
    }
}

/// When a stage's numbers describe the generator rather than the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// Open loop: requests sent in the measured window over those scheduled in it.
    #[serde(default = "d_min_achieved")]
    pub min_achieved_ratio: f64,
    /// Open loop: highest p99 of the schedule lag (intended start to send).
    #[serde(default = "d_max_lag")]
    pub max_schedule_lag_p99: HumanDuration,
    /// Highest share of the machine's CPUs the generator may use while measuring.
    #[serde(default = "d_max_cpu")]
    pub max_generator_cpu: f64,
}

fn d_min_achieved() -> f64 {
    0.99
}
fn d_max_lag() -> HumanDuration {
    HumanDuration::millis(10)
}
fn d_max_cpu() -> f64 {
    0.9
}

impl Default for Validity {
    fn default() -> Self {
        Self {
            min_achieved_ratio: d_min_achieved(),
            max_schedule_lag_p99: d_max_lag(),
            max_generator_cpu: d_max_cpu(),
        }
    }
}

/// Request kind sent by the OpenAI driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `/v1/chat/completions`.
    #[default]
    Chat,
    /// `/v1/completions`.
    Completion,
}

impl Operation {
    /// The `op` value written to requests.parquet and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Completion => "completion",
        }
    }
}

/// The load: a sweep of levels, each with warmup, measure and cooldown phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// `closed` (levels are users) or `open` (levels are requests per second).
    pub pattern: Pattern,
    /// The load levels of the sweep, increasing (none with `search`, which picks them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<f64>,
    /// Open loop: let the generator choose the rates (`mode: sweep`, GuideLLM-style, or
    /// `mode: slo`, the highest rate that meets the recipe's SLOs) instead of `levels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// Closed loop: pause of a user between a response and its next request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_time: Option<HumanDuration>,
    /// Closed loop: users start evenly spread over this time at the start of each stage
    /// (default: half the warmup, at most 2 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_up: Option<HumanDuration>,
    /// Closed loop: a user stops after this many requests in a stage (the stage still
    /// lasts its time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_user: Option<u64>,
    /// Closed loop: distribution of the think time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_distribution: Option<ThinkDistribution>,
    /// Open loop: arrival process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<Arrival>,
    /// Open loop, `arrival: gamma`: coefficient of variation of the inter-arrival times
    /// (1 is Poisson, 2 bursty, 0.5 steadier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burstiness: Option<f64>,
    /// Open loop: at the start of each stage the rate rises (or falls) linearly from the
    /// previous level (0 before the first) to the stage's level over this time, which must
    /// fit in the warmup, so the measured window sees the level's rate only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<HumanDuration>,
    /// Open loop, `arrival: trace`: JSONL, one request per line with its `timestamp`
    /// (seconds) and, optionally, its `prompt` and `max_tokens`. A relative path is
    /// relative to the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<std::path::PathBuf>,
    /// Open loop: most requests in flight; later arrivals wait in a client queue, and
    /// that wait shows as schedule lag (never dropped, never silently deferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Stop the sweep after the first level that misses the recipe's `slo` (levels
    /// ascending: the last level run is the first beyond the SLOs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_at_slo_miss: bool,
    /// Open loop: end a level early, and the sweep with it, once its backlog (requests in
    /// flight plus queued arrivals) keeps growing: the service is past saturation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_when_oversaturated: bool,
    /// When a stage is invalid (its numbers describe the generator, not the service).
    #[serde(default, skip_serializing_if = "is_default")]
    pub validity: Validity,
    /// Time at each level before measuring.
    #[serde(default = "d_warmup")]
    pub warmup: HumanDuration,
    /// Measured time at each level.
    #[serde(default = "d_measure")]
    pub measure: HumanDuration,
    /// Time after measuring during which requests still run but are not measured.
    #[serde(default = "d_cooldown")]
    pub cooldown: HumanDuration,
    /// Request timeout.
    #[serde(default = "d_timeout")]
    pub timeout: HumanDuration,
    /// Seed of every random choice (arrivals, prompts).
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// The LLM request sent (LLM kinds).
    #[serde(default)]
    pub request: RequestShape,
    /// Redis commands (`service.kind: redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisWorkload>,
    /// PostgreSQL transactions (`service.kind: postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresWorkload>,
    /// S3 operations (`service.kind: s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Workload>,
    /// Vector operations (`service.kind: chroma` or `qdrant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<VectorWorkload>,
    /// The HTTP request (`service.kind: http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpWorkload>,
}

fn d_warmup() -> HumanDuration {
    HumanDuration::secs(2)
}
fn d_measure() -> HumanDuration {
    HumanDuration::secs(10)
}
fn d_cooldown() -> HumanDuration {
    HumanDuration::secs(1)
}
fn d_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn d_seed() -> u64 {
    1
}

/// Shape of the LLM requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestShape {
    /// `chat` or `completion`.
    #[serde(default)]
    pub op: Operation,
    /// Approximate prompt length in tokens.
    #[serde(default = "d_prompt")]
    pub prompt_tokens: u32,
    /// Tokens to generate (`max_tokens`).
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// Stream the response (needed for TTFT).
    #[serde(default = "d_true")]
    pub stream: bool,
    /// Ask the server to ignore end-of-sequence (vLLM `ignore_eos`).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Ask for token usage in every streamed chunk (vLLM `continuous_usage_stats`).
    /// Absent: on for `service.kind: vllm`, off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_usage_stats: Option<bool>,
    /// Prompt lengths drawn uniformly from `prompt_tokens` to this, per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_max: Option<u32>,
    /// Output lengths drawn uniformly from `max_tokens` to this, per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_max: Option<u32>,
    /// Words shared by the start of every prompt (prefix caching).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_prefix_tokens: u32,
    /// Prompts from a file instead: JSONL (or a JSON array) of `{"prompt", "max_tokens"}`
    /// or ShareGPT conversations. A relative path is relative to the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<std::path::PathBuf>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn d_prompt() -> u32 {
    64
}
fn d_max_tokens() -> u32 {
    64
}

impl Default for RequestShape {
    fn default() -> Self {
        Self {
            op: Operation::Chat,
            prompt_tokens: d_prompt(),
            max_tokens: d_max_tokens(),
            stream: true,
            ignore_eos: false,
            continuous_usage_stats: None,
            prompt_tokens_max: None,
            max_tokens_max: None,
            shared_prefix_tokens: 0,
            dataset: None,
        }
    }
}

/// Service-level objectives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// 99th percentile of time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_p99: Option<HumanDuration>,
    /// 99th percentile of end-to-end latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_p99: Option<HumanDuration>,
    /// Highest acceptable fraction of failed requests (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}

/// Analysis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct Analysis {
    /// Regression tolerances.
    #[serde(default)]
    pub regress: Tolerances,
}

/// Practical tolerances of the regression gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// Relative P99 latency increase tolerated (0.10 = +10 %).
    #[serde(default = "d_p99_tol")]
    pub p99_latency: f64,
    /// Relative throughput decrease tolerated (0.10 = -10 %).
    #[serde(default = "d_tput_tol")]
    pub throughput: f64,
    /// Success-rate decrease tolerated, in percentage points.
    #[serde(default = "d_success_tol")]
    pub success_rate_points: f64,
}

fn d_p99_tol() -> f64 {
    0.10
}
fn d_tput_tol() -> f64 {
    0.10
}
fn d_success_tol() -> f64 {
    1.0
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            p99_latency: d_p99_tol(),
            throughput: d_tput_tol(),
            success_rate_points: d_success_tol(),
        }
    }
}

/// A recipe problem: the key path, what is wrong, and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeError {
    /// Key path such as `workload.levels[2]`; empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl std::fmt::Display for RecipeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl Recipe {
    /// Parses and validates a recipe text. Returns every validation problem, in document
    /// order; a syntax or type error stops at the first.
    pub fn parse(text: &str) -> Result<Recipe, Vec<RecipeError>> {
        let index = LineIndex::new(text);
        let de = yaml_serde::Deserializer::from_str(text);
        let recipe: Recipe = match serde_path_to_error::deserialize(de) {
            Ok(r) => r,
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner
                    .location()
                    .map(|l| l.line())
                    .or_else(|| index.line_of(&path));
                let mut message = inner.to_string();
                if let Some(cut) = message.find(" at line ") {
                    message.truncate(cut);
                }
                let path = if path == "." { String::new() } else { path };
                // The parser prefixes its own view of the path (the parent, for unknown
                // keys); the precise path is ours.
                let mut prefix = path.as_str();
                loop {
                    if !prefix.is_empty()
                        && let Some(rest) = message.strip_prefix(&format!("{prefix}: "))
                    {
                        message = rest.to_string();
                        break;
                    }
                    match prefix.rfind(['.', '[']) {
                        Some(cut) => prefix = &prefix[..cut],
                        None => break,
                    }
                }
                return Err(vec![RecipeError {
                    path,
                    message,
                    line,
                }]);
            }
        };
        let mut problems = recipe.validate();
        if problems.is_empty() {
            return Ok(recipe);
        }
        for p in &mut problems {
            p.line = index.line_of(&p.path);
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }

    /// Reads, parses and validates a recipe file. Errors are one line each, prefixed with
    /// the file name.
    pub fn load(path: &Path) -> Result<Recipe, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        Recipe::parse(&text).map_err(|errs| {
            errs.into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect()
        })
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Vec<RecipeError> {
        let mut out = Vec::new();
        let mut bad = |path: &str, message: String| {
            out.push(RecipeError {
                path: path.to_string(),
                message,
                line: None,
            });
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bad(
                "name",
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                    self.name
                ),
            );
        }
        if self.executor.kind == ExecutorKind::Slurm && self.executor.partition.is_none() {
            bad(
                "executor.partition",
                "required when executor.kind is slurm".into(),
            );
        }
        let ex = &self.executor;
        for (name, r) in [
            ("service", &ex.service),
            ("clients", &ex.clients),
            ("monitor", &ex.monitor),
        ] {
            if r.cpus == 0 {
                bad(&format!("executor.{name}.cpus"), "must be > 0".into());
            }
            if r.nodes == 0 || (name != "clients" && r.nodes != 1) {
                bad(
                    &format!("executor.{name}.nodes"),
                    if name == "clients" {
                        "must be > 0".into()
                    } else {
                        "must be 1: only the client group spans nodes".into()
                    },
                );
            }
            if !is_slurm_memory(&r.memory) {
                bad(
                    &format!("executor.{name}.memory"),
                    format!(
                        "{:?} is not a SLURM memory size such as 512M or 16G",
                        r.memory
                    ),
                );
            }
            if r.gpus.is_some() && r.gres.is_some() {
                bad(
                    &format!("executor.{name}.gres"),
                    "give either gpus or gres, not both".into(),
                );
            }
        }
        for (i, opt) in ex.sbatch.iter().enumerate() {
            if !opt.starts_with('-') || opt.contains('\n') {
                bad(
                    &format!("executor.sbatch[{i}]"),
                    format!("{opt:?} must be one sbatch option starting with '-'"),
                );
            }
        }
        if ex.kind == ExecutorKind::Slurm && ex.clients.nodes > 1 && self.workload.search.is_some()
        {
            bad(
                "executor.clients.nodes",
                "a rate search decides each stage from the last one: it runs on one client node"
                    .into(),
            );
        }
        if ex.kind == ExecutorKind::Slurm && ex.layout == Layout::Single && ex.clients.nodes > 1 {
            bad(
                "executor.clients.nodes",
                "more than one client node needs layout: hetjob".into(),
            );
        }
        if self.monitoring.grafana.enabled
            && self.monitoring.grafana.image.is_none()
            && self.monitoring.grafana.binary.is_none()
        {
            bad(
                "monitoring.grafana",
                "enabled: true needs image (Apptainer) or binary".into(),
            );
        }
        let s = &self.service;
        if !s.command.is_empty() && s.endpoint.is_some() {
            bad(
                "service.endpoint",
                "give either service.command or service.endpoint, not both".into(),
            );
        }
        let image_run = self.executor.kind == ExecutorKind::Slurm && s.image.is_some();
        if s.kind != ServiceKind::Simulator
            && s.command.is_empty()
            && s.endpoint.is_none()
            && !image_run
        {
            bad(
                "service",
                format!(
                    "service.kind {} needs service.command (to start it) or service.endpoint (already running)",
                    s.kind.name()
                ),
            );
        }
        if s.kind == ServiceKind::Simulator && !s.command.is_empty() {
            bad(
                "service.command",
                "the simulator is built in: leave service.command out".into(),
            );
        }
        if let Some(ep) = &s.endpoint {
            let schemes = s.kind.schemes();
            if !schemes
                .iter()
                .any(|sc| ep.strip_prefix(sc).is_some_and(|r| r.starts_with("://")))
            {
                let want: Vec<String> = schemes.iter().map(|sc| format!("{sc}://")).collect();
                bad(
                    "service.endpoint",
                    format!(
                        "{ep:?} must start with {} (service.kind {})",
                        want.join(" or "),
                        s.kind.name()
                    ),
                );
            }
        }
        if let Some(p) = &s.health.path
            && !p.starts_with('/')
        {
            bad("service.health.path", format!("{p:?} must start with '/'"));
        }
        if let Some(p) = &s.metrics_path
            && !p.is_empty()
            && !p.starts_with('/')
        {
            bad(
                "service.metrics_path",
                format!("{p:?} must start with '/' (or be \"\" to turn scraping off)"),
            );
        }
        if s.auth.password.is_some() && s.auth.password_env.is_some() {
            bad(
                "service.auth.password_env",
                "give either password or password_env, not both".into(),
            );
        }
        if s.database.is_some() && s.kind != ServiceKind::Postgres {
            bad("service.database", "only for service.kind postgres".into());
        }
        if s.region.is_some() && s.kind != ServiceKind::S3 {
            bad("service.region", "only for service.kind s3".into());
        }
        if s.health.timeout.get().is_zero() {
            bad("service.health.timeout", "must be > 0".into());
        }
        let sim = &s.simulator;
        if sim.max_num_seqs == 0 {
            bad("service.simulator.max_num_seqs", "must be > 0".into());
        }
        if !(sim.step_jitter.is_finite() && (0.0..=10.0).contains(&sim.step_jitter)) {
            bad(
                "service.simulator.step_jitter",
                format!("must be between 0 and 10, got {}", sim.step_jitter),
            );
        }
        let w = &self.workload;
        let r = &w.request;
        let per_request = u64::from(r.prompt_tokens_max.unwrap_or(r.prompt_tokens))
            + u64::from(r.shared_prefix_tokens)
            + u64::from(r.max_tokens_max.unwrap_or(r.max_tokens));
        if s.kind == ServiceKind::Simulator && sim.kv_cache_tokens < per_request {
            bad(
                "service.simulator.kv_cache_tokens",
                format!(
                    "{} cannot hold one request of {} prompt + {} output tokens",
                    sim.kv_cache_tokens, w.request.prompt_tokens, w.request.max_tokens
                ),
            );
        }
        if self.monitoring.scrape_interval.get().is_zero() {
            bad("monitoring.scrape_interval", "must be > 0".into());
        }
        match &w.search {
            None if w.levels.is_empty() => bad(
                "workload.levels",
                "must list at least one load level (or set workload.search)".into(),
            ),
            Some(_) if !w.levels.is_empty() => bad(
                "workload.levels",
                "not with workload.search, which chooses the levels: remove one of them".into(),
            ),
            Some(search) => {
                if w.pattern != Pattern::Open {
                    bad(
                        "workload.search",
                        "searches rates: only for pattern: open".into(),
                    );
                }
                if w.arrival == Some(Arrival::Trace) {
                    bad("workload.search", "not with arrival: trace".into());
                }
                if w.ramp.is_some() {
                    bad("workload.ramp", "not with workload.search".into());
                }
                if search.users == 0 {
                    bad("workload.search.users", "must be > 0".into());
                }
                match search.mode {
                    SearchMode::Sweep => {
                        if search.points == 0 {
                            bad("workload.search.points", "must be > 0".into());
                        }
                    }
                    SearchMode::Slo => {
                        if !(search.precision.is_finite()
                            && search.precision > 0.0
                            && search.precision < 1.0)
                        {
                            bad(
                                "workload.search.precision",
                                format!("must be between 0 and 1, got {}", search.precision),
                            );
                        }
                        if search.max_stages < 3 {
                            bad(
                                "workload.search.max_stages",
                                format!(
                                    "must be at least 3 (the probe and two rates), got {}",
                                    search.max_stages
                                ),
                            );
                        }
                        if self.slo.ttft_p99.is_none()
                            && self.slo.e2e_p99.is_none()
                            && self.slo.error_rate.is_none()
                        {
                            bad(
                                "workload.search",
                                "mode: slo needs at least one objective in slo (ttft_p99, e2e_p99, error_rate)"
                                    .into(),
                            );
                        }
                    }
                }
            }
            None => {}
        }
        for (i, &level) in w.levels.iter().enumerate() {
            let path = format!("workload.levels[{i}]");
            if !(level.is_finite() && level > 0.0) {
                bad(&path, format!("must be > 0, got {level}"));
                continue;
            }
            if w.pattern == Pattern::Closed && level.fract() != 0.0 {
                bad(
                    &path,
                    format!("closed loop levels are users and must be whole numbers, got {level}"),
                );
            }
            if i > 0 && w.levels[i - 1].is_finite() && level <= w.levels[i - 1] {
                bad(
                    &path,
                    format!(
                        "levels must increase, but {level} follows {}",
                        w.levels[i - 1]
                    ),
                );
            }
        }
        match w.pattern {
            Pattern::Closed => {
                for (key, set) in [
                    ("workload.ramp", w.ramp.is_some()),
                    ("workload.arrival", w.arrival.is_some()),
                    ("workload.burstiness", w.burstiness.is_some()),
                    ("workload.max_in_flight", w.max_in_flight.is_some()),
                ] {
                    if set {
                        bad(key, "only for pattern: open".into());
                    }
                }
            }
            Pattern::Open => {
                for (key, set) in [
                    ("workload.think_time", w.think_time.is_some()),
                    (
                        "workload.think_distribution",
                        w.think_distribution.is_some(),
                    ),
                    ("workload.ramp_up", w.ramp_up.is_some()),
                    ("workload.requests_per_user", w.requests_per_user.is_some()),
                ] {
                    if set {
                        bad(key, "only for pattern: closed".into());
                    }
                }
            }
        }
        if let Some(b) = w.burstiness {
            if w.arrival != Some(Arrival::Gamma) {
                bad("workload.burstiness", "only for arrival: gamma".into());
            } else if !(b.is_finite() && b > 0.0) {
                bad("workload.burstiness", format!("must be > 0, got {b}"));
            }
        }
        if w.stop_when_oversaturated && w.pattern != Pattern::Open {
            bad(
                "workload.stop_when_oversaturated",
                "open loop only: a closed loop's users cannot outrun the service".into(),
            );
        }
        if w.stop_at_slo_miss && w.search.as_ref().is_some_and(|s| s.mode == SearchMode::Slo) {
            bad(
                "workload.stop_at_slo_miss",
                "not with search mode: slo, which runs past SLO misses to bracket the limit".into(),
            );
        }
        if w.stop_at_slo_miss
            && self.slo.ttft_p99.is_none()
            && self.slo.e2e_p99.is_none()
            && self.slo.error_rate.is_none()
        {
            bad(
                "workload.stop_at_slo_miss",
                "needs at least one objective in slo (ttft_p99, e2e_p99, error_rate)".into(),
            );
        }
        match (w.arrival == Some(Arrival::Trace), w.trace.is_some()) {
            (true, false) => bad(
                "workload.arrival",
                "arrival: trace needs workload.trace (the trace file)".into(),
            ),
            (false, true) => bad("workload.trace", "only for arrival: trace".into()),
            _ => {}
        }
        if let Some(r) = w.ramp {
            if r.get() > w.warmup.get() {
                bad(
                    "workload.ramp",
                    format!(
                        "{r} is longer than the warmup ({}): the measured window would see the ramp",
                        w.warmup
                    ),
                );
            }
            if w.arrival == Some(Arrival::Trace) {
                bad("workload.ramp", "not with arrival: trace".into());
            }
        }
        if w.requests_per_user == Some(0) {
            bad("workload.requests_per_user", "must be > 0".into());
        }
        if w.max_in_flight == Some(0) {
            bad("workload.max_in_flight", "must be > 0".into());
        }
        let v = &w.validity;
        if !(v.min_achieved_ratio.is_finite() && (0.0..=1.0).contains(&v.min_achieved_ratio)) {
            bad(
                "workload.validity.min_achieved_ratio",
                format!("must be between 0 and 1, got {}", v.min_achieved_ratio),
            );
        }
        if !(v.max_generator_cpu.is_finite() && v.max_generator_cpu > 0.0) {
            bad(
                "workload.validity.max_generator_cpu",
                format!("must be > 0, got {}", v.max_generator_cpu),
            );
        }
        if w.measure.get().is_zero() {
            bad("workload.measure", "must be > 0".into());
        }
        if w.timeout.get().is_zero() {
            bad("workload.timeout", "must be > 0".into());
        }
        if w.request.max_tokens == 0 {
            bad("workload.request.max_tokens", "must be > 0".into());
        }
        if let Some(m) = w
            .request
            .prompt_tokens_max
            .filter(|m| *m < w.request.prompt_tokens)
        {
            bad(
                "workload.request.prompt_tokens_max",
                format!("{m} is below prompt_tokens ({})", w.request.prompt_tokens),
            );
        }
        if let Some(m) = w
            .request
            .max_tokens_max
            .filter(|m| *m < w.request.max_tokens)
        {
            bad(
                "workload.request.max_tokens_max",
                format!("{m} is below max_tokens ({})", w.request.max_tokens),
            );
        }
        self.validate_driver(&mut bad);
        if let Some(r) = self.slo.error_rate
            && !(0.0..=1.0).contains(&r)
        {
            bad(
                "slo.error_rate",
                format!("must be between 0 and 1, got {r}"),
            );
        }
        let t = &self.analysis.regress;
        for (key, v) in [
            ("analysis.regress.p99_latency", t.p99_latency),
            ("analysis.regress.throughput", t.throughput),
            (
                "analysis.regress.success_rate_points",
                t.success_rate_points,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad(key, format!("must be >= 0, got {v}"));
            }
        }
        out
    }

    /// Checks the driver section of the workload against the service kind.
    fn validate_driver(&self, bad: &mut impl FnMut(&str, String)) {
        let kind = self.service.kind;
        let w = &self.workload;
        let sections: [(&str, bool, &[ServiceKind]); 5] = [
            ("workload.redis", w.redis.is_some(), &[ServiceKind::Redis]),
            (
                "workload.postgres",
                w.postgres.is_some(),
                &[ServiceKind::Postgres],
            ),
            ("workload.s3", w.s3.is_some(), &[ServiceKind::S3]),
            (
                "workload.vector",
                w.vector.is_some(),
                &[ServiceKind::Chroma, ServiceKind::Qdrant],
            ),
            ("workload.http", w.http.is_some(), &[ServiceKind::Http]),
        ];
        for (path, present, kinds) in sections {
            if present && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                bad(
                    path,
                    format!(
                        "only for service.kind {}, not {}",
                        names.join(" or "),
                        kind.name()
                    ),
                );
            }
        }
        if let Some(r) = &w.redis {
            if let Some(m) = check_mix(&[("get", r.mix.get), ("set", r.mix.set)]) {
                bad("workload.redis.mix", m);
            }
            if r.keys == 0 {
                bad("workload.redis.keys", "must be > 0".into());
            }
            if !(r.zipf_exponent.is_finite() && r.zipf_exponent > 0.0) {
                bad(
                    "workload.redis.zipf_exponent",
                    format!("must be > 0, got {}", r.zipf_exponent),
                );
            }
            if r.connections == Some(0) {
                bad("workload.redis.connections", "must be > 0".into());
            }
        }
        if let Some(p) = &w.postgres {
            if let Some(m) = check_mix(&[("tpcb", p.mix.tpcb), ("select", p.mix.select)]) {
                bad("workload.postgres.mix", m);
            }
            if p.scale == 0 {
                bad("workload.postgres.scale", "must be > 0".into());
            }
            if p.connections == Some(0) {
                bad("workload.postgres.connections", "must be > 0".into());
            }
            if p.teardown && p.schema == SchemaMode::Existing {
                bad(
                    "workload.postgres.teardown",
                    "only drops tables this run created: not with schema: existing".into(),
                );
            }
        }
        if let Some(o) = &w.s3 {
            if let Some(m) = check_mix(&[("put", o.mix.put), ("get", o.mix.get)]) {
                bad("workload.s3.mix", m);
            }
            let valid_bucket = (3..=63).contains(&o.bucket.len())
                && o.bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                bad(
                    "workload.s3.bucket",
                    format!(
                        "{:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '.')",
                        o.bucket
                    ),
                );
            }
            if o.objects == 0 {
                bad("workload.s3.objects", "must be > 0".into());
            }
            if !(o.zipf_exponent.is_finite() && o.zipf_exponent > 0.0) {
                bad(
                    "workload.s3.zipf_exponent",
                    format!("must be > 0, got {}", o.zipf_exponent),
                );
            }
        }
        if let Some(v) = &w.vector {
            if let Some(m) = check_mix(&[("query", v.mix.query), ("upsert", v.mix.upsert)]) {
                bad("workload.vector.mix", m);
            }
            if v.dimension == 0 {
                bad("workload.vector.dimension", "must be > 0".into());
            }
            if v.top_k == 0 {
                bad("workload.vector.top_k", "must be > 0".into());
            }
            if v.batch == 0 {
                bad("workload.vector.batch", "must be > 0".into());
            }
            if v.collection.is_empty()
                || !v
                    .collection
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                bad(
                    "workload.vector.collection",
                    format!(
                        "{:?} must be non-empty and use only letters, digits, '-' and '_'",
                        v.collection
                    ),
                );
            }
        }
        if let Some(h) = &w.http {
            if http_method_ok(&h.method).is_none() {
                bad(
                    "workload.http.method",
                    format!("{:?} is not an HTTP method", h.method),
                );
            }
            if !h.path.starts_with('/') {
                bad(
                    "workload.http.path",
                    format!("{:?} must start with '/'", h.path),
                );
            }
            if let Some(s) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
                bad(
                    "workload.http.expect_status",
                    format!("{s} is not an HTTP status"),
                );
            }
        }
    }

    /// The recipe with every default written out and the aifb version set: the content of
    /// `recipe.lock.yaml`.
    pub fn resolved(&self) -> Recipe {
        let mut r = self.clone();
        r.aifb_version = Some(crate::VERSION.to_string());
        let kind = r.service.kind;
        if r.service.health.path.is_none() {
            r.service.health.path = kind.default_health_path().map(str::to_string);
        }
        if r.service.metrics_path.is_none() {
            r.service.metrics_path = Some(kind.default_metrics_path().unwrap_or("").to_string());
        }
        let w = &mut r.workload;
        match kind {
            ServiceKind::Redis => {
                w.redis.get_or_insert_with(Default::default);
            }
            ServiceKind::Postgres => {
                w.postgres.get_or_insert_with(Default::default);
            }
            ServiceKind::S3 => {
                w.s3.get_or_insert_with(Default::default);
            }
            ServiceKind::Chroma | ServiceKind::Qdrant => {
                w.vector.get_or_insert_with(Default::default);
            }
            ServiceKind::Http => {
                w.http.get_or_insert_with(Default::default);
            }
            _ => {}
        }
        match w.pattern {
            Pattern::Closed => {
                w.think_time.get_or_insert(HumanDuration::default());
                w.think_distribution.get_or_insert(ThinkDistribution::Fixed);
            }
            Pattern::Open => {
                w.arrival.get_or_insert(Arrival::Poisson);
                if w.arrival == Some(Arrival::Gamma) {
                    w.burstiness.get_or_insert(1.0);
                }
            }
        }
        r
    }

    /// YAML text of the recipe.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_else(|e| format!("# cannot serialise recipe: {e}\n"))
    }

    /// The JSON Schema of recipes, generated from these types.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Recipe)).unwrap_or(serde_json::Value::Null)
    }

    /// Identity of the workload and the request shape, for comparing runs: equal when the
    /// same load was applied in the same way.
    pub fn workload_hash(&self) -> String {
        // Defaults resolved, so that an omitted default and an explicit one agree.
        let w = self.resolved().workload;
        let text = serde_json::to_string(&(w, &self.service.model)).unwrap_or_default();
        crate::run::stable_hash(text.as_bytes())
    }

    /// Total planned duration of the sweep.
    pub fn planned_duration(&self) -> std::time::Duration {
        let w = &self.workload;
        let per_level = w
            .warmup
            .get()
            .saturating_add(w.measure.get())
            .saturating_add(w.cooldown.get());
        let stages = match &w.search {
            Some(s) => s.max_stages(),
            None => u32::try_from(w.levels.len()).unwrap_or(u32::MAX),
        };
        per_level.saturating_mul(stages)
    }

    /// Stages the sweep runs at most: its levels, or what its search may run.
    pub fn max_stages(&self) -> usize {
        match &self.workload.search {
            Some(s) => s.max_stages() as usize,
            None => self.workload.levels.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
name: t
service:
  kind: simulator
workload:
  pattern: closed
  levels: [1, 2, 4]
";

    #[test]
    fn minimal_recipe_gets_defaults() {
        let r = Recipe::parse(MINIMAL).unwrap();
        assert_eq!(r.workload.measure, HumanDuration::secs(10));
        assert_eq!(r.service.simulator.max_num_seqs, 16);
        assert_eq!(r.executor.kind, ExecutorKind::Local);
    }

    #[test]
    fn lock_round_trips() {
        let r = Recipe::parse(MINIMAL).unwrap().resolved();
        let text = r.to_yaml();
        let back = Recipe::parse(&text).unwrap();
        assert_eq!(back, r);
        assert!(text.contains("think_time: 0s"), "{text}");
    }

    #[test]
    fn errors_carry_path_and_line() {
        let text = MINIMAL.replace("[1, 2, 4]", "[1, 2, 0]");
        let errs = Recipe::parse(&text).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "workload.levels[2]: must be > 0, got 0 (line 6)"
        );
    }

    #[test]
    fn a_search_replaces_levels_in_an_open_loop_only() {
        let open = |search: &str| {
            format!(
                "name: t\nservice: {{kind: simulator}}\nworkload:\n  pattern: open\n  search: {search}\n"
            )
        };
        let r = Recipe::parse(&open("{mode: sweep}")).unwrap();
        let s = r.workload.search.as_ref().unwrap();
        assert_eq!((s.users, s.points), (256, 8));
        assert_eq!(r.max_stages(), 10);
        let w = &r.workload;
        assert_eq!(
            r.planned_duration(),
            (w.warmup.get() + w.measure.get() + w.cooldown.get()) * 10
        );
        let first = |text: &str| Recipe::parse(text).unwrap_err()[0].to_string();
        assert!(
            first(&open("{mode: slo}")).starts_with("workload.search: mode: slo needs"),
            "an SLO search without objectives"
        );
        assert!(
            first(&open("{mode: sweep}\n  levels: [1]")).starts_with("workload.levels: not with"),
        );
        assert!(
            first(&open("{mode: sweep}").replace("pattern: open", "pattern: closed"))
                .starts_with("workload.search: searches rates")
        );
        assert!(first(&open("{mode: sweep, points: 0}")).starts_with("workload.search.points"));
        let slo = open("{mode: slo, precision: 1.5}") + "slo: {e2e_p99: 1s}\n";
        assert!(first(&slo).starts_with("workload.search.precision"));
        let sharded = open("{mode: sweep}")
            + "executor: {kind: slurm, clients: {nodes: 2, cpus: 2, memory: 1G}}\n";
        let errs = Recipe::parse(&sharded).unwrap_err();
        assert!(
            errs.iter().any(|e| e
                .to_string()
                .starts_with("executor.clients.nodes: a rate search")),
            "{errs:?}"
        );
        let stop = open("{mode: slo}") + "slo: {e2e_p99: 1s}\n";
        let stop = stop.replace("pattern: open", "pattern: open\n  stop_at_slo_miss: true");
        assert!(first(&stop).starts_with("workload.stop_at_slo_miss: not with"));
    }

    #[test]
    fn schema_names_sections() {
        let s = Recipe::json_schema().to_string();
        for key in [
            "workload",
            "service",
            "monitoring",
            "slo",
            "analysis",
            "executor",
        ] {
            assert!(s.contains(key), "{key}");
        }
    }
}

impl SimulatorSettings {
    /// Sequences that can run together: `max_num_seqs`, further limited by how many
    /// requests of `prompt + output` tokens fit in the KV budget.
    pub fn batch_limit(&self, prompt_tokens: u32, output_tokens: u32) -> u32 {
        let per_request = u64::from(prompt_tokens) + u64::from(output_tokens);
        let by_kv = self.kv_cache_tokens / per_request.max(1);
        u64::from(self.max_num_seqs)
            .min(by_kv)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Theoretical steady-state throughput (requests/s) of a closed loop of `users` with
    /// no think time, each request `prompt_tokens` in and `output_tokens` out:
    ///
    /// `b = min(users, batch_limit)`, `w = users − b`,
    /// `step = decode_step_base + b·decode_step_per_seq + w·scheduler_per_waiting`,
    /// `X = b / (output_tokens·step + b·prompt_tokens·prefill_per_token)`.
    pub fn closed_loop_throughput(
        &self,
        users: u32,
        prompt_tokens: u32,
        output_tokens: u32,
    ) -> f64 {
        let b = f64::from(users.min(self.batch_limit(prompt_tokens, output_tokens)));
        let w = f64::from(users) - b;
        let step = self.decode_step_base.as_secs_f64()
            + b * self.decode_step_per_seq.as_secs_f64()
            + w * self.scheduler_per_waiting.as_secs_f64();
        let denom = f64::from(output_tokens) * step
            + b * f64::from(prompt_tokens) * self.prefill_per_token.as_secs_f64();
        if denom > 0.0 { b / denom } else { 0.0 }
    }

    /// The highest throughput the simulator can reach (at `users = batch_limit`).
    pub fn capacity(&self, prompt_tokens: u32, output_tokens: u32) -> f64 {
        self.closed_loop_throughput(
            self.batch_limit(prompt_tokens, output_tokens),
            prompt_tokens,
            output_tokens,
        )
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;

    #[test]
    fn throughput_peaks_at_batch_limit() {
        let s = SimulatorSettings::default();
        assert_eq!(s.batch_limit(64, 64), 16);
        let x: Vec<f64> = [1, 2, 4, 8, 16, 32, 64]
            .iter()
            .map(|&n| s.closed_loop_throughput(n, 64, 64))
            .collect();
        let best = x
            .iter()
            .cloned()
            .enumerate()
            .fold((0, 0.0), |a, (i, v)| if v > a.1 { (i, v) } else { a });
        assert_eq!(best.0, 4, "{x:?}");
        assert!((s.capacity(64, 64) - x[4]).abs() < 1e-12);
        // step = 8ms + 16*0.25ms = 12ms; X = 16 / (64*0.012 + 16*64*20e-6)
        assert!((x[4] - 16.0 / (64.0 * 0.012 + 16.0 * 64.0 * 20e-6)).abs() < 1e-9);
        let small_kv = SimulatorSettings {
            kv_cache_tokens: 512,
            ..s
        };
        assert_eq!(small_kv.batch_limit(64, 64), 4);
    }
}

/// An HTTP method token (RFC 9110 `token`), upper- or lower-case.
fn http_method_ok(m: &str) -> Option<&str> {
    let ok = !m.is_empty()
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(m)
}
