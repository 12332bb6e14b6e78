//! `loadgen`: drives a service through a sweep of load levels, or serves the simulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aifb_core::clock::{RunClock, rfc3339};
use aifb_core::discovery::{Record, State as DiscoveryState};
use aifb_core::exit::{self, Failure};
use aifb_core::metrics::MetricsWriter;
use aifb_core::recipe::{Pattern, Recipe, ServiceKind, SimulatorSettings};
use aifb_core::run::{Manifest, RunDir, RunStatus, write_atomic};
use aifb_loadgen::driver::{self, Driver, DriverError, Spec};
use aifb_loadgen::scrape::{self, Target};
use aifb_loadgen::sweep::{self, Context};
use aifb_loadgen::telemetry::Telemetry;
use aifb_loadgen::{sim, sink};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{mpsc, watch};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "aifb load generator and simulated LLM server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the recipe's workload against a service and write requests.parquet,
    /// metrics.parquet and summary.json into --out.
    Run(Box<RunArgs>),
    /// Serve the simulated OpenAI-compatible LLM server.
    Sim(SimArgs),
    /// Join the run directories of the shards of one multi-node run into one.
    Merge(MergeArgs),
    /// Rebuild requests.parquet of a run whose loadgen was killed, from the part files
    /// of its checkpoints (OUT/partial).
    Recover(RecoverArgs),
    /// Wait until the service answers its driver's readiness check (HTTP health path,
    /// Redis PING, PostgreSQL SELECT 1, signed S3 HeadBucket); exit 0 when ready.
    Ready(ReadyArgs),
}

#[derive(clap::Args)]
struct ReadyArgs {
    /// Recipe whose service to check.
    #[arg(long)]
    recipe: PathBuf,
    /// Address of the service (http://…, redis://…, postgres://…).
    #[arg(long)]
    target: String,
    /// Give up after this many seconds (default: the recipe's service.health.timeout).
    #[arg(long)]
    timeout: Option<f64>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Recipe (or recipe.lock.yaml) whose workload to run.
    #[arg(long)]
    recipe: PathBuf,
    /// Address of the service: http://127.0.0.1:8000, redis://127.0.0.1:6379,
    /// postgres://user@127.0.0.1:5432/db.
    #[arg(long)]
    target: String,
    /// Output directory (the run directory).
    #[arg(long)]
    out: PathBuf,
    /// Metrics endpoint to scrape into metrics.parquet, as SOURCE=URL (repeatable).
    #[arg(long = "scrape")]
    scrape: Vec<Target>,
    /// Address for the loadgen's own /metrics.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// run.json to embed in the Parquet footers (default: OUT/run.json when present).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Name of this client in requests.parquet (default `local`, or `shard-INDEX` with
    /// --shard).
    #[arg(long)]
    client: Option<String>,
    /// Write logs to this file; stderr then shows progress and warnings only.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// CI mode: exit 1 when a stage is invalid (workload.validity), after writing
    /// every file.
    #[arg(long)]
    ci: bool,
    /// This generator's share of a multi-node run, as INDEX/COUNT (e.g. 0/4): it sends
    /// the arrivals (open loop) or drives the users (closed loop) whose number modulo
    /// COUNT is INDEX. `loadgen merge` joins the shards' directories. `slurm` takes them
    /// from SLURM_PROCID and SLURM_NTASKS; `{shard}` in --out becomes INDEX.
    #[arg(long, default_value = "0/1", value_parser = parse_shard)]
    shard: (u32, u32),
    /// Start the sweep at this Unix time (seconds), so that shards begin together.
    #[arg(long)]
    start_at: Option<f64>,
    /// State directory for this loadgen's discovery record
    /// (`<dir>/discover/<run_id>/<role>-<job_id>.json`), written once /metrics listens.
    #[arg(long = "discovery.dir", requires = "discovery_run_id")]
    discovery_dir: Option<PathBuf>,
    /// Folder for the Prometheus file_sd target file of /metrics.
    #[arg(long = "discovery.file-sd", requires = "discovery_run_id")]
    discovery_file_sd: Option<PathBuf>,
    /// Run id for the discovery record.
    #[arg(long = "discovery.run-id")]
    discovery_run_id: Option<String>,
    /// Role for the discovery record (default `loadgen`, `loadgen-INDEX` for a shard of
    /// several).
    #[arg(long = "discovery.role")]
    discovery_role: Option<String>,
    /// Write the requests finished so far as a part file under OUT/partial every this
    /// long, so that a run killed without a chance to close requests.parquet keeps them
    /// (`loadgen recover`); 0 turns it off. The folder goes when the run ends normally.
    #[arg(long, default_value = "10s", value_parser = duration_arg, env = "AIFB_CHECKPOINT_INTERVAL")]
    checkpoint_interval: Duration,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    aifb_core::duration::parse(s)
}

