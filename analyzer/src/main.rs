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
    /// The Kneedle knee of a curve given as a two-column CSV (x, y), as kneed 0.9.0 finds it.
    Knee {
        /// CSV with x and y columns (x increasing; a header line is allowed).
        #[arg(long)]
        input: PathBuf,
        /// Shape: concave (a knee) or convex (an elbow).
        #[arg(long, value_enum, default_value = "concave")]
        curve: CurveArg,
        /// Direction of the curve.
        #[arg(long, value_enum, default_value = "increasing")]
        direction: DirectionArg,
        /// Sensitivity S.
        #[arg(short = 'S', long = "sensitivity", default_value_t = 1.0)]
        sensitivity: f64,
        /// Smooth with a least-squares polynomial of this degree instead of using the data as is.
        #[arg(long)]
        polynomial: Option<usize>,
        /// Return the last knee instead of the first.
        #[arg(long)]
        online: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Compare a new run with a base run: verdicts per level and metric, and an exit code
    /// for CI (0 unchanged or improved, 1 regressed, 3 inconclusive with
    /// --fail-on-inconclusive, 4 not comparable, 2 bad input).
    Regress {
        /// The base run then the new run (requests.parquet files or run directories); with
        /// --calibrate, two or more runs of one build.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// A/A calibration: compare every pair of the runs (all of one build) and report
        /// the false-alarm rate; exit 1 if it exceeds 5 %.
        #[arg(long)]
        calibrate: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "md")]
        format: RegressFormat,
        /// Relative P99 increase tolerated (default: the recipe's, else 0.10).
        #[arg(long)]
        p99_tolerance: Option<f64>,
        /// Relative throughput decrease tolerated (default: the recipe's, else 0.10).
        #[arg(long)]
        throughput_tolerance: Option<f64>,
        /// Success-rate decrease tolerated in points (default: the recipe's, else 1).
        #[arg(long)]
        success_points: Option<f64>,
        /// Take tolerances from this recipe's `analysis.regress` section.
        #[arg(long)]
        recipe: Option<PathBuf>,
        /// Exit 3 when a verdict is inconclusive.
        #[arg(long)]
        fail_on_inconclusive: bool,
        /// Seed of the bootstrap.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Compare two or more runs side by side: a table per metric and overlaid plots.
    Compare {
        /// Runs: requests.parquet files or run directories.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Folder for compare.md and compare.svg.
        #[arg(long, default_value = "compare")]
        out: PathBuf,
    },
    /// The headline numbers of vLLM's benchmark_serving, GuideLLM or AIPerf, per stage,
    /// computed from this run's rows with each tool's own definitions (docs/analysis.md).
    Compat {
        /// A run directory, or a requests.parquet file (chunks.parquet beside it is used
        /// when present).
        run: PathBuf,
        /// The peer: vllm, guidellm or aiperf.
        #[arg(long = "as", value_parser = ["vllm", "guidellm", "aiperf"])]
        peer: String,
        /// What to print on stdout.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Per-level counts, throughput and latency percentiles of a requests.parquet file of
    /// any size, streamed in bounded memory.
    Summary {
        /// A requests.parquet file or a run directory.
        run: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Fit the Universal Scalability Law to a two-column CSV (N, X).
    Usl {
        /// CSV with concurrency N and throughput X columns.
        #[arg(long)]
        input: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RegressFormat {
    Md,
    Json,
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
enum CurveArg {
    Concave,
    Convex,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    Increasing,
    Decreasing,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report { run, format } => report(&run, format),
        Command::Knee {
            input,
            curve,
            direction,
            sensitivity,
            polynomial,
            online,
            format,
        } => knee(
            &input,
            curve,
            direction,
            sensitivity,
            polynomial,
            online,
            format,
        ),
        Command::Usl { input, format } => usl(&input, format),
        Command::Compare { runs, out } => compare(&runs, &out),
        Command::Summary { run, format } => summary(&run, format),
        Command::Compat { run, peer, format } => compat(&run, &peer, format),
        Command::Regress {
            runs,
            calibrate: true,
            p99_tolerance,
            throughput_tolerance,
            success_points,
            recipe,
            seed,
            ..
        } => calibrate_runs(
            &runs,
            (p99_tolerance, throughput_tolerance, success_points),
            recipe.as_deref(),
            seed,
        ),
        Command::Regress {
            runs,
            format,
            p99_tolerance,
            throughput_tolerance,
            success_points,
            recipe,
            fail_on_inconclusive,
            seed,
            ..
        } => regress(
            &runs,
            format,
            (p99_tolerance, throughput_tolerance, success_points),
            recipe.as_deref(),
            fail_on_inconclusive,
            seed,
        ),
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
    // A rate search's calibration stages are reported apart from the load curve.
    let (windows, calibration_windows) = stages::split_calibration(&windows);
    let mut summaries = stages::summarize(&file.rows, &windows);
    let mut calibration = stages::summarize(&file.rows, &calibration_windows);
    let mut search = None;
    if let Ok(text) = std::fs::read_to_string(dir.summary())
        && let Ok(loadgen) = serde_json::from_str::<serde_json::Value>(&text)
    {
        stages::add_generator_verdicts(&mut summaries, &loadgen);
        stages::add_generator_verdicts(&mut calibration, &loadgen);
        search =
            serde_json::from_value::<aifb_core::run::SearchResult>(loadgen["search"].clone()).ok();
    }
    let samples = if dir.metrics().is_file() {
        aifb_core::metrics::read(&dir.metrics()).map_err(Failure::input)?
    } else {
        Vec::new()
    };
    let findings = if !samples.is_empty() {
        let batch_limit = recipe
            .as_ref()
            .filter(|r| r.service.kind == aifb_core::recipe::ServiceKind::Simulator)
            .map(|r| {
                r.service.simulator.batch_limit(
                    r.workload.request.prompt_tokens,
                    r.workload.request.max_tokens,
                )
            });
        aifb_analyzer::bottleneck::attribute(&samples, &windows, &summaries, batch_limit)
    } else {
        Vec::new()
    };
    let report = Report::new(manifest.as_ref(), recipe.as_ref(), summaries)
        .with_bottlenecks(findings)
        .with_search(calibration, &calibration_windows, search);

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
    let mut svgs: Vec<(&str, String)> = Vec::new();
    let spectrum_points = report
        .max_throughput
        .map(|m| {
            let mut lat: Vec<f64> = file
                .rows
                .iter()
                .filter(|r| r.stage == m.stage && r.ok && r.phase == "measure")
                .map(|r| r.latency_s())
                .collect();
            lat.sort_by(f64::total_cmp);
            [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999]
                .into_iter()
                .filter(|p| lat.len() >= stages::min_samples(*p))
                .filter_map(|p| stages::percentile(&lat, p).map(|v| (p, v)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let spectrum_title = report
        .max_throughput
        .map(|m| {
            format!(
                "Latency percentiles at {} {} (maximum throughput)",
                aifb_analyzer::report::fmt_level(m.level),
                report.level_unit
            )
        })
        .unwrap_or_default();
    let drawn: [(&str, &str, Result<(), String>); 4] = [
        (
            "throughput_latency.svg",
            "Throughput versus load, with the simulator model and the USL fit; p99 latency and TTFT versus load.",
            plot::throughput_latency(&report, &plots.join("throughput_latency.svg")),
        ),
        (
            "latency_log.svg",
            "P50 and P99 latency and TTFT versus load, log scale.",
            plot::latency_log(&report, &plots.join("latency_log.svg")),
        ),
        (
            "bottlenecks.svg",
            "Bottleneck scores at every level, under throughput on the same load axis.",
            plot::bottlenecks(&report, &plots.join("bottlenecks.svg")),
        ),
        (
            "spectrum.svg",
            "Latency percentile spectrum at the level of maximum throughput (only percentiles its sample count bounds).",
            plot::spectrum(
                &spectrum_points,
                &spectrum_title,
                &plots.join("spectrum.svg"),
            ),
        ),
    ];
    for (name, caption, result) in drawn {
        match result {
            Ok(()) => {
                if let Ok(svg) = std::fs::read_to_string(plots.join(name)) {
                    svgs.push((caption, svg));
                }
            }
            Err(e) => eprintln!("analyzer: warning: {name} not drawn: {e}"),
        }
    }
    let energy = energy_per_level(&samples, &windows, &report.stages);
    write(
        out.join("report.html"),
        aifb_analyzer::html::render(&report, manifest.as_ref(), &svgs, &energy),
    )?;
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

fn knee(
    input: &Path,
    curve: CurveArg,
    direction: DirectionArg,
    sensitivity: f64,
    polynomial: Option<usize>,
    online: bool,
    format: Format,
) -> Result<(), Failure> {
    use aifb_analyzer::knee::{Curve, Direction, Params, Smoothing};
    let (x, y) = aifb_analyzer::table::read_xy(input).map_err(Failure::input)?;
    let params = Params {
        sensitivity,
        curve: match curve {
            CurveArg::Concave => Curve::Concave,
            CurveArg::Convex => Curve::Convex,
        },
        direction: match direction {
            DirectionArg::Increasing => Direction::Increasing,
            DirectionArg::Decreasing => Direction::Decreasing,
        },
        smoothing: polynomial.map_or(Smoothing::Interp1d, Smoothing::Polynomial),
        online,
    };
    let found = aifb_analyzer::knee::find(&x, &y, &params);
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "knee": found.knee.map(|k| k.x),
                "knee_y": found.knee.map(|k| k.y),
                "norm_knee": found.knee.map(|k| k.norm_x),
                "all_knees": found.all,
            });
            println!("{v}");
        }
        Format::Text => match found.knee {
            Some(k) => println!("knee at x = {} (y = {})", k.x, k.y),
            None => println!("no knee"),
        },
    }
    Ok(())
}

fn usl(input: &Path, format: Format) -> Result<(), Failure> {
    let (n, x) = aifb_analyzer::table::read_xy(input).map_err(Failure::input)?;
    let fit = aifb_analyzer::usl::fit(&n, &x)
        .map_err(|e| Failure::input(format!("{}: {e}", input.display())))?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&fit).map_err(|e| Failure::check(e.to_string()))?
        ),
        Format::Text => {
            let m = &fit.model;
            let pm = |se: Option<f64>| se.map_or(String::new(), |s| format!(" ± {s:.3e}"));
            println!(
                "sigma (contention)  {:.6}{}",
                m.sigma,
                pm(fit.se.map(|s| s.sigma))
            );
            println!(
                "kappa (coherency)   {:.6e}{}",
                m.kappa,
                pm(fit.se.map(|s| s.kappa))
            );
            println!(
                "lambda (per worker) {:.4}{}",
                m.lambda,
                pm(fit.se.map(|s| s.lambda))
            );
            match (fit.peak_concurrency, fit.peak_throughput) {
                (Some(n), Some(x)) => println!("peak: {x:.4} at N = {n:.2}"),
                (None, Some(x)) => println!("no peak (kappa = 0); limit {x:.4}"),
                _ => println!("no peak and no limit (sigma = kappa = 0)"),
            }
            println!(
                "R² = {:.4}, residual SE = {:.4}{}",
                fit.r_squared,
                fit.residual_se,
                if fit.good { "" } else { "  (poor fit)" }
            );
        }
    }
    Ok(())
}

/// Streams a run (a requests.parquet file or a run directory) into the gate's digest.
fn digest(path: &Path) -> Result<aifb_analyzer::regress::Digest, Failure> {
    let file = if path.is_dir() {
        RunDir::new(path).requests()
    } else {
        path.to_path_buf()
    };
    aifb_analyzer::regress::Digest::from_file(&file).map_err(Failure::input)
}

/// Reads a run for the gate: its rows and the manifest from the Parquet footer.
fn load_run(path: &Path) -> Result<(Vec<aifb_core::requests::RequestRow>, Manifest), Failure> {
    let file = if path.is_dir() {
        RunDir::new(path).requests()
    } else {
        path.to_path_buf()
    };
    let read = requests::read(&file).map_err(Failure::input)?;
    let manifest = match &read.manifest {
        Some(json) => serde_json::from_str::<Manifest>(json).map_err(|e| {
            Failure::input(format!(
                "{}: footer aifb.run is not a run manifest: {e}",
                file.display()
            ))
        })?,
        None => {
            return Err(Failure::input(format!(
                "{}: no run manifest in the footer (aifb.run)",
                file.display()
            )));
        }
    };
    if manifest.stages.is_empty() {
        return Err(Failure::input(format!(
            "{}: the manifest lists no stage",
            file.display()
        )));
    }
    Ok((read.rows, manifest))
}

fn tolerances(
    flags: (Option<f64>, Option<f64>, Option<f64>),
    recipe: Option<&Path>,
) -> Result<aifb_analyzer::regress::Tolerances, Failure> {
    let mut tol = aifb_analyzer::regress::Tolerances::default();
    if let Some(path) = recipe {
        let r = Recipe::load(path).map_err(|e| Failure::input(e.join("; ")))?;
        tol.p99 = r.analysis.regress.p99_latency;
        tol.throughput = r.analysis.regress.throughput;
        tol.success_points = r.analysis.regress.success_rate_points;
    }
    for (flag, v) in [
        ("--p99-tolerance", flags.0),
        ("--throughput-tolerance", flags.1),
        ("--success-points", flags.2),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Failure::input(format!("{flag} {v}: must be a number >= 0")));
        }
    }
    tol.p99 = flags.0.unwrap_or(tol.p99);
    tol.throughput = flags.1.unwrap_or(tol.throughput);
    tol.success_points = flags.2.unwrap_or(tol.success_points);
    Ok(tol)
}

