//! `aifb list` and `aifb status`: what the run directories under a runs folder say, read
//! from their manifests (`run.json`) and summaries; no service is contacted.

use std::path::{Path, PathBuf};

use aifb_core::exit::Failure;
use aifb_core::run::{Manifest, RunDir};

/// The runs under `root`, oldest first (run ids sort by time).
pub fn runs(root: &Path) -> Result<Vec<(PathBuf, Manifest)>, Failure> {
    let entries =
        std::fs::read_dir(root).map_err(|e| Failure::input(format!("{}: {e}", root.display())))?;
    let mut out: Vec<(PathBuf, Manifest)> = entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let m = Manifest::read(&RunDir::new(&p).manifest()).ok()?;
            Some((p, m))
        })
        .collect();
    out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    Ok(out)
}

/// The state shown for a run: its recorded status, or `STALE` for a run recorded as
/// still going whose processes are all gone (killed without a chance to say so).
pub fn state(m: &Manifest) -> String {
    if m.status.is_final() {
        return format!("{:?}", m.status).to_uppercase();
    }
    let (known, alive) = if m.executor == "slurm" {
        let job = m.job_ids.first();
        (
            job.is_some(),
            job.is_some_and(|j| crate::slurm::queue_state(j).is_some()),
        )
    } else {
        (
            !m.processes.is_empty(),
            m.processes
                .iter()
                .any(|p| std::path::Path::new(&format!("/proc/{}", p.pid)).exists()),
        )
    };
    if known && !alive {
        "STALE".into()
    } else {
        format!("{:?}", m.status).to_uppercase()
    }
}

/// `aifb list`: one line per run.
pub fn list(root: &Path) -> Result<(), Failure> {
    let runs = runs(root)?;
    if runs.is_empty() {
        println!("no runs in {}", root.display());
        return Ok(());
    }
    println!(
        "{:<26} {:<10} {:<20} {:>6}  STARTED",
        "RUN", "STATE", "NAME", "STAGES"
    );
    for (_, m) in &runs {
        println!(
            "{:<26} {:<10} {:<20} {:>6}  {}",
            m.id,
            state(m),
            m.name,
            m.stages.len(),
            m.started_at
        );
    }
    Ok(())
}

/// A run by id or directory (the newest under `root` without one).
pub fn find(root: &Path, run: Option<&str>) -> Result<(PathBuf, Manifest), Failure> {
    Ok(match run {
        Some(r) if Path::new(r).join("run.json").is_file() => {
            let dir = PathBuf::from(r);
            let m = Manifest::read(&RunDir::new(&dir).manifest()).map_err(Failure::input)?;
            (dir, m)
        }
        Some(r) => runs(root)?
            .into_iter()
            .find(|(_, m)| m.id == r)
            .ok_or_else(|| Failure::input(format!("{r}: no such run in {}", root.display())))?,
        None => runs(root)?
            .pop()
            .ok_or_else(|| Failure::input(format!("no runs in {}", root.display())))?,
    })
}

/// `aifb status [RUN]`: one run in detail (the newest without RUN).
pub fn status(root: &Path, run: Option<&str>) -> Result<(), Failure> {
    let (dir, m) = find(root, run)?;
    println!("run      {}  ({})", m.id, m.name);
    println!("state    {}", state(&m));
    println!("dir      {}", dir.display());
    println!("executor {}  nodes {}", m.executor, m.nodes.join(","));
    if !m.job_ids.is_empty() {
        println!("jobs     {}", m.job_ids.join(","));
    }
    if let Some(t) = m.time_to_ready_s {
        println!("ready    after {t:.1}s");
    }
    println!("started  {}", m.started_at);
    if let Some(f) = &m.finished_at {
        println!("finished {f}");
    }
    if let Some(e) = &m.error {
        println!("error    {e}");
    }
    let summary: Option<serde_json::Value> = std::fs::read_to_string(RunDir::new(&dir).summary())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let stages = summary
        .as_ref()
        .and_then(|s| s["stages"].as_array().cloned())
        .unwrap_or_default();
    if stages.is_empty() {
        println!("stages   {} recorded, no summary yet", m.stages.len());
        return Ok(());
    }
    println!();
    println!(
        "{:>5} {:>8} {:>12} {:>10} {:>8}  VALID",
        "STAGE", "LEVEL", "THROUGHPUT/s", "P99 ms", "ERRORS"
    );
    for s in &stages {
        let errors: u64 = s["errors"]
            .as_object()
            .map_or(0, |e| e.values().filter_map(|v| v.as_u64()).sum());
        let p99 = s["latency_s"]["p99"]
            .as_f64()
            .map_or("n/a".to_string(), |v| format!("{:.1}", v * 1e3));
        println!(
            "{:>5} {:>8} {:>12.2} {:>10} {:>8}  {}",
            s["stage"].as_u64().unwrap_or(0),
            s["level"]
                .as_f64()
                .map_or("?".to_string(), |l| format!("{l}")),
            s["throughput_rps"].as_f64().unwrap_or(0.0),
            p99,
            errors,
            if s["valid"] == false { "no" } else { "yes" }
        );
    }
    Ok(())
}
