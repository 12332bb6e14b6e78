//! `analyzer regress` on synthetic runs written as real requests.parquet files.

use std::path::Path;
use std::process::Command;

use aifb_core::requests::{RequestRecord, RequestWriter};
use aifb_core::run::{Environment, Manifest, RunStatus, StageWindow};

const SECOND: i64 = 1_000_000_000;

/// A deterministic uniform stream in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Shape {
    requests: usize,
    latency_scale: f64,
    seed: u64,
    workload: &'static str,
    error_every: Option<(usize, &'static str)>,
}

fn write_run(path: &Path, s: &Shape) {
    let stage = StageWindow {
        stage: 0,
        concurrency: Some(8),
        rate: None,
        start_ns: 0,
        measure_start_ns: SECOND,
        measure_end_ns: 11 * SECOND,
        end_ns: 12 * SECOND,
        calibration: None,
    };
    let manifest = Manifest {
        id: "BM-20260101-000000-0001".into(),
        name: "synthetic".into(),
        aifb_version: aifb_core::VERSION.into(),
        status: RunStatus::Done,
        executor: "local".into(),
        job_ids: vec![],
        nodes: vec!["n1".into()],
        started_at: "2026-01-01T00:00:00.000Z".into(),
        finished_at: None,
        environment: Environment {
            cpu: "cpu".into(),
            cpus: 2,
            ..Environment::default()
        },
        processes: vec![],
        pattern: "closed".into(),
        workload_hash: Some(aifb_core::run::stable_hash(s.workload.as_bytes())),
        stages: vec![stage],
        error: None,
        time_to_ready_s: None,
    };
    let mut w = RequestWriter::create(path).unwrap();
    let mut rng = Lcg(s.seed);
    for i in 0..s.requests {
        let sent = SECOND + (i as i64 * 10 * SECOND) / s.requests as i64;
        let latency = (0.100 + 0.050 * rng.next()) * s.latency_scale;
        let end = sent + (latency * 1e9) as i64;
        let failed = s.error_every.filter(|(k, _)| i % k == 0);
        w.push(RequestRecord {
            stage: 0,
            concurrency: Some(8),
            phase: "measure",
            client: "local".into(),
            op: "chat",
            t_intended: sent,
            t_sent: sent,
            t_first_token: Some(sent + (latency * 0.1e9) as i64),
            t_end: end,
            ok: failed.is_none(),
            error: failed.map(|(_, class)| class),
            request_id: format!("r{i}"),
            ..RequestRecord::default()
        })
        .unwrap();
    }
    w.finish(Some(&serde_json::to_string(&manifest).unwrap()))
        .unwrap();
}

fn regress(base: &Shape, new: &Shape, extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (b, n) = (
        dir.path().join("base.parquet"),
        dir.path().join("new.parquet"),
    );
    write_run(&b, base);
    write_run(&n, new);
    let out = Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .arg("regress")
        .arg(&b)
        .arg(&n)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shape(requests: usize, latency_scale: f64, seed: u64) -> Shape {
    Shape {
        requests,
        latency_scale,
        seed,
        workload: "w1",
        error_every: None,
    }
}

#[test]
fn same_build_twice_is_unchanged() {
    let (code, out, err) = regress(&shape(4000, 1.0, 1), &shape(4000, 1.0, 2), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("**Verdict: UNCHANGED**"), "{out}");
}

#[test]
fn slower_latency_is_a_regression() {
    let (code, out, err) = regress(
        &shape(4000, 1.0, 1),
        &shape(4000, 1.5, 2),
        &["--format", "json"],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["overall"], "REGRESSED");
    let p99 = v["comparison"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["metric"] == "p99_latency")
        .unwrap();
    assert_eq!(p99["verdict"], "REGRESSED");
    assert!(p99["ratio"].as_f64().unwrap() > 1.4);
    assert!(err.contains("analyzer: error: regressed"), "{err}");
    // A 60 % tolerance lets it pass.
    let (code, _, _) = regress(
        &shape(4000, 1.0, 1),
        &shape(4000, 1.5, 2),
        &["--p99-tolerance", "0.6"],
    );
    assert_eq!(code, Some(0));
}

#[test]
fn a_different_workload_is_not_comparable() {
    let other = Shape {
        workload: "w2",
        ..shape(4000, 1.0, 2)
    };
    let (code, out, err) = regress(&shape(4000, 1.0, 1), &other, &["--format", "junit"]);
    assert_eq!(code, Some(4), "{out}{err}");
    assert!(
        out.contains("<testcase name=\"comparability\"><failure"),
        "{out}"
    );
}

#[test]
fn too_few_samples_is_inconclusive() {
    let (code, out, err) = regress(
        &shape(40, 1.0, 1),
        &shape(40, 1.12, 2),
        &["--fail-on-inconclusive"],
    );
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.contains("INCONCLUSIVE") && out.contains("more samples needed"),
        "{out}"
    );
    let (code, _, _) = regress(&shape(40, 1.0, 1), &shape(40, 1.12, 2), &[]);
    assert_eq!(code, Some(0), "inconclusive fails only when asked to");
}

