//! `exporter`: the per-node Prometheus exporter of aifb.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aifb_core::clock::rfc3339;
use aifb_core::discovery::{Record, State};
use aifb_core::duration::HumanDuration;
use aifb_core::exit::{self, Failure};
use aifb_exporter::collector::Collector;
use aifb_exporter::collector::gpu::Gpu;
use aifb_exporter::collector::job::{Job, JobEnv};
use aifb_exporter::collector::node::Node;
use aifb_exporter::collector::probe::{Probes, Target};
use aifb_exporter::collector::process::{Processes, Selection};
use aifb_exporter::scrape::Scraper;
use aifb_exporter::serve::{self, App, Settings};
use aifb_exporter::webconfig;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "exporter",
    version,
    about = "aifb per-node Prometheus exporter"
)]
struct Args {
    /// Address to serve /metrics on.
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9835")]
    listen: SocketAddr,
    /// TLS and basic authentication, in the Prometheus exporter-toolkit format.
    #[arg(long = "web.config.file")]
    web_config: Option<PathBuf>,
    /// Scrapes served at once; more are answered 503.
    #[arg(long = "web.max-requests", default_value_t = 40)]
    max_requests: usize,
    /// Scrape deadline when Prometheus sends none (X-Prometheus-Scrape-Timeout-Seconds).
    #[arg(long = "web.scrape-timeout", default_value = "10s", value_parser = duration)]
    scrape_timeout: HumanDuration,
    /// Collect in the background at this interval; scrapes get the latest result.
    #[arg(long = "collection.interval", value_parser = duration)]
    collection_interval: Option<HumanDuration>,
    /// Root of the proc filesystem.
    #[arg(long = "path.procfs", default_value = "/proc")]
    procfs: PathBuf,
    /// Mount point of the cgroup filesystem.
    #[arg(long = "path.cgroupfs", default_value = "/sys/fs/cgroup")]
    cgroupfs: PathBuf,
    /// Watch this process and its descendants (repeatable).
    #[arg(long = "process.pid")]
    pids: Vec<i32>,
    /// Watch the process whose PID is in this file (repeatable).
    #[arg(long = "process.pid-file")]
    pid_files: Vec<PathBuf>,
    /// Watch processes with this name (`comm`, repeatable).
    #[arg(long = "process.name")]
    names: Vec<String>,
    /// Watch the processes of this cgroup directory (repeatable).
    #[arg(long = "process.cgroup")]
    cgroups: Vec<PathBuf>,
    /// Watch the processes of this exporter's own SLURM job cgroup.
    #[arg(long = "process.job")]
    job_processes: bool,
    /// `service` label of the process series.

    #[arg(long = "process.service", default_value = "service")]
    service: String,
    /// Also export one series per process (cardinality follows the process count).
    #[arg(long = "process.per-pid")]
    per_pid: bool,
    /// Probe a service, as KIND=URL[@SERVICE] (repeatable; kinds: redis, postgres, vllm,
    /// ollama, qdrant, chroma, minio, http).
    #[arg(long = "probe")]
    probes: Vec<Target>,
    /// Timeout of each probe.
    #[arg(long = "probe.timeout", default_value = "2s", value_parser = duration)]
    probe_timeout: HumanDuration,
    /// Process whose SLURM job cgroup the job collector reads (a PID, or `self`).
    #[arg(long = "collector.job.pid", default_value = "self")]
    job_pid: String,
    /// Export GPU memory of the N largest compute processes per GPU (0: off).
    #[arg(long = "collector.gpu.top-processes", default_value_t = 0)]
    gpu_top_processes: usize,
    /// Enable the node collector (default: on).
    #[arg(long = "collector.node")]
    node_on: bool,
    /// Disable the node collector.
    #[arg(long = "no-collector.node", conflicts_with = "node_on")]
    node_off: bool,
    /// Enable the process collector (default: on when a process is selected).
    #[arg(long = "collector.process")]
    process_on: bool,
    /// Disable the process collector.
    #[arg(long = "no-collector.process", conflicts_with = "process_on")]
    process_off: bool,
    /// Enable the GPU collector (default: on).
    #[arg(long = "collector.gpu")]
    gpu_on: bool,
    /// Disable the GPU collector.
    #[arg(long = "no-collector.gpu", conflicts_with = "gpu_on")]
    gpu_off: bool,
    /// Enable the SLURM job collector (default: on; exports nothing outside a job).
    #[arg(long = "collector.job")]
    job_on: bool,
    /// Disable the SLURM job collector.
    #[arg(long = "no-collector.job", conflicts_with = "job_on")]
    job_off: bool,
    /// Enable the probe collector (default: on when a probe is given).
    #[arg(long = "collector.probe")]
    probe_on: bool,
    /// Disable the probe collector.
    #[arg(long = "no-collector.probe", conflicts_with = "probe_on")]
    probe_off: bool,
    /// State directory for the discovery record (`<dir>/discover/<run_id>/exporter-<job_id>.json`).
    #[arg(long = "discovery.dir", requires = "run_id")]
    discovery_dir: Option<PathBuf>,
    /// Folder for the Prometheus file_sd target file.
    #[arg(long = "discovery.file-sd", requires = "run_id")]
    file_sd: Option<PathBuf>,
    /// Run id for the discovery record.
    #[arg(long = "discovery.run-id")]
    run_id: Option<String>,
    /// Role for the discovery record.
    #[arg(long = "discovery.role", default_value = "exporter")]
    role: String,
}

