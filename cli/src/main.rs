//! `aifb`: the front door. `aifb run recipe.yaml` runs a whole benchmark from one recipe.

mod export;
mod job;
mod local;
mod monitor;
mod procs;
mod runs;
mod services;
mod slurm;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use aifb_core::exit::{self, Failure};
use aifb_core::recipe::{ExecutorKind, Recipe};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aifb",
    version,
    about = "AI Factory Bench: how much load an AI service takes, where it saturates, and why"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark recipe: start the service, exporter and loadgen, then analyse.
    Run {
        /// The recipe (YAML).
        recipe: PathBuf,
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// CI mode: exit 1 when a stage is invalid (the generator, not the service, set
        /// its numbers; see workload.validity).
        #[arg(long)]
        ci: bool,
        /// SLURM: print the batch script that would be submitted, and submit nothing.
        #[arg(long)]
        dry_run: bool,
        /// SLURM: return once the job is submitted (follow it with `aifb watch`).
        #[arg(long)]
        detach: bool,
    },
    /// Check a recipe and print every problem with its path and line.
    Validate {
        /// The recipe (YAML).
        recipe: PathBuf,
    },
    /// Print the JSON Schema of recipes.
    Schema,
    /// List the runs under a runs folder, with their state.
    List {
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Show one run (the newest without RUN): state, times, and per stage throughput,
    /// p99, errors and validity.
    Status {
        /// A run id or run directory.
        run: Option<String>,
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Follow a run live: state, stage, offered and achieved rate, p99 and errors, read
    /// from its loadgen's /metrics, until the run ends.
    Watch {
        /// A run id or run directory (the newest without it).
        run: Option<String>,
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// Seconds between lines.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Stop a run the gentle way: the loadgen drains and every finished request is kept;
    /// the run ends CANCELLED.
    Cancel {
        /// A run id or run directory.
        run: String,
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// List the discovery records of runs (what is started where, and whether it is
    /// ready, stopped, or stale because its job or process is gone).
    Services {
        /// Only this run (id).
        run: Option<String>,
        /// Parent folder of run directories (its state folder holds the records).
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Remove discovery records and file_sd targets that are stopped, failed or stale.
    Clean {
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Export a run's series from a Prometheus into metrics.parquet (the same schema as
    /// the loadgen's own scrapes), for the analyzer.
    Export {
        /// Base URL of the Prometheus (e.g. http://node12:9090).
        #[arg(long)]
        prometheus: String,
        /// A run id or run directory.
        run: String,
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// Query resolution (default: the recipe's Prometheus scrape interval).
        #[arg(long, value_parser = duration)]
        step: Option<std::time::Duration>,
        /// Write here instead of the run's metrics.parquet (which is kept as
        /// metrics.loadgen.parquet when it exists).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Steps of a SLURM batch script (internal).
    #[command(hide = true, subcommand)]
    Job(job::JobCommand),
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    aifb_core::duration::parse(s)
}

fn load(path: &std::path::Path) -> Result<Recipe, Failure> {
    Recipe::load(path).map_err(|errs| {
        for e in &errs[1..] {
            eprintln!("aifb: error: {e}");
        }
        Failure::input(errs.first().cloned().unwrap_or_default())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { recipe } => load(&recipe).map(|_| println!("{}: ok", recipe.display())),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Recipe::json_schema()).unwrap_or_default()
            );
            Ok(())
        }
        Command::Run {
            recipe,
            out,
            ci,
            dry_run,
            detach,
        } => run(&recipe, out, ci, dry_run, detach),
        Command::List { out } => runs::list(&out),
        Command::Status { run, out } => runs::status(&out, run.as_deref()),
        Command::Watch { run, out, interval } => watch::watch(&out, run.as_deref(), interval),
        Command::Cancel { run, out } => services::cancel(&out, &run),
        Command::Services { run, out } => services::list(&out, run.as_deref()),
        Command::Clean { out, dry_run } => services::clean(&out, dry_run),
        Command::Export {
            prometheus,
            run,
            out,
            step,
            output,
        } => export::export(&prometheus, &out, &run, step, output),
        Command::Job(cmd) => job::run(cmd),
    };
    exit::finish("aifb", result)
}

fn run(
    path: &std::path::Path,
    out: PathBuf,
    ci: bool,
    dry_run: bool,
    detach: bool,
) -> Result<(), Failure> {
    let recipe = load(path)?;
    let recipe_dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .and_then(|d| d.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let slurm = recipe.executor.kind == ExecutorKind::Slurm;
    if (dry_run || detach) && !slurm {
        return Err(Failure::input(format!(
            "{}: --dry-run and --detach are for executor.kind: slurm",
            path.display()
        )));
    }
    if dry_run {
        print!("{}", slurm::dry_run(&recipe, &recipe_dir, &out, ci)?);
        return Ok(());
    }
    // One thread: children are tied to it with PR_SET_PDEATHSIG.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
    if slurm {
        return rt.block_on(async {
            let (dir, m) =
                slurm::run(&recipe, &recipe_dir, &out, ci, slurm::Follow { detach }).await?;
            if detach {
                return Ok(());
            }
            if let Ok(text) = std::fs::read_to_string(dir.report().join("report.md")) {
                print!("{text}");
            }
            eprintln!(
                "aifb: run {} {}: {}",
                m.id,
                format!("{:?}", m.status).to_uppercase(),
                dir.root.display()
            );
            match m.status {
                aifb_core::run::RunStatus::Done => Ok(()),
                aifb_core::run::RunStatus::Cancelled => Err(Failure {
                    code: local::CANCELLED,
                    message: m.error.unwrap_or_else(|| "cancelled".into()),
                }),
                _ => Err(Failure::check(m.error.unwrap_or_else(|| "failed".into()))),
            }
        });
    }
    rt.block_on(async {
        let outcome = local::run(&recipe, &recipe_dir, &out, ci).await?;
        let report = if outcome.dir.requests().is_file() {
            Some(local::analyze(&outcome.dir.root).await)
        } else {
            None
        };
        match &report {
            Some(Ok(text)) => print!("{text}"),
            Some(Err(e)) => eprintln!("aifb: warning: analysis failed: {e}"),
            None => {}
        }
        eprintln!(
            "aifb: run {} {}: {}",
            outcome.manifest.id,
            format!("{:?}", outcome.manifest.status).to_uppercase(),
            outcome.dir.root.display()
        );
        match outcome.failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    })
}
