//! Helpers shared by the exporter's integration tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the exporter on a free loopback port (GPU collector off) with `args`; returns it
/// and the URL it printed once ready (`http(s)://127.0.0.1:PORT/metrics`).
pub fn start_exporter(args: &[String]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_exporter"))
        .args(["--web.listen-address", "127.0.0.1:0", "--no-collector.gpu"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (
        Running(child),
        line.trim().trim_start_matches("listening on ").to_string(),
    )
}
