//! `aifb services`, `aifb cancel` and `aifb clean`: the discovery records of runs and
//! what can be done with them.

use std::path::Path;

use aifb_core::discovery::{self, Record, State};
use aifb_core::exit::Failure;
use aifb_core::run::{RunDir, RunStatus};

/// Every record under the state folder of `root`, with the run id it is filed under.
fn records(root: &Path) -> Vec<Record> {
    let dir = crate::local::state_dir(root).join("discover");
    let Ok(runs) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = runs
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .flat_map(|run| discovery::read_run(&crate::local::state_dir(root), &run))
        .collect();
    out.sort_by(|a, b| (&a.run_id, &a.role).cmp(&(&b.run_id, &b.role)));
    out
}

/// What a record says, corrected by reality: a `ready` or `starting` record whose job
/// or process is gone is `stale`.
pub fn effective_state(r: &Record) -> &'static str {
    let said = match r.state {
        State::Starting => "starting",
        State::Ready => "ready",
        State::Stopped => "stopped",
        State::Failed => "failed",
    };
    if matches!(r.state, State::Starting | State::Ready) && discovery::owner_alive(r) == Some(false)
    {
        "stale"
    } else {
        said
    }
}

/// `aifb services [RUN]`.
pub fn list(root: &Path, run: Option<&str>) -> Result<(), Failure> {
    let all: Vec<Record> = records(root)
        .into_iter()
        .filter(|r| run.is_none_or(|id| r.run_id == id))
        .collect();
    if all.is_empty() {
        println!(
            "no discovery records in {}",
            crate::local::state_dir(root).join("discover").display()
        );
        return Ok(());
    }
    println!(
        "{:<26} {:<12} {:<10} {:<10} {:<22} {:<9} READY AT",
        "RUN", "ROLE", "SERVICE", "JOB", "ADDRESS", "STATE"
    );
    for r in &all {
        println!(
            "{:<26} {:<12} {:<10} {:<10} {:<22} {:<9} {}",
            r.run_id,
            r.role,
            r.service,
            r.job_id,
            r.addr,
            effective_state(r),
            r.ready_at.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `aifb cancel RUN`: SLURM runs get USR1 in their batch shell (the trap drains the
/// loadgen); local runs get SIGTERM in their `aifb run` process. Both end CANCELLED with
/// every finished request kept.
pub fn cancel(root: &Path, run: &str) -> Result<(), Failure> {
    let (path, m) = crate::runs::find(root, Some(run))?;
    let dir = RunDir::new(&path);
    if m.status.is_final() {
        return Err(Failure::input(format!(
            "{}: the run has already ended ({})",
            m.id,
            format!("{:?}", m.status).to_uppercase()
        )));
    }
    if m.executor == "slurm" {
        crate::slurm::cancel(&dir, &m)?;
        eprintln!(
            "aifb: asked run {} to stop{}",
            m.id,
            if m.status == RunStatus::Pending {
                " (still pending: its job is cancelled)"
            } else {
                "; it drains and ends CANCELLED"
            }
        );
        return Ok(());
    }
    let pid = m
        .processes
        .iter()
        .find(|p| p.role == "aifb")
        .map(|p| p.pid)
        .ok_or_else(|| Failure::input(format!("{}: no aifb process recorded", m.id)))?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Failure::input(format!(
            "{}: its aifb process {pid} is gone (the run is stale)",
            m.id
        )));
    }
    // SAFETY: kill(2) with a PID read from the run's manifest, checked to exist.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    if rc != 0 {
        return Err(Failure::check(format!(
            "cannot signal aifb process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    eprintln!(
        "aifb: asked run {} to stop; it drains and ends CANCELLED",
        m.id
    );
    Ok(())
}

/// `aifb clean`: removes records (and their file_sd targets) that are stopped, failed or
/// stale; records of live components stay.
pub fn clean(root: &Path, dry_run: bool) -> Result<(), Failure> {
    let state_dir = crate::local::state_dir(root);
    let mut removed = 0;
    for r in records(root) {
        if matches!(effective_state(&r), "ready" | "starting") {
            continue;
        }
        let path = r.path(&state_dir);
        let targets = RunDir::new(root.join(&r.run_id))
            .root
            .join("prometheus")
            .join("targets");
        if dry_run {
            println!("would remove {}", path.display());
        } else {
            std::fs::remove_file(&path)
                .map_err(|e| Failure::check(format!("{}: {e}", path.display())))?;
            r.remove_file_sd(&targets);
            println!("removed {}", path.display());
        }
        removed += 1;
    }
    // Empty run folders of the state directory go too.
    if !dry_run && let Ok(dirs) = std::fs::read_dir(state_dir.join("discover")) {
        for d in dirs.flatten() {
            let _ = std::fs::remove_dir(d.path());
        }
    }
    eprintln!(
        "aifb: {removed} record(s) {}",
        if dry_run { "to remove" } else { "removed" }
    );
    Ok(())
}
