//! Child processes of a run: started with their output in `logs/`, tied to aifb's life
//! (they get SIGTERM if aifb dies), and stopped with SIGTERM, then SIGKILL after a grace
//! period.

use std::fs::File;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use aifb_core::run::ProcessRecord;
use tokio::process::{Child, Command};

/// A started process.
pub struct Proc {
    /// `service`, `exporter`, `loadgen`.
    pub role: String,
    /// The child.
    pub child: Child,
    /// What was started.
    pub record: ProcessRecord,
}

/// How the child's standard streams are connected.
pub enum Output {
    /// Both into `logs/<role>.log`.
    Log,
    /// Inherited from aifb (the terminal).
    Inherit,
}

/// Starts `argv` as `role`.
pub fn spawn(
    role: &str,
    argv: &[String],
    logs: &Path,
    output: Output,
    addr: Option<String>,
) -> Result<Proc, String> {
    spawn_with_env(role, argv, logs, output, addr, &[])
}

/// Starts `argv` as `role` with `envs` added to its environment.
pub fn spawn_with_env(
    role: &str,
    argv: &[String],
    logs: &Path,
    output: Output,
    addr: Option<String>,
    envs: &[(String, String)],
) -> Result<Proc, String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| format!("{role}: empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match output {
        Output::Log => {
            let path = logs.join(format!("{role}.log"));
            let out = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let err = out
                .try_clone()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            cmd.stdout(out).stderr(err);
        }
        Output::Inherit => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
    }
    // SAFETY: prctl is async-signal-safe; it asks the kernel to send SIGTERM to the child
    // when the thread that forked it (aifb's only runtime thread) exits, so no child
    // outlives aifb.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("{role}: cannot start {program}: {e}"))?;
    let pid = child.id().unwrap_or(0);
    Ok(Proc {
        role: role.to_string(),
        child,
        record: ProcessRecord {
            role: role.to_string(),
            pid,
            command: argv.to_vec(),
            addr,
        },
    })
}

/// Sends a signal to a child that is still running.
pub fn signal(p: &Proc, sig: i32) {
    if let Some(pid) = p.child.id() {
        // SAFETY: kill(2) on our own child's PID; the child has not been reaped (id() is Some).
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`. Returns its exit status.
pub async fn stop(p: &mut Proc, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = p.child.try_wait() {
        return Some(status);
    }
    signal(p, libc::SIGTERM);
    match tokio::time::timeout(grace, p.child.wait()).await {
        Ok(r) => r.ok(),
        Err(_) => {
            let _ = p.child.start_kill();
            p.child.wait().await.ok()
        }
    }
}

/// The last non-empty line of a log, for error messages.
pub fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(200).collect())
}