/// `--shard slurm`: this task's share from SLURM (`SLURM_PROCID`/`SLURM_NTASKS`).
fn slurm_shard() -> Result<(u32, u32), String> {
    let var = |name: &str| -> Result<u32, String> {
        std::env::var(name)
            .map_err(|_| format!("--shard slurm: {name} is not set (not inside srun?)"))?
            .parse()
            .map_err(|_| format!("--shard slurm: {name} is not a number"))
    };
    let (i, n) = (var("SLURM_PROCID")?, var("SLURM_NTASKS")?);
    if n == 0 || i >= n {
        return Err(format!(
            "--shard slurm: SLURM_PROCID {i} is not below SLURM_NTASKS {n}"
        ));
    }
    Ok((i, n))
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    if s == "slurm" {
        return slurm_shard();
    }
    let bad = || format!("{s:?}: expected INDEX/COUNT with INDEX < COUNT, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

#[derive(clap::Args)]
struct RecoverArgs {
    /// The run directory (its partial/ folder is read, its requests.parquet written).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The merged run directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Recipe whose workload.validity judges the merged stages (default thresholds
    /// otherwise).
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// The shards' run directories.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Take the simulator settings and model from this recipe's `service` section.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Model id served.
    #[arg(long)]
    model: Option<String>,
    /// Most sequences decoded together.
    #[arg(long)]
    max_num_seqs: Option<u32>,
    /// KV-cache budget in tokens.
    #[arg(long)]
    kv_cache_tokens: Option<u64>,
    /// Burn CPU for the modelled time instead of sleeping.
    #[arg(long)]
    burn_cpu: bool,
    /// Write the server-side times of every streamed request (by x-request-id) to this
    /// JSONL file: the truth a client's measurements can be checked against.
    #[arg(long)]
    truth: Option<PathBuf>,
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("AIFB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Logs to stderr, or, with a log file, everything to the file and warnings to stderr
/// (which then carries the progress display).
fn init_logging(log_file: Option<&std::path::Path>) -> Result<(), Failure> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};
    match log_file {
        None => {
            fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(filter())
                .init();
        }
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| Failure::input(format!("--log-file {}: {e}", path.display())))?;
            tracing_subscriber::registry()
                .with(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(std::sync::Mutex::new(file))
                        .with_filter(filter()),
                )
                .with(
                    fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
                )
                .init();
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_file = match &cli.command {
        Command::Run(a) => a.log_file.as_deref(),
        Command::Sim(_) | Command::Ready(_) | Command::Merge(_) | Command::Recover(_) => None,
    };
    if let Err(f) = init_logging(log_file) {
        return exit::finish("loadgen", Err(f));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return exit::finish(
                "loadgen",
                Err(Failure::check(format!(
                    "cannot start the async runtime: {e}"
                ))),
            );
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Sim(args) => simulate(args).await,
            Command::Ready(args) => ready(args).await,
            Command::Merge(args) => merge(args),
            Command::Recover(args) => aifb_loadgen::merge::recover(&args.out)
                .map(|rows| {
                    println!(
                        "recovered {rows} requests into {}",
                        args.out.join("requests.parquet").display()
                    )
                })
                .map_err(Failure::input),
        }
    });
    exit::finish("loadgen", result)
}

fn load_recipe(path: &std::path::Path) -> Result<Recipe, Failure> {
    Recipe::load(path).map_err(|errs| Failure::input(errs.join("; ")))
}

