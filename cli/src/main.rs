//! `aifb`: the front door. `aifb run recipe.yaml` runs a whole benchmark from one recipe.

mod local;
mod procs;
mod runs;

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
        Command::Run { recipe, out, ci } => run(&recipe, out, ci),
        Command::List { out } => runs::list(&out),
        Command::Status { run, out } => runs::status(&out, run.as_deref()),
    };
    exit::finish("aifb", result)
}

fn run(path: &std::path::Path, out: PathBuf, ci: bool) -> Result<(), Failure> {
    let recipe = load(path)?;
    if recipe.executor.kind == ExecutorKind::Slurm {
        return Err(Failure::input(format!(
            "{}: executor.kind: slurm is not supported by this version yet; use executor.kind: local",
            path.display()
        )));
    }
    // One thread: children are tied to it with PR_SET_PDEATHSIG.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::check(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
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
