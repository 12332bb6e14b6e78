//! Helpers for the end-to-end tests: locate the built binaries, run them, inspect processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the workspace's binaries (`target/<profile>`), found from the
/// test executable's own path (`target/<profile>/deps/e2e-…`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

/// Path of a workspace binary; panics with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --bins` before the end-to-end tests",
        p.display()
    );
    p
}

/// Runs `aifb` with `args` in `cwd`.
pub fn aifb(cwd: &Path, args: &[&str]) -> Output {
    Command::new(bin("aifb"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("aifb runs")
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// The single run directory under `runs_root`.
pub fn only_run(runs_root: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs_root)
        .expect("runs folder")
        .map(|e| e.expect("entry").path())
        // `.state` holds discovery records, not a run.
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "expected one run in {}", runs_root.display());
    dirs.remove(0)
}

/// A short closed-loop recipe on the simulator, crossing saturation at `max_num_seqs` = 8.
pub fn short_demo(levels: &str, measure: &str) -> String {
    format!(
        "name: short-demo
service:
  kind: simulator
  simulator:
    max_num_seqs: 8
    decode_step_base: 8ms
    decode_step_per_seq: 250us
    scheduler_per_waiting: 150us
    prefill_per_token: 20us
workload:
  pattern: closed
  levels: {levels}
  warmup: 1s
  measure: {measure}
  cooldown: 0s
  timeout: 20s
  request:
    prompt_tokens: 64
    max_tokens: 32
"
    )
}

/// A plain HTTP/1.0 GET of `url` (`http://host:port/path`); returns the body.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {url}: {head}"
    );
    body.to_string()
}

/// The `report/report.json` of a run directory.
pub fn report_json(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("report/report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `ready` every 50 ms until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not ready within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A server started by a test: SIGTERM, then SIGKILL after 10 s, when dropped.
pub struct Server(pub std::process::Child);

impl Server {
    /// Starts `program args`, output discarded (or kept in `log` when given).
    pub fn start(
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: Option<&Path>,
    ) -> Server {
        let mut cmd = Command::new(program.as_ref());
        cmd.args(args).stdin(std::process::Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).expect("log file");
                cmd.stdout(f.try_clone().expect("log file")).stderr(f);
            }
            None => {
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        Server(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{:?}: {e}", program.as_ref())),
        )
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn crash(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a PID this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace root (parent of `tests/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The cache of installed test tools (`$AIFB_CACHE`, else `~/.cache/aifb`).
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("AIFB_CACHE") {
        return PathBuf::from(c);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("aifb")
}

/// Runs `aifb run RECIPE_TEXT` in a fresh runs folder under `dir`; returns the output and
/// the run directory (when one was made).
pub fn run_recipe(dir: &Path, name: &str, text: &str) -> (Output, Option<PathBuf>) {
    let recipe = dir.join(format!("{name}.yaml"));
    std::fs::write(&recipe, text).expect("recipe written");
    let runs = dir.join(format!("runs-{name}"));
    let out = aifb(
        dir,
        &[
            "run",
            recipe.to_str().expect("path"),
            "--out",
            runs.to_str().expect("path"),
        ],
    );
    let run = std::fs::read_dir(&runs).ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
    });
    (out, run)
}

/// The rows of a run's requests.parquet.
pub fn request_rows(run: &Path) -> Vec<aifb_core::requests::RequestRow> {
    aifb_core::requests::read(&run.join("requests.parquet"))
        .expect("requests.parquet")
        .rows
}

/// Runs `aifb run` on the recipe `text` (written as `NAME.yaml` in `dir`), requires
/// success, and returns the run directory.
pub fn run_ok(dir: &Path, name: &str, text: &str) -> PathBuf {
    let (out, run) = run_recipe(dir, name, text);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run.expect("a run directory")
}

/// The `summary.json` of a run directory.
pub fn summary_json(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}
