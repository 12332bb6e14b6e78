//! `analyzer`: turns a run's Parquet files into answers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aifb_analyzer::report::Report;
use aifb_analyzer::{plot, stages};
use aifb_core::exit::{self, Failure};
use aifb_core::recipe::Recipe;
use aifb_core::requests;
use aifb_core::run::{Manifest, RunDir};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "analyzer", version, about = "Offline analysis of aifb runs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Per-stage table, saturation and knee; writes report/report.md, report.json and plots.
    Report {
        /// A run directory, or a requests.parquet file.
        run: PathBuf,
        /// What to print on stdout.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report { run, format } => report(&run, format),
    };
    exit::finish("analyzer", result)
}

fn report(run: &Path, format: Format) -> Result<(), Failure> {
    let (dir, requests_path) = if run.is_dir() {
        let d = RunDir::new(run);
        let p = d.requests();
        (d, p)
    } else if run.is_file() {
        let parent = run
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (RunDir::new(parent), run.to_path_buf())
    } else {
        return Err(Failure::input(format!(
            "{}: no such run directory or file",
            run.display()
        )));
    };
    if !requests_path.is_file() {
        return Err(Failure::input(format!(
            "{}: no requests.parquet in this run directory",
            dir.root.display()
        )));
    }
    let file = requests::read(&requests_path).map_err(Failure::input)?;
    let manifest = match &file.manifest {
        Some(json) => Some(serde_json::from_str::<Manifest>(json).map_err(|e| {
            Failure::input(format!(
                "{}: footer aifb.run is not a run manifest: {e}",
                requests_path.display()
            ))
        })?),
        None if dir.manifest().is_file() => {
            Some(Manifest::read(&dir.manifest()).map_err(Failure::input)?)
        }
        None => None,
    };
    let recipe = if dir.lock().is_file() {
        Some(Recipe::load(&dir.lock()).map_err(|e| Failure::input(e.join("; ")))?)
    } else {
        None
    };
    let windows = match manifest.as_ref().filter(|m| !m.stages.is_empty()) {
        Some(m) => m.stages.clone(),
        None => stages::windows_from_rows(&file.rows),
    };
    let summaries = stages::summarize(&file.rows, &windows);
    let report = Report::new(manifest.as_ref(), recipe.as_ref(), summaries);

    let out = dir.report();
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots)
        .map_err(|e| Failure::input(format!("{}: {e}", plots.display())))?;
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| Failure::check(e.to_string()))?;
    write(out.join("report.json"), json.clone())?;
    write(out.join("report.md"), report.markdown())?;
    if let Err(e) = plot::throughput_latency(&report, &plots.join("throughput_latency.svg")) {
        eprintln!("analyzer: warning: plot not drawn: {e}");
    }
    match format {
        Format::Json => println!("{json}"),
        Format::Text => {
            print!(
                "{}",
                report
                    .markdown()
                    .split("\nThroughput counts")
                    .next()
                    .unwrap_or_default()
            );
            println!("\nreport: {}", out.join("report.md").display());
        }
    }
    Ok(())
}