#[test]
fn a_new_error_class_is_a_hard_failure() {
    let broken = Shape {
        error_every: Some((500, "http_5xx")),
        ..shape(4000, 1.0, 2)
    };
    let (code, out, _) = regress(&shape(4000, 1.0, 1), &broken, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("new error class: http_5xx"), "{out}");
}

#[test]
fn foreign_input_exits_2_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"PAR1 not really").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .arg("regress")
        .arg(&junk)
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("analyzer: error:") && l.contains("junk.parquet")),
        "{err}"
    );
}

#[test]
fn compare_puts_runs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_run(&a, &shape(4000, 1.0, 1));
    write_run(&b, &shape(4000, 2.0, 2));
    let out_dir = dir.path().join("cmp");
    let out = Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join("compare.md")).unwrap();
    // One row per level with a column per run; the second run's P99 is twice the first's.
    let row = md
        .lines()
        .skip_while(|l| !l.starts_with("## p99 latency"))
        .find(|l| l.starts_with("| 8 |"))
        .unwrap();
    let cells: Vec<f64> = row
        .split('|')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    assert_eq!(cells.len(), 3, "{row}");
    assert!((cells[2] / cells[1] - 2.0).abs() < 0.01, "{row}");
    assert!(
        std::fs::read_to_string(out_dir.join("compare.svg"))
            .unwrap()
            .contains("<svg")
    );
}

#[test]
fn a_a_calibration_stays_under_five_percent() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..6u64)
        .map(|seed| {
            let p = dir.path().join(format!("run{seed}.parquet"));
            write_run(&p, &shape(4000, 1.0, 100 + seed));
            p
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .arg("regress")
        .arg("--calibrate")
        .args(&paths)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("15 pairs, 0 with a false REGRESSED"),
        "{text}"
    );
    // Two runs only, without --calibrate; three are refused.
    let out = Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .arg("regress")
        .args(&paths[..3])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ungated_medians_are_reported_with_false_discovery_control() {
    let (code, out, _) = regress(
        &shape(4000, 1.0, 1),
        &shape(4000, 1.5, 2),
        &["--format", "json", "--p99-tolerance", "0.6"],
    );
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ungated = v["comparison"]["ungated"].as_array().unwrap();
    let p50 = ungated
        .iter()
        .find(|o| o["metric"] == "p50_latency")
        .unwrap();
    assert_eq!(p50["significant"], true, "{p50}");
    assert!(p50["q_value"].as_f64().unwrap() <= 0.05);
    let (_, out, _) = regress(
        &shape(4000, 1.0, 1),
        &shape(4000, 1.0, 2),
        &["--format", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["comparison"]["ungated"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["significant"] == false),
        "{out}"
    );
}

#[test]
fn the_streaming_summary_agrees_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.parquet");
    write_run(&p, &shape(4000, 1.0, 9));
    let (levels, manifest) = aifb_analyzer::summary::summarize(&p).unwrap();
    let file = aifb_core::requests::read(&p).unwrap();
    let full = aifb_analyzer::stages::summarize(&file.rows, &manifest.unwrap().stages);
    assert_eq!(levels.len(), full.len());
    let (l, f) = (&levels[0], &full[0]);
    assert_eq!(
        (l.requests as usize, l.measured as usize, l.failed as usize),
        (f.requests, f.measured, f.failed)
    );
    assert_eq!(l.throughput_rps, Some(f.throughput_rps));
    let (stream, exact) = (l.latency_s.unwrap(), f.latency.unwrap());
    assert!(
        (stream[0] / exact.p50.unwrap() - 1.0).abs() < 0.002,
        "{stream:?} vs {exact:?}"
    );
    assert!(
        (stream[2] / exact.p99.unwrap() - 1.0).abs() < 0.002,
        "{stream:?} vs {exact:?}"
    );
}