fn calibrate_runs(
    paths: &[PathBuf],
    flags: (Option<f64>, Option<f64>, Option<f64>),
    recipe: Option<&Path>,
    seed: u64,
) -> Result<(), Failure> {
    use aifb_analyzer::regress::calibrate;
    let tol = tolerances(flags, recipe)?;
    let runs: Vec<_> = paths.iter().map(|p| digest(p)).collect::<Result<_, _>>()?;
    let c = calibrate(&runs, tol, seed);
    println!(
        "A/A calibration: {} pairs, {} with a false REGRESSED ({:.1} %); {} of {} gated findings",
        c.pairs,
        c.false_alarm_pairs,
        c.pair_rate * 100.0,
        c.false_alarm_findings,
        c.findings
    );
    if c.pair_rate > 0.05 {
        return Err(Failure::check(format!(
            "false-alarm rate {:.1} % exceeds 5 %: widen the tolerances or measure longer",
            c.pair_rate * 100.0
        )));
    }
    Ok(())
}

fn regress(
    runs: &[PathBuf],
    format: RegressFormat,
    flags: (Option<f64>, Option<f64>, Option<f64>),
    recipe: Option<&Path>,
    fail_on_inconclusive: bool,
    seed: u64,
) -> Result<(), Failure> {
    use aifb_analyzer::regress::{Verdict, compare};
    let tol = tolerances(flags, recipe)?;
    let [base, new] = runs else {
        return Err(Failure::input(format!(
            "regress compares two runs, got {} (use --calibrate for more)",
            runs.len()
        )));
    };
    let cmp = compare(&digest(base)?, &digest(new)?, tol, seed);
    let overall = cmp.overall();
    match format {
        RegressFormat::Json => {
            let v = serde_json::json!({"overall": overall, "comparison": cmp});
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| Failure::check(e.to_string()))?
            );
        }
        RegressFormat::Md => print!("{}", regress_markdown(&cmp, overall)),
        RegressFormat::Junit => print!("{}", regress_junit(&cmp)),
    }
    if let Some(why) = &cmp.not_comparable {
        return Err(Failure {
            code: exit::NOT_COMPARABLE,
            message: format!("not comparable: {why}"),
        });
    }
    match overall {
        Verdict::Regressed => {
            let n = cmp
                .findings
                .iter()
                .filter(|f| f.verdict == Verdict::Regressed)
                .count();
            Err(Failure::check(format!("regressed: {n} finding(s)")))
        }
        Verdict::Inconclusive if fail_on_inconclusive => Err(Failure {
            code: exit::INCONCLUSIVE,
            message: "inconclusive: more samples needed".into(),
        }),
        _ => Ok(()),
    }
}