fn duration(s: &str) -> Result<HumanDuration, String> {
    aifb_core::duration::parse(s).map(HumanDuration)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIFB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    exit::finish("exporter", run(args))
}

fn collectors(args: &Args) -> Result<Vec<Box<dyn Collector>>, Failure> {
    let mut out: Vec<Box<dyn Collector>> = Vec::new();
    if !args.node_off {
        out.push(Box::new(Node::new(&args.procfs)));
    }
    let mut pids = args.pids.clone();
    for f in &args.pid_files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Failure::input(format!("--process.pid-file {}: {e}", f.display())))?;
        let pid = text.trim().parse().map_err(|_| {
            Failure::input(format!(
                "--process.pid-file {}: {:?} is not a PID",
                f.display(),
                text.trim()
            ))
        })?;
        pids.push(pid);
    }
    let mut cgroups = args.cgroups.clone();
    if args.job_processes {
        let own = args.procfs.join("self/cgroup");
        let text = std::fs::read_to_string(&own)
            .map_err(|e| Failure::input(format!("--process.job: {}: {e}", own.display())))?;
        let dir = match aifb_exporter::collector::cgroup::job_cgroup(&text, &args.cgroupfs) {
            Some(aifb_exporter::collector::cgroup::JobCgroup::V2 { dir, .. }) => dir,
            Some(aifb_exporter::collector::cgroup::JobCgroup::V1 {
                memory: Some(dir), ..
            }) => dir,
            _ => {
                return Err(Failure::input(
                    "--process.job: this exporter is not inside a SLURM job cgroup",
                ));
            }
        };
        cgroups.push(dir);
    }
    let selected = !pids.is_empty() || !args.names.is_empty() || !cgroups.is_empty();

    if args.process_on && !selected {
        return Err(Failure::input(
            "--collector.process needs --process.pid, --process.pid-file, --process.name, --process.cgroup or --process.job",
        ));
    }
    if selected && !args.process_off {
        let sel = Selection {
            pids,
            names: args.names.clone(),
            service: args.service.clone(),
            cgroups,

            per_pid: args.per_pid,
        };
        out.push(Box::new(Processes::new(&args.procfs, sel)));
    }
    if !args.job_off {
        out.push(Box::new(Job::new(
            &args.procfs,
            &args.cgroupfs,
            &args.job_pid,
            JobEnv::from_env(),
        )));
    }
    if args.probe_on && args.probes.is_empty() {
        return Err(Failure::input(
            "--collector.probe needs at least one --probe KIND=URL",
        ));
    }
    if !args.probes.is_empty() && !args.probe_off {
        out.push(Box::new(Probes::new(
            args.probes.clone(),
            args.probe_timeout.get(),
        )));
    }
    if !args.gpu_off {
        out.push(Box::new(Gpu::from_env(args.gpu_top_processes)));
    }
    Ok(out)
}

fn discovery_record(
    args: &Args,
    addr: SocketAddr,
    state: State,
    started_at: &str,
) -> Option<Record> {
    let run_id = args.run_id.as_deref()?;
    Some(Record::this_process(
        run_id, &args.role, "exporter", addr, state, started_at,
    ))
}

fn now_ns() -> i64 {
    aifb_core::clock::wall_ns()
}

fn announce(args: &Args, record: &Record) -> Result<(), Failure> {
    record
        .announce(args.discovery_dir.as_deref(), args.file_sd.as_deref())
        .map_err(Failure::input)
}

fn run(args: Args) -> Result<(), Failure> {
    let started_at = rfc3339(now_ns());
    let (tls, auth) = match &args.web_config {
        Some(p) => {
            webconfig::load(p).map_err(|e| Failure::input(format!("--web.config.file {e}")))?
        }
        None => (None, None),
    };
    let collectors = collectors(&args)?;
    let scraper = Scraper::new(collectors);
    tracing::info!("collectors: {}", scraper.names().join(", "));
    let settings = Settings {
        default_timeout: args.scrape_timeout.get(),
        max_requests: args.max_requests,
        background: args
            .collection_interval
            .map(|d| d.get().max(Duration::from_millis(100))),
        auth,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::input(format!("--web.listen-address {}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(|e| Failure::check(e.to_string()))?;
        let app = App::new(scraper, settings);
        if let Some(every) = app_background(&args) {
            tokio::spawn(app.clone().background(every));
        }
        // Ready: announce first, then say so on stdout.
        let record = discovery_record(&args, addr, State::Ready, &started_at);
        if let Some(r) = &record {
            announce(&args, r)?;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{addr}/metrics");

        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let result = serve::serve(listener, serve::router(app), tls, shutdown).await;
        if let Some(mut r) = record {
            r.state = if result.is_ok() { State::Stopped } else { State::Failed };
            let _ = announce(&args, &r);
        }
        result.map_err(|e| Failure::check(format!("server stopped: {e}")))
    })
}

fn app_background(args: &Args) -> Option<Duration> {
    args.collection_interval
        .map(|d| d.get().max(Duration::from_millis(100)))
}