async fn simulate(args: SimArgs) -> Result<(), Failure> {
    let (mut settings, mut model) = match &args.recipe {
        Some(p) => {
            let r = load_recipe(p)?;
            (r.service.simulator, r.service.model)
        }
        None => (SimulatorSettings::default(), "sim-llm".to_string()),
    };
    if let Some(m) = args.model {
        model = m;
    }
    if let Some(n) = args.max_num_seqs {
        settings.max_num_seqs = n.max(1);
    }
    if let Some(k) = args.kv_cache_tokens {
        settings.kv_cache_tokens = k;
    }
    settings.burn_cpu |= args.burn_cpu;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::input(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::check(e.to_string()))?;
    println!("listening on http://{addr}");
    tracing::info!(
        "simulator: model {model}, max_num_seqs {}, kv_cache_tokens {}, burn_cpu {}",
        settings.max_num_seqs,
        settings.kv_cache_tokens,
        settings.burn_cpu
    );
    let state = sim::SimState::new(settings, &model);
    if let Some(p) = &args.truth {
        state
            .record_truth(p)
            .map_err(|e| Failure::input(format!("--truth {e}")))?;
    }
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    tokio::select! {
        r = sim::serve(listener, state) => r.map_err(|e| Failure::check(format!("simulator stopped: {e}"))),
        _ = shutdown => Ok(()),
    }
}

async fn serve_metrics(listener: tokio::net::TcpListener, telemetry: Arc<Telemetry>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(
                |State(t): State<Arc<Telemetry>>, headers: axum::http::HeaderMap| async move {
                    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                    let (content_type, body) = aifb_core::promtext::negotiate(accept, t.encode());
                    ([(header::CONTENT_TYPE, content_type)], body).into_response()
                },
            ),
        )
        .with_state(telemetry);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("loadgen /metrics stopped: {e}");
    }
}

fn signal_watch() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::warn!("interrupted: stopping, keeping every finished request"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                tracing::warn!("terminated: stopping, keeping every finished request");
            }
        }
        let _ = tx.send(true);
    });
    rx
}

/// Calls `$f::<Driver>($args…)` with the driver of `$kind`.
macro_rules! with_driver {
    ($kind:expr, $f:ident ( $($a:expr),* )) => {
        match $kind {
            ServiceKind::Simulator | ServiceKind::Openai | ServiceKind::Vllm => $f::<driver::openai::OpenAi>($($a),*).await,
            ServiceKind::Ollama => $f::<driver::ollama::Ollama>($($a),*).await,
            ServiceKind::Redis => $f::<driver::redis::Redis>($($a),*).await,
            ServiceKind::Postgres => $f::<driver::postgres::Postgres>($($a),*).await,
            ServiceKind::S3 => $f::<driver::s3::S3>($($a),*).await,
            ServiceKind::Chroma => $f::<driver::chroma::Chroma>($($a),*).await,
            ServiceKind::Qdrant => $f::<driver::qdrant::Qdrant>($($a),*).await,
            ServiceKind::Http => $f::<driver::http::Http>($($a),*).await,
        }
    };
}

/// A driver failure as a failure of the run: permanent ones (credentials, missing
/// bucket or collection) are input errors.
fn driver_failure(e: DriverError) -> Failure {
    if e.permanent {
        Failure::input(e.message)
    } else {
        Failure::check(e.message)
    }
}

fn check_target(recipe: &Recipe, target: &str) -> Result<(), Failure> {
    let kind = recipe.service.kind;
    let ok = kind.schemes().iter().any(|sc| {
        target
            .strip_prefix(sc)
            .is_some_and(|r| r.starts_with("://"))
    });
    if ok {
        Ok(())
    } else {
        Err(Failure::input(format!(
            "--target {target:?}: a {} service is reached at {}://HOST:PORT",
            kind.name(),
            kind.schemes()[0]
        )))
    }
}

fn merge(args: MergeArgs) -> Result<(), Failure> {
    let (validity, slo) = match &args.recipe {
        Some(p) => {
            let r = load_recipe(p)?;
            (r.workload.validity, r.slo)
        }
        None => Default::default(),
    };
    let m = aifb_loadgen::merge::merge(&args.out, &args.shards, &validity, &slo)
        .map_err(Failure::input)?;
    println!(
        "merged {} shards: {} requests, {} samples into {}",
        args.shards.len(),
        m.requests,
        m.samples,
        args.out.display()
    );
    Ok(())
}

async fn ready(args: ReadyArgs) -> Result<(), Failure> {
    let recipe = load_recipe(&args.recipe)?;
    check_target(&recipe, &args.target)?;
    let spec = Spec::new(&recipe, &args.target).map_err(driver_failure)?;
    let timeout = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Duration::from_secs_f64(t),
        Some(t) => return Err(Failure::input(format!("--timeout {t}: must be > 0"))),
        None => recipe.service.health.timeout.get(),
    };
    with_driver!(recipe.service.kind, wait_ready(spec, timeout))
}