fn regress_markdown(
    cmp: &aifb_analyzer::regress::Comparison,
    overall: aifb_analyzer::regress::Verdict,
) -> String {
    let mut md = String::from("# aifb regression gate\n\n");
    if let Some(why) = &cmp.not_comparable {
        md.push_str(&format!("**NOT COMPARABLE**: {why}\n"));
        return md;
    }
    md.push_str(&format!(
        "**Verdict: {}**\n\n",
        serde_json::to_value(overall)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    ));
    for w in &cmp.warnings {
        md.push_str(&format!("- warning: {w}\n"));
    }
    md.push_str("\n| level | metric | base | new | new/base | 95 % interval | verdict | why |\n|---:|---|---:|---:|---:|---|---|---|\n");
    for f in &cmp.findings {
        let ci = f
            .ci95
            .map_or(String::new(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]"));
        let verdict = serde_json::to_value(f.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:.3} | {ci} | {verdict} | {} |\n",
            aifb_analyzer::report::fmt_level(f.level),
            f.metric,
            f.base,
            f.new,
            f.ratio,
            f.reason
        ));
    }
    let significant: Vec<_> = cmp.ungated.iter().filter(|o| o.significant).collect();
    if !significant.is_empty() {
        md.push_str(
            "\nNot gated, but changed (Benjamini–Hochberg q ≤ 0.05 over every ungated metric):\n\n",
        );
        for o in significant {
            md.push_str(&format!(
                "- level {} {}: {:.4} → {:.4} ({:+.1} %, q = {:.3})\n",
                aifb_analyzer::report::fmt_level(o.level),
                o.metric,
                o.base,
                o.new,
                (o.ratio - 1.0) * 100.0,
                o.q_value
            ));
        }
    }
    md
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn regress_junit(cmp: &aifb_analyzer::regress::Comparison) -> String {
    use aifb_analyzer::regress::Verdict;
    let failures = cmp
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::Regressed)
        .count()
        + usize::from(cmp.not_comparable.is_some());
    let tests = cmp.findings.len().max(1);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"aifb regress\" tests=\"{tests}\" failures=\"{failures}\">\n"
    );
    if let Some(why) = &cmp.not_comparable {
        x.push_str(&format!(
            "  <testcase name=\"comparability\"><failure message=\"{}\"/></testcase>\n",
            xml_escape(why)
        ));
    }
    for f in &cmp.findings {
        let name = xml_escape(&format!(
            "level {} {}",
            aifb_analyzer::report::fmt_level(f.level),
            f.metric
        ));
        match f.verdict {
            Verdict::Regressed => x.push_str(&format!(
                "  <testcase name=\"{name}\"><failure message=\"{}\"/></testcase>\n",
                xml_escape(&f.reason)
            )),
            Verdict::Inconclusive => x.push_str(&format!(
                "  <testcase name=\"{name}\"><skipped message=\"{}\"/></testcase>\n",
                xml_escape(&f.reason)
            )),
            _ => x.push_str(&format!("  <testcase name=\"{name}\"/>\n")),
        }
    }
    x.push_str("</testsuite>\n");
    x
}

