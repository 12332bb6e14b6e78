//! `exporter`: the per-node Prometheus exporter of aifb.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aifb_core::exit::{self, Failure};
use aifb_exporter::collector::Collector;
use aifb_exporter::collector::gpu::Gpu;
use aifb_exporter::collector::node::Node;
use aifb_exporter::collector::process::{Processes, Selection};
use aifb_exporter::scrape::{self, Scraper};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use prometheus_client::registry::Registry;

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
    /// Root of the proc filesystem.
    #[arg(long = "path.procfs", default_value = "/proc")]
    procfs: PathBuf,
    /// Watch this process and its descendants (repeatable).
    #[arg(long = "process.pid")]
    pids: Vec<i32>,
    /// Watch the process whose PID is in this file (repeatable).
    #[arg(long = "process.pid-file")]
    pid_files: Vec<PathBuf>,
    /// Watch processes with this name (`comm`, repeatable).
    #[arg(long = "process.name")]
    names: Vec<String>,
    /// `service` label of the process series.
    #[arg(long = "process.service", default_value = "service")]
    service: String,
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
    /// Export GPU memory of the N largest compute processes per GPU (0: off).
    #[arg(long = "collector.gpu.top-processes", default_value_t = 0)]
    gpu_top_processes: usize,
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
    exit::finish("exporter", serve(args))
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
    let selected = !pids.is_empty() || !args.names.is_empty();
    if args.process_on && !selected {
        return Err(Failure::input(
            "--collector.process needs --process.pid, --process.pid-file or --process.name",
        ));
    }
    if selected && !args.process_off {
        let sel = Selection {
            pids,
            names: args.names.clone(),
            service: args.service.clone(),
        };
        out.push(Box::new(Processes::new(&args.procfs, sel)));
    }
    if !args.gpu_off {
        out.push(Box::new(Gpu::from_env(args.gpu_top_processes)));
    }
    Ok(out)
}

fn serve(args: Args) -> Result<(), Failure> {
    let collectors = collectors(&args)?;
    let names: Vec<&str> = collectors.iter().map(|c| c.name()).collect();
    tracing::info!("collectors: {}", names.join(", "));
    let registry = Arc::new(scrape::registry(Scraper::new(collectors)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::input(format!("--web.listen-address {}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(|e| Failure::check(e.to_string()))?;
        println!("listening on http://{addr}/metrics");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/", get(|| async { "aifb exporter: see /metrics\n" }))
            .with_state(registry);
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Failure::check(format!("server stopped: {e}")))
    })
}

async fn metrics(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match tokio::task::spawn_blocking(move || scrape::encode(&registry)).await {
        Ok(text) => {
            let (content_type, body) = aifb_core::promtext::negotiate(accept.as_deref(), text);
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("scrape failed: {e}"),
        ),
    }
}