async fn wait_ready<D: Driver>(spec: Spec, timeout: Duration) -> Result<(), Failure> {
    let start = std::time::Instant::now();
    let mut spec = spec;
    spec.connections = 1;
    loop {
        let attempt = async {
            let d = D::connect(&spec).await?;
            d.ping().await
        };
        let last = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => {
                println!("ready after {:.1}s", start.elapsed().as_secs_f64());
                return Ok(());
            }
            Ok(Err(e)) if e.permanent => return Err(driver_failure(e)),
            Ok(Err(e)) => e.message,
            Err(_) => "no answer within 5s".to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(Failure::check(format!(
                "service not ready within {:.0}s (service.health.timeout): {last}",
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let recipe = load_recipe(&args.recipe)?;
    check_target(&recipe, &args.target)?;
    if recipe.workload.search.is_some() && args.shard.1 > 1 {
        return Err(Failure::input(format!(
            "{}: workload.search decides each stage from the last one: it cannot run as --shard {}/{}",
            args.recipe.display(),
            args.shard.0,
            args.shard.1
        )));
    }
    let spec = Spec::new(&recipe, &args.target).map_err(driver_failure)?;
    with_driver!(recipe.service.kind, execute(args, recipe, spec))
}

async fn execute<D: Driver>(args: RunArgs, recipe: Recipe, spec: Spec) -> Result<(), Failure> {
    let trace = match (&recipe.workload.arrival, &recipe.workload.trace) {
        (Some(aifb_core::recipe::Arrival::Trace), Some(path)) => Some(Arc::new(
            aifb_loadgen::dataset::load_trace(path, recipe.workload.request.max_tokens)
                .map_err(Failure::input)?
                .offsets,
        )),
        _ => None,
    };
    let driver = D::connect(&spec).await.map_err(driver_failure)?;
    driver.setup().await.map_err(driver_failure)?;
    let identity = driver.identity().await;
    let out = args
        .out
        .to_string_lossy()
        .replace("{shard}", &args.shard.0.to_string());
    let dir = RunDir::new(PathBuf::from(out));
    std::fs::create_dir_all(&dir.root)
        .map_err(|e| Failure::input(format!("--out {}: {e}", dir.root.display())))?;
    let manifest_path = args.manifest.clone().unwrap_or_else(|| dir.manifest());
    let clock = RunClock::start();
    let mut manifest = if manifest_path.exists() {
        Manifest::read(&manifest_path).map_err(Failure::input)?
    } else {
        Manifest::new(
            &recipe.name,
            "local",
            RunStatus::Running,
            rfc3339(clock.now_ns()),
        )
    };
    let pattern = match recipe.workload.pattern {
        Pattern::Closed => "closed",
        Pattern::Open => "open",
    };
    manifest.pattern = pattern.into();
    if let Some(v) = &identity.version {
        manifest.environment.service_version = Some(v.clone());
    }
    manifest.environment.service_models = identity.models.clone();
    manifest.workload_hash = Some(recipe.workload_hash());

    let telemetry = Arc::new(Telemetry::new());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::input(format!("--listen {}: {e}", args.listen)))?;
    let mut record = None;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("loadgen metrics on http://{addr}/metrics");
        if let Some(run_id) = &args.discovery_run_id {
            let role = args.discovery_role.clone().unwrap_or_else(|| {
                if args.shard.1 > 1 {
                    format!("loadgen-{}", args.shard.0)
                } else {
                    "loadgen".into()
                }
            });
            let r = Record::this_process(
                run_id,
                &role,
                "loadgen",
                addr,
                DiscoveryState::Ready,
                &rfc3339(clock.now_ns()),
            );
            r.announce(
                args.discovery_dir.as_deref(),
                args.discovery_file_sd.as_deref(),
            )
            .map_err(Failure::input)?;
            record = Some(r);
        }
    }
    tokio::spawn(serve_metrics(listener, telemetry.clone()));

    let requests = sink::create(&dir.requests()).map_err(Failure::input)?;
    let metrics = MetricsWriter::create(&dir.metrics()).map_err(Failure::input)?;
    let cancel = signal_watch();
    let (record_tx, record_rx) = mpsc::unbounded_channel();
    let plans = sink::Plans::default();
    // chunks.parquet, when the recipe asks for it: its own writer task.
    let (chunk_tx, chunk_task) = if recipe.monitoring.chunks {
        let mut writer =
            aifb_core::chunks::ChunkWriter::create(&dir.chunks()).map_err(Failure::input)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<aifb_core::chunks::ChunkRecord>>();
        let task = tokio::spawn(async move {
            let mut failure = None;
            while let Some(rows) = rx.recv().await {
                if failure.is_none()
                    && let Err(e) = writer.extend(rows)
                {
                    tracing::error!("{e}");
                    failure = Some(e);
                }
            }
            (writer, failure)
        });
        (Some(tx), Some(task))
    } else {
        (None, None)
    };
    let checkpoint = (!args.checkpoint_interval.is_zero())
        .then(|| sink::Checkpoint::new(dir.root.join("partial"), args.checkpoint_interval));
    let sink_task = sink::spawn(record_rx, requests, plans.clone(), checkpoint)
        .map_err(|e| Failure::check(format!("cannot start the request sink: {e}")))?;
    let (scrape_stop_tx, scrape_stop_rx) = watch::channel(false);
    // The service's own metrics endpoint takes the same credentials as its API.
    let mut targets = args.scrape.clone();
    if let Some(secret) = &spec.secret {
        let header = match recipe.service.kind {
            ServiceKind::Qdrant => Some(("api-key".to_string(), secret.clone())),
            ServiceKind::Simulator | ServiceKind::Openai | ServiceKind::Vllm => {
                Some(("authorization".to_string(), format!("Bearer {secret}")))
            }
            _ => None,
        };
        for t in targets.iter_mut().filter(|t| t.source == "service") {
            t.header = header.clone();
        }
    }
    let scrape_task = tokio::spawn(scrape::run(
        targets,
        recipe.monitoring.scrape_interval.get(),
        clock,
        telemetry.clone(),
        metrics,
        scrape_stop_rx,
    ));

    let client_name = args.client.clone().unwrap_or_else(|| match args.shard {
        (_, 1) => "local".to_string(),
        (i, _) => format!("shard-{i}"),
    });
    let ctx = Arc::new(Context {
        driver,
        workload: recipe.workload.clone(),
        clock,
        telemetry: telemetry.clone(),
        records: record_tx,
        id_prefix: format!("{}-{client_name}", manifest.id),
        client_name,
        sequence: Default::default(),
        shard: args.shard,
        slo: Default::default(),
        objectives: recipe.slo.clone(),
        plans,
        trace,
        chunks: chunk_tx,
    });

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    // A search runs up to its stage budget: "stage 3/≤10".
    let levels = match &recipe.workload.search {
        Some(_) => format!("≤{}", recipe.max_stages()),
        None => recipe.max_stages().to_string(),
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let on_stage = |index: u32, step: aifb_loadgen::search::Step, length: Duration| {
        let (level, unit) = match step.level {
            aifb_loadgen::search::Level::Users(n) => (f64::from(n), "users"),
            aifb_loadgen::search::Level::Rate(r) => (r, "req/s"),
        };
        let unit = match step.calibration {
            Some(c) => format!("{unit} ({} calibration)", c.as_str()),
            None => unit.to_string(),
        };
        if !terminal && args.log_file.is_some() {
            eprintln!(
                "loadgen: stage {}/{levels}: {level} {unit} for {:.1}s",
                index + 1,
                length.as_secs_f64()
            );
        }

        tracing::info!(
            "stage {}/{levels}: {level} {unit} for {:.1}s",
            index + 1,
            length.as_secs_f64()
        );
        bar.reset();
        bar.set_length(length.as_millis() as u64);
        bar.set_prefix(format!("stage {}/{levels}", index + 1));
        bar.set_message(format!("{level} {unit}"));
    };
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(200));
            loop {
                t.tick().await;
                bar.inc(200);
            }
        })
    };
    if let Some(at) = args.start_at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match Duration::try_from_secs_f64(at - now) {
            Ok(wait) => {
                tracing::info!("waiting {:.3}s for --start-at", wait.as_secs_f64());
                let mut cancel = cancel.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.wait_for(|c| *c) => {}
                }
            }
            Err(_) => tracing::warn!("--start-at {at} has passed: starting now"),
        }
    }
    let sweep::Sweep {
        stages: windows,
        search,
    } = sweep::run(ctx.clone(), cancel.clone(), &on_stage).await;
    ticker.abort();
    bar.finish_and_clear();
    // The driver stays for teardown; the rest of the context (with the record sender)
    // goes, which lets the sink finish.
    let driver = Arc::into_inner(ctx).map(|c| c.driver);
    let (writer, stats, sink_failure) = tokio::task::spawn_blocking(move || sink_task.join())
        .await
        .map_err(|e| Failure::check(format!("request sink failed: {e}")))?
        .map_err(|_| Failure::check("request sink failed".to_string()))?;
    let _ = scrape_stop_tx.send(true);
    let (metrics_writer, scrape_failure) = scrape_task
        .await
        .map_err(|e| Failure::check(format!("scraper failed: {e}")))?;

    let cancelled = *cancel.borrow();
    manifest.stages = windows.iter().map(|r| r.window.clone()).collect();
    manifest.status = if cancelled {
        RunStatus::Cancelled
    } else {
        RunStatus::Done
    };
    manifest.finished_at = Some(rfc3339(clock.now_ns()));
    let manifest_json =
        serde_json::to_string(&manifest).map_err(|e| Failure::check(e.to_string()))?;
    let rows = writer
        .finish(Some(&manifest_json))
        .map_err(Failure::check)?;
    // requests.parquet is complete: the checkpoints are no longer needed.
    let partial = dir.root.join("partial");
    if partial.exists()
        && let Err(e) = std::fs::remove_dir_all(&partial)
    {
        tracing::warn!("{}: {e}", partial.display());
    }
    let samples = metrics_writer
        .finish(Some(&manifest_json))
        .map_err(Failure::check)?;
    if let Some(task) = chunk_task {
        // Every sender went with the context: the task ends once it has written all.
        let (writer, failure) = task
            .await
            .map_err(|e| Failure::check(format!("chunk sink failed: {e}")))?;
        if let Some(e) = failure {
            return Err(Failure::check(e));
        }
        writer
            .finish(Some(&manifest_json))
            .map_err(Failure::check)?;
    }
    let cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let summary = sink::summary(
        &manifest.id,
        pattern,
        &windows,
        &stats,
        &recipe.workload.validity,
        &recipe.slo,
        cpus,
    );
    let mut summary = summary;
    if let Some(found) = &search {
        summary["search"] = serde_json::to_value(found).unwrap_or_default();
    }
    summary["service"] = serde_json::json!({
        "version": manifest.environment.service_version,
        "models": manifest.environment.service_models,
    });
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Failure::check(e.to_string()))?;
    write_atomic(&dir.summary(), text.as_bytes())
        .map_err(|e| Failure::check(format!("{}: {e}", dir.summary().display())))?;
    if let Some(mut r) = record {
        r.state = DiscoveryState::Stopped;
        if let Err(e) = r.announce(
            args.discovery_dir.as_deref(),
            args.discovery_file_sd.as_deref(),
        ) {
            tracing::warn!("{e}");
        }
    }
    tracing::info!(
        "wrote {rows} requests and {samples} samples to {}",
        dir.root.display()
    );
    if let Some(driver) = driver
        && let Err(e) = driver.teardown().await
    {
        tracing::warn!("teardown: {e}");
    }
    if let Some(e) = sink_failure.or(scrape_failure) {
        return Err(Failure::check(e));
    }
    let invalid: Vec<String> = summary["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["valid"] == false)
        .map(|s| {
            let reasons: Vec<&str> = s["invalid_reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            format!(
                "stage {} ({}): {}",
                s["stage"],
                s["level"],
                reasons.join("; ")
            )
        })
        .collect();
    for line in &invalid {
        tracing::warn!("invalid {line}");
    }
    let ok: u64 = summary["stages"].as_array().map_or(0, |s| {
        s.iter().filter_map(|s| s["measured_ok"].as_u64()).sum()
    });
    if !cancelled && ok == 0 {
        let first_error = stats
            .values()
            .flat_map(s_errors)
            .next()
            .unwrap_or_else(|| "none".into());
        return Err(Failure::check(format!(
            "no measured request succeeded (errors: {first_error}); data kept in {}",
            dir.root.display()
        )));
    }
    if args.ci && !cancelled && !invalid.is_empty() {
        return Err(Failure::check(format!(
            "{} invalid stage(s), first {}; data kept in {}",
            invalid.len(),
            invalid[0],
            dir.root.display()
        )));
    }
    Ok(())
}

fn s_errors(s: &sink::StageStats) -> Vec<String> {
    s.error_counts().map(|(k, v)| format!("{k} x{v}")).collect()
}