/// Reads one metric from a level's summary.
type StageMetric = fn(&stages::StageSummary) -> Option<f64>;

fn compare(runs: &[PathBuf], out: &Path) -> Result<(), Failure> {
    use aifb_analyzer::plot::{Line, palette, throughput_and_p99};
    use aifb_analyzer::report::fmt_level;
    let mut loaded = Vec::new();
    for path in runs {
        let (rows, manifest) = load_run(path)?;
        let summaries = stages::summarize(&rows, &manifest.stages);
        loaded.push((manifest, summaries));
    }
    let unit = if loaded[0].0.pattern == "open" {
        "req/s"
    } else {
        "users"
    };
    if loaded.iter().any(|(m, _)| m.pattern != loaded[0].0.pattern) {
        eprintln!("analyzer: warning: the runs mix closed and open loops; their load axes differ");
    }
    let mut levels: Vec<f64> = loaded
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.level))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let name = |m: &Manifest| format!("{} ({})", m.name, m.id);
    let mut md = String::from("# aifb comparison\n\n");
    for (i, (m, _)) in loaded.iter().enumerate() {
        md.push_str(&format!(
            "{}. `{}` {} {}, {}\n",
            i + 1,
            m.id,
            m.name,
            m.started_at,
            m.environment.cpu
        ));
    }
    let metrics: [(&str, StageMetric); 3] = [
        ("throughput (req/s)", |s| Some(s.throughput_rps)),
        ("p99 latency (ms)", |s| {
            s.latency.and_then(|q| q.p99).map(|v| v * 1e3)
        }),
        ("p99 TTFT (ms)", |s| {
            s.ttft.and_then(|q| q.p99).map(|v| v * 1e3)
        }),
    ];
    for (title, get) in &metrics {
        md.push_str(&format!("\n## {title}\n\n| {unit} |"));
        for i in 0..loaded.len() {
            md.push_str(&format!(" run {} |", i + 1));
        }
        md.push_str("\n|---:|");
        md.push_str(&"---:|".repeat(loaded.len()));
        md.push('\n');
        for level in &levels {
            md.push_str(&format!("| {} |", fmt_level(*level)));
            for (_, summaries) in &loaded {
                let cell = summaries
                    .iter()
                    .find(|s| s.level == *level)
                    .and_then(get)
                    .map_or("n/a".to_string(), |v| format!("{v:.2}"));
                md.push_str(&format!(" {cell} |"));
            }
            md.push('\n');
        }
    }
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::input(format!("--out {}: {e}", out.display())))?;
    let top: Vec<Line> = loaded
        .iter()
        .enumerate()
        .map(|(i, (m, s))| Line {
            label: name(m),
            points: s.iter().map(|x| (x.level, x.throughput_rps)).collect(),
            color: palette(i),
        })
        .collect();
    let bottom: Vec<Line> = loaded
        .iter()
        .enumerate()
        .map(|(i, (m, s))| Line {
            label: name(m),
            points: s
                .iter()
                .filter_map(|x| x.latency.map(|q| (x.level, q.p99_estimate)))
                .collect(),
            color: palette(i),
        })
        .collect();
    let svg = out.join("compare.svg");
    if let Err(e) = throughput_and_p99(&top, &bottom, unit, &svg) {
        eprintln!("analyzer: warning: plot not drawn: {e}");
    }
    md.push_str("\n![throughput and latency](compare.svg)\n");
    let path = out.join("compare.md");
    std::fs::write(&path, &md).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
    print!("{md}");
    Ok(())
}

/// Joules per request and per token at each level, from the GPUs' energy counters.
fn energy_per_level(
    samples: &[aifb_core::metrics::MetricSample],
    windows: &[aifb_core::run::StageWindow],
    stages: &[stages::StageSummary],
) -> Vec<aifb_analyzer::html::Energy> {
    let idx = aifb_analyzer::bottleneck::Samples::new(samples);
    let energy = idx.series("exporter", "aifb_gpu_energy_joules_total", &[]);
    if energy.is_empty() {
        return Vec::new();
    }
    windows
        .iter()
        .zip(stages)
        .filter_map(|(w, s)| {
            let watts =
                energy.rate(w.measure_start_ns / 1_000_000, w.measure_end_ns / 1_000_000)?;
            (s.throughput_rps > 0.0).then(|| aifb_analyzer::html::Energy {
                level: s.level,
                joules_per_request: watts / s.throughput_rps,
                joules_per_token: (s.output_tokens_per_s > 0.0)
                    .then(|| watts / s.output_tokens_per_s),
            })
        })
        .collect()
}

fn compat(run: &Path, peer: &str, format: Format) -> Result<(), Failure> {
    use aifb_analyzer::compat::{self, Peer};
    let peer =
        Peer::parse(peer).ok_or_else(|| Failure::input(format!("--as {peer}: unknown peer")))?;
    let file = if run.is_dir() {
        RunDir::new(run).requests()
    } else {
        run.to_path_buf()
    };
    let rows = aifb_core::requests::read(&file)
        .map_err(Failure::input)?
        .rows;
    let chunk_file = file.with_file_name("chunks.parquet");
    let chunks = if chunk_file.is_file() {
        aifb_core::chunks::read(&chunk_file).map_err(Failure::input)?
    } else {
        Vec::new()
    };
    let stages = compat::run(peer, &rows, &chunks);
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&stages).map_err(|e| Failure::check(e.to_string()))?
        ),
        Format::Text => {
            // The numbers each tool prints first.
            let keys: &[(&str, &str)] = match peer {
                Peer::Vllm => &[
                    ("request_throughput", "req/s"),
                    ("output_throughput", "out tok/s"),
                    ("median_ttft_ms", "TTFT p50 ms"),
                    ("p99_ttft_ms", "TTFT p99 ms"),
                    ("mean_tpot_ms", "TPOT mean ms"),
                    ("p99_itl_ms", "ITL p99 ms"),
                ],
                Peer::Guidellm => &[
                    ("requests_per_second", "req/s"),
                    ("time_to_first_token_ms.median", "TTFT p50 ms"),
                    ("time_to_first_token_ms.p99", "TTFT p99 ms"),
                    ("inter_token_latency_ms.mean", "ITL mean ms"),
                    ("request_latency.median", "latency p50 s"),
                    ("output_tokens_per_second.mean", "out tok/s/req"),
                ],
                Peer::Aiperf => &[
                    ("request_throughput", "req/s"),
                    ("output_token_throughput", "out tok/s"),
                    ("time_to_first_token.p50", "TTFT p50 ms"),
                    ("time_to_first_token.p99", "TTFT p99 ms"),
                    ("inter_token_latency.mean", "ITL mean ms"),
                    ("output_token_throughput_per_user.mean", "tok/s/user"),
                ],
            };
            print!("{:>5} {:>7}", "stage", "level");
            for (_, h) in keys {
                print!(" {h:>14}");
            }
            println!();
            for s in stages.as_array().into_iter().flatten() {
                print!(
                    "{:>5} {:>7}",
                    s["stage"],
                    s["level"].as_f64().map_or("-".into(), |l| format!("{l}"))
                );
                for (k, _) in keys {
                    let v = k.split('.').fold(&s["metrics"], |v, part| {
                        if part == "p50" {
                            &v["median"]
                        } else {
                            &v[part]
                        }
                    });
                    print!(
                        " {:>14}",
                        v.as_f64().map_or("n/a".into(), |x| format!("{x:.3}"))
                    );
                }
                println!();
            }
        }
    }
    Ok(())
}

fn summary(run: &Path, format: Format) -> Result<(), Failure> {
    let file = if run.is_dir() {
        RunDir::new(run).requests()
    } else {
        run.to_path_buf()
    };
    let (levels, _) = aifb_analyzer::summary::summarize(&file).map_err(Failure::input)?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&levels).map_err(|e| Failure::check(e.to_string()))?
        ),
        Format::Text => {
            println!(
                "stage  level  requests  measured  failed  throughput/s     p50 ms     p90 ms     p99 ms   p99.9 ms"
            );
            for l in &levels {
                let lat = |i: usize| {
                    l.latency_s
                        .map_or("n/a".to_string(), |q| format!("{:.3}", q[i] * 1e3))
                };
                println!(
                    "{:>5} {:>6} {:>9} {:>9} {:>7} {:>13} {:>10} {:>10} {:>10} {:>10}",
                    l.stage,
                    aifb_analyzer::report::fmt_level(l.level),
                    l.requests,
                    l.measured,
                    l.failed,
                    l.throughput_rps
                        .map_or("n/a".to_string(), |t| format!("{t:.2}")),
                    lat(0),
                    lat(1),
                    lat(2),
                    lat(3)
                );
            }
        }
    }
    Ok(())
}
