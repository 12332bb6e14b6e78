//! End-to-end: `aifb run` drives the simulator, the exporter, the loadgen and the analyzer
//! as separate processes, and the run directory holds what the contracts promise.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use aifb_core::metrics;
use aifb_core::recipe::Recipe;
use aifb_core::requests;
use aifb_core::run::{Manifest, RunStatus};
use aifb_tests::{
    Server, aifb, alive, bin, free_port, http_get, only_run, report_json, run_ok, short_demo,
    summary_json, wait_until,
};
use std::time::Duration;

fn manifest(run: &Path) -> Manifest {
    Manifest::read(&run.join("run.json")).expect("run.json")
}

#[test]
fn short_demo_run_keeps_every_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let levels = [2u32, 4, 8, 16, 32];
    std::fs::write(
        tmp.path().join("demo.yaml"),
        short_demo("[2, 4, 8, 16, 32]", "3s"),
    )
    .unwrap();
    let out = aifb(tmp.path(), &["run", "demo.yaml", "--out", "runs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aifb run failed: {stderr}");
    let run = only_run(&tmp.path().join("runs"));
    let m = manifest(&run);
    assert_eq!(m.status, RunStatus::Done);
    assert!(aifb_core::run::is_run_id(&m.id), "{}", m.id);
    for p in &m.processes {
        assert!(!alive(p.pid), "{} (pid {}) still running", p.role, p.pid);
    }

    // Every stage is present, in the manifest and in the rows.
    let file = requests::read(&run.join("requests.parquet")).unwrap();
    let footer: Manifest =
        serde_json::from_str(file.manifest.as_deref().expect("footer aifb.run")).unwrap();
    assert_eq!(footer.id, m.id);
    let stages: BTreeSet<u32> = file.rows.iter().map(|r| r.stage).collect();
    assert_eq!(stages, (0..levels.len() as u32).collect());
    assert_eq!(m.stages.len(), levels.len());
    assert!(
        file.rows.iter().all(|r| r.ok),
        "no request should fail against the simulator"
    );
    assert!(
        file.rows
            .iter()
            .all(|r| r.output_tokens == Some(32) && r.t_first_token.is_some())
    );

    // Row count equals the loadgen's own counter at its last scrape.
    let samples = metrics::read(&run.join("metrics.parquet")).unwrap();
    let last_t = samples
        .iter()
        .filter(|s| s.source == "loadgen")
        .map(|s| s.t_ms)
        .max()
        .expect("loadgen samples");
    let counted: f64 = samples
        .iter()
        .filter(|s| {
            s.source == "loadgen" && s.t_ms == last_t && s.metric == "aifb_loadgen_requests_total"
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(counted as usize, file.rows.len());

    // metrics.parquet holds exporter, loadgen and simulator series.
    let has = |source: &str, metric: &str| {
        samples
            .iter()
            .any(|s| s.source == source && s.metric == metric)
    };
    assert!(has("exporter", "aifb_node_cpu_seconds_total"));
    assert!(has("exporter", "aifb_process_cpu_seconds_total"));
    assert!(has("loadgen", "aifb_loadgen_ttft_seconds_bucket"));
    assert!(has("service", "vllm:num_requests_running"));
    assert!(
        samples
            .iter()
            .any(|s| s.metric == "vllm:num_requests_waiting" && s.value > 0.0),
        "queueing past saturation"
    );

    // The level of maximum throughput is within one level of the model's.
    let recipe = Recipe::load(&run.join("recipe.lock.yaml")).unwrap();
    let sim = &recipe.service.simulator;
    let model: Vec<f64> = levels
        .iter()
        .map(|&n| sim.closed_loop_throughput(n, 64, 32))
        .collect();
    let argmax = |v: &[f64]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap()
    };
    let predicted = argmax(&model);
    assert_eq!(levels[predicted], 8);
    let report = report_json(&run);
    let measured: Vec<f64> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["throughput_rps"].as_f64().unwrap())
        .collect();
    let best = argmax(&measured);
    assert!(
        best.abs_diff(predicted) <= 1,
        "max throughput at level {} (measured {measured:?}, model {model:?})",
        levels[best]
    );
    assert_eq!(
        report["max_throughput"]["level"].as_f64(),
        Some(f64::from(levels[best]))
    );
    assert!(run.join("report/report.md").is_file());
    // Why it saturates: the sleeping simulator is limited by its batch slots, then queues.
    let why = report["saturation_bottleneck"]["class"]
        .as_str()
        .unwrap_or("none");
    assert!(
        matches!(why, "scheduler_limit" | "queueing"),
        "saturation attributed to {why}: {}",
        report["bottlenecks"]
    );
    // report.html renders in a real browser: headless Chromium, no network.
    let html = run.join("report/report.html");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let profile = tmp.path().join("chromium-profile");
    let url = format!("file://{}", html.display());
    let dom = Command::new(&chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium is installed (scripts/test.sh installs it)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"verdict\"") && dom.contains("max throughput"),
        "{}",
        &dom[..dom.len().min(500)]
    );
    assert_eq!(dom.matches("<svg").count(), 4, "four inline plots");
    let shot = tmp.path().join("report.png");
    let status = Command::new(&chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--window-size=1100,2400",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    for png in [
        "throughput_latency.png",
        "latency_log.png",
        "bottlenecks.png",
        "spectrum.png",
    ] {
        let bytes = std::fs::read(run.join("report/plots").join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    let svg = std::fs::read_to_string(run.join("report/plots/throughput_latency.svg")).unwrap();

    assert!(svg.contains("<svg") && svg.contains("Throughput vs load"));
    let summary: serde_json::Value = summary_json(&run);
    assert_eq!(summary["stages"].as_array().unwrap().len(), levels.len());

    // The files open in pyarrow with the documented columns (when a Python with pyarrow is given).
    if let Ok(python) = std::env::var("AIFB_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pyarrow_check.py");
        let out = Command::new(python)
            .arg(script)
            .arg(&run)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "pyarrow check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn service_that_fails_to_start_exits_2_and_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = "name: broken
service:
  kind: openai
  command: [\"sh\", \"-c\", \"echo 'fatal: no model file' >&2; exit 3\"]
workload:
  pattern: closed
  levels: [1]
";
    std::fs::write(tmp.path().join("broken.yaml"), recipe).unwrap();
    let out = aifb(tmp.path(), &["run", "broken.yaml", "--out", "runs"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("aifb: error:"))
        .expect("one error line");
    assert!(
        error.contains("before it was ready") && error.contains("fatal: no model file"),
        "{error}"
    );
    let run = only_run(&tmp.path().join("runs"));
    let m = manifest(&run);
    assert_eq!(m.status, RunStatus::Failed);
    assert!(!m.processes.is_empty());
    for p in &m.processes {
        assert!(!alive(p.pid), "{} (pid {}) left running", p.role, p.pid);
    }
}

#[test]
fn sigterm_keeps_the_finished_requests() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("long.yaml"),
        short_demo("[4, 8, 16, 32, 64]", "30s"),
    )
    .unwrap();
    let mut child = Command::new(bin("aifb"))
        .args(["run", "long.yaml", "--out", "runs"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the loadgen reports finished requests, then terminate aifb.
    let runs = tmp.path().join("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut loadgen_pid = None;
    while loadgen_pid.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached its workload"
        );
        if let Some(run) = std::fs::read_dir(&runs).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.join("run.json").is_file())
        }) && let Ok(m) = Manifest::read(&run.join("run.json"))
            && let Some(lg) = m.processes.iter().find(|p| p.role == "loadgen")
        {
            // Once the second stage runs, wait for requests in flight on the loadgen's own
            // /metrics, so that some are cut short by the signal.
            let log = std::fs::read_to_string(run.join("logs/loadgen.log")).unwrap_or_default();
            let metrics = log
                .lines()
                .find_map(|l| l.split("loadgen metrics on ").nth(1))
                .map(str::trim);
            if log.contains("stage 2/")
                && let Some(url) = metrics
                && let Ok(text) = std::panic::catch_unwind(|| http_get(url))
                && aifb_core::promtext::parse(&text)
                    .unwrap_or_default()
                    .iter()
                    .any(|s| s.name == "aifb_loadgen_in_flight" && s.value > 0.0)
            {
                loadgen_pid = Some(lg.pid);
            }
        }
        std::thread::yield_now();
    }
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let run = only_run(&runs);
    let m = manifest(&run);
    assert_eq!(m.status, RunStatus::Cancelled);
    for p in &m.processes {
        assert!(!alive(p.pid), "{} (pid {}) left running", p.role, p.pid);
    }
    let file =
        requests::read(&run.join("requests.parquet")).expect("requests.parquet closed properly");
    let first_stage = file.rows.iter().filter(|r| r.stage == 0 && r.ok).count();
    assert!(first_stage > 0, "the finished first stage was lost");
    assert!(
        file.rows
            .iter()
            .any(|r| r.error.as_deref() == Some("cancelled")),
        "in-flight requests are recorded as cancelled"
    );
    assert!(run.join("metrics.parquet").is_file());
    assert!(
        run.join("report/report.md").is_file(),
        "the partial run is still analysed"
    );
}

#[test]
fn every_exposition_passes_promtool() {
    // The loadgen's own series, with every family populated.
    let t = aifb_loadgen::telemetry::Telemetry::new();
    let label = vec![("op", "chat")];
    t.requests
        .get_or_create(&vec![("op", "chat"), ("outcome", "ok")])
        .inc();
    for h in [
        &t.duration,
        &t.response_time,
        &t.ttft,
        &t.itl,
        &t.tpot,
        &t.schedule_lag,
    ] {
        h.get_or_create(&label).observe(0.01);
    }
    t.output_tokens.get_or_create(&label).inc_by(3);
    t.prompt_tokens.get_or_create(&label).inc_by(3);
    let (status, text) = promtool_check(&aifb_core::promtext::to_classic(&t.encode()));
    assert!(
        status,
        "promtool check metrics on the loadgen's series: {text}"
    );

    // The exporter and the simulator, over HTTP.
    let exporter = Command::new(bin("exporter"))
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--process.pid",
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sim = Command::new(bin("loadgen"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for (mut child, third_party_names) in [(exporter, false), (sim, true)] {
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        let url = first.trim().trim_start_matches("listening on ").to_string();
        let url = if url.ends_with("/metrics") {
            url
        } else {
            format!("{url}/metrics")
        };
        let body = http_get(&url);
        let _ = child.kill();
        let _ = child.wait();
        assert!(body.contains("# TYPE"), "GET {url}: {body}");
        let (status, text) = promtool_check(&body);
        if third_party_names {
            // The simulator copies vLLM's metric names, colons included, as a real vLLM
            // exposes them; promtool flags exactly that and must flag nothing else.
            let other: Vec<&str> = text
                .lines()
                .filter(|l| !l.ends_with("metric names should not contain ':'"))
                .collect();
            assert!(
                other.is_empty(),
                "promtool check metrics on {url}: {}",
                other.join("\n")
            );
            assert!(body.contains("vllm:num_requests_running"));
        } else {
            assert!(status, "promtool check metrics on {url}: {text}");
        }
    }
}

fn promtool_check(exposition: &str) -> (bool, String) {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs it)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let result = check.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (result.status.success() && text.trim().is_empty(), text)
}

#[test]
fn open_loop_follows_its_schedule_whatever_the_responses() {
    let tmp = tempfile::tempdir().unwrap();
    // 40 req/s offered to a server that completes far fewer: the schedule must not bend.
    let recipe = "name: open
service:
  kind: simulator
  simulator:
    max_num_seqs: 2
workload:
  pattern: open
  arrival: constant
  levels: [10, 40]
  warmup: 500ms
  measure: 2s
  cooldown: 0s
  timeout: 3s
  request:
    max_tokens: 64
";
    std::fs::write(tmp.path().join("open.yaml"), recipe).unwrap();
    let out = aifb(tmp.path(), &["run", "open.yaml", "--out", "runs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = only_run(&tmp.path().join("runs"));
    let file = requests::read(&run.join("requests.parquet")).unwrap();
    for (stage, rate) in [(0u32, 10.0f64), (1, 40.0)] {
        let mut intended: Vec<i64> = file
            .rows
            .iter()
            .filter(|r| r.stage == stage)
            .map(|r| r.t_intended)
            .collect();
        assert!(
            file.rows
                .iter()
                .filter(|r| r.stage == stage)
                .all(|r| r.rate == Some(rate) && r.concurrency.is_none())
        );
        intended.sort_unstable();
        // Constant arrivals every 1/rate over 2.5 s: the first at 1/rate, none at the end.
        assert_eq!(intended.len(), (2.5 * rate) as usize - 1, "stage {stage}");
        let gap = (1e9 / rate) as i64;
        assert!(
            intended.windows(2).all(|w| (w[1] - w[0] - gap).abs() <= 1),
            "stage {stage}: arrivals are not every {gap} ns"
        );
    }
    // The server completes about 3.7 requests/s (2 sequences of 64 tokens at ~8.5 ms a
    // step): arrivals that do not wait for responses pile up until requests time out, and
    // every one of them is still a row.
    assert!(
        file.rows
            .iter()
            .any(|r| r.stage == 1 && r.error.as_deref() == Some("timeout"))
    );
    assert!(file.rows.iter().all(|r| r.t_sent >= r.t_intended));
}

/// CPU seconds (user + system) of a live process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn burn_cpu_mode_spends_the_modelled_time_on_a_core() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("r.yaml"), short_demo("[8]", "2s")).unwrap();
    let mut used = Vec::new();
    for burn in [false, true] {
        let mut args = vec!["sim", "--listen", "127.0.0.1:0", "--max-num-seqs", "8"];
        if burn {
            args.push("--burn-cpu");
        }
        let mut sim = Command::new(bin("loadgen"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sim.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        let url = first.trim().trim_start_matches("listening on ").to_string();
        let before = cpu_seconds(sim.id());
        let out = Command::new(bin("loadgen"))
            .args([
                "run",
                "--recipe",
                "r.yaml",
                "--target",
                &url,
                "--out",
                if burn { "burn" } else { "sleep" },
            ])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        used.push(cpu_seconds(sim.id()) - before);
        let _ = sim.kill();
        let _ = sim.wait();
    }
    // The same workload: sleeping costs the simulator little CPU, burning costs it the
    // modelled step time (the whole 3 s of the stage is busy with 8 users).
    assert!(
        used[1] > 3.0 * used[0],
        "CPU seconds sleep {:.2}, burn {:.2}",
        used[0],
        used[1]
    );
}

#[test]
fn a_cpu_burning_service_is_attributed_to_host_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = short_demo("[4, 8, 16]", "3s").replace(
        "    prefill_per_token: 20us\n",
        "    prefill_per_token: 20us\n    burn_cpu: true\n",
    );
    assert!(recipe.contains("burn_cpu: true"));
    std::fs::write(tmp.path().join("burn.yaml"), recipe).unwrap();
    let out = aifb(tmp.path(), &["run", "burn.yaml", "--out", "runs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = only_run(&tmp.path().join("runs"));
    let report = report_json(&run);
    let top = &report["saturation_bottleneck"];
    assert_eq!(top["class"], "host_cpu", "{}", report["bottlenecks"]);
    assert!(top["evidence"].to_string().contains("CPU cores"), "{top}");
}

#[test]
fn the_gate_catches_a_slower_service_from_real_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = |step: &str| {
        short_demo("[4, 8]", "6s")
            .replace(
                "decode_step_base: 8ms",
                &format!("decode_step_base: {step}"),
            )
            .replace("decode_step_per_seq: 250us", "decode_step_per_seq: 125us")
            .replace("max_tokens: 32", "max_tokens: 16")
    };
    let mut runs = Vec::new();
    for (name, step) in [("base", "2ms"), ("slower", "3ms")] {
        std::fs::write(tmp.path().join(format!("{name}.yaml")), recipe(step)).unwrap();
        let out = aifb(tmp.path(), &["run", &format!("{name}.yaml"), "--out", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        runs.push(only_run(&tmp.path().join(name)).join("requests.parquet"));
    }
    // Same workload, slower service: the gate must say so, from real measurements.
    let out = Command::new(bin("analyzer"))
        .arg("regress")
        .arg(&runs[0])
        .arg(&runs[1])
        .args(["--format", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let findings = v["comparison"]["findings"].as_array().unwrap();
    let at8 = |metric: &str| {
        findings
            .iter()
            .find(|f| f["level"] == 8.0 && f["metric"] == metric)
            .map(|f| f["verdict"].clone())
    };
    assert_eq!(
        at8("throughput"),
        Some(serde_json::json!("REGRESSED")),
        "{text}"
    );
    assert_eq!(
        at8("p99_latency"),
        Some(serde_json::json!("REGRESSED")),
        "{text}"
    );
    // And the base against itself is no regression.
    let out = Command::new(bin("analyzer"))
        .arg("regress")
        .arg(&runs[0])
        .arg(&runs[0])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A memory cgroup (v1) shaped like a SLURM job's, removed with everything in it on drop.
struct MemoryCgroup {
    root: std::path::PathBuf,
    job: std::path::PathBuf,
}

impl MemoryCgroup {
    /// `None` where this machine lets us create none (not root, no v1 memory controller).
    fn create(limit: u64) -> Option<Self> {
        let root =
            Path::new("/sys/fs/cgroup/memory").join(format!("aifb-e2e-{}", std::process::id()));
        let job = root.join("job_4242");
        std::fs::create_dir_all(&job).ok()?;
        let me = Self { root, job };
        std::fs::write(me.job.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
        Some(me)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Kill what is left, then wait (bounded) until the kernel lets the cgroup go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let procs = std::fs::read_to_string(self.job.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: killing processes this test placed in its own cgroup.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            if std::fs::remove_dir(&self.job).is_ok() || !self.job.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

#[test]
fn a_memory_hungry_service_under_a_cgroup_limit_is_memory_bound() {
    let limit: u64 = 256 << 20;
    let Some(cg) = MemoryCgroup::create(limit) else {
        eprintln!("skipped: no v1 memory cgroup can be created here (needs root)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The hog fills the cgroup to 97 % of its limit in 2 MiB steps and holds it.
    let hog = format!(
        "import time\nusage = '{usage}'\nheld = []\nwhile int(open(usage).read()) < 0.97 * {limit}:\n    held.append(bytearray(2 << 20))\n    held[-1][::4096] = b'\\x01' * len(held[-1][::4096])\ntime.sleep(600)\n",
        usage = cg.job.join("memory.usage_in_bytes").display()
    );
    std::fs::write(tmp.path().join("hog.py"), hog).unwrap();
    let recipe = format!(
        "name: memory-bound
service:
  kind: openai
  model: sim-llm
  command: [\"sh\", \"-c\", \"python3 {hog} & exec {loadgen} sim --listen 127.0.0.1:{{port}} --max-num-seqs 8\"]
workload:
  pattern: closed
  levels: [4, 8, 16]
  warmup: 2s
  measure: 4s
  cooldown: 0s
  timeout: 20s
  request:
    max_tokens: 16
",
        hog = tmp.path().join("hog.py").display(),
        loadgen = bin("loadgen").display()
    );
    std::fs::write(tmp.path().join("mem.yaml"), recipe).unwrap();
    // aifb and everything it starts live in the limited cgroup.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec {} run mem.yaml --out runs",
            cg.job.join("cgroup.procs").display(),
            bin("aifb").display()
        ))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = only_run(&tmp.path().join("runs"));
    let report = report_json(&run);
    let top = &report["saturation_bottleneck"];
    assert_eq!(top["class"], "host_memory", "{}", report["bottlenecks"]);
    assert!(
        top["evidence"].to_string().contains("of its memory limit"),
        "{top}"
    );
    drop(cg);
}

#[test]
fn the_validity_gate_fails_a_capped_open_loop_and_passes_a_sound_one() {
    let tmp = tempfile::tempdir().unwrap();
    // Sound: bursty gamma arrivals well below what the simulator serves. The lag limit is
    // loosened from its 10 ms default: with 20 arrivals, p99 is the worst one, and on a
    // busy 2-CPU test machine one late wake-up can pass 10 ms. The capped run below falls
    // seconds behind.
    let sound = "name: sound
service:
  kind: simulator
monitoring:
  exporter:
    enabled: false
workload:
  pattern: open
  validity: {max_schedule_lag_p99: 100ms}
  arrival: gamma
  burstiness: 2
  levels: [10]
  warmup: 300ms
  measure: 2s
  cooldown: 0s
  timeout: 5s
  request:
    max_tokens: 8
";
    std::fs::write(tmp.path().join("sound.yaml"), sound).unwrap();
    let out = aifb(tmp.path(), &["run", "sound.yaml", "--out", "sound", "--ci"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = only_run(&tmp.path().join("sound"));
    let summary: serde_json::Value = summary_json(&run);
    let stage = &summary["stages"][0];
    assert_eq!(stage["valid"], true, "{stage}");
    assert!(stage["achieved_ratio"].as_f64().unwrap() >= 0.99, "{stage}");
    assert!(stage["scheduled"].as_u64().unwrap() > 0);

    // Capped: at most 2 requests in flight, each ~130 ms long, but 60 arrivals per second.
    // Arrivals queue in the client, their sends fall behind: the stage is invalid and the
    // CI run exits 1, with every request kept.
    let capped = sound
        .replace("name: sound", "name: capped")
        .replace(
            "arrival: gamma\n  burstiness: 2\n  levels: [10]",
            "arrival: constant\n  levels: [60]\n  max_in_flight: 2",
        )
        .replace("max_tokens: 8", "max_tokens: 32");
    std::fs::write(tmp.path().join("capped.yaml"), capped).unwrap();
    let out = aifb(
        tmp.path(),
        &["run", "capped.yaml", "--out", "capped", "--ci"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("invalid stage"), "{err}");
    let run = only_run(&tmp.path().join("capped"));
    let summary: serde_json::Value = summary_json(&run);
    let stage = &summary["stages"][0];
    assert_eq!(stage["valid"], false, "{stage}");
    let reasons = stage["invalid_reasons"].to_string();
    assert!(
        reasons.contains("schedule lag") && reasons.contains("achieved/offered"),
        "{reasons}"
    );
    // The report says what only the generator knew.
    let report = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(
        report.contains("load generator: achieved/offered"),
        "{report}"
    );
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    // Never more than 2 in flight: at each send, at most one other request is running.
    for r in &rows {
        let running = rows
            .iter()
            .filter(|o| {
                o.t_sent < r.t_sent && o.t_end > r.t_sent && o.error.as_deref() != Some("cancelled")
            })
            .count();
        assert!(running <= 1, "{running} others in flight at a send");
    }
    // Every scheduled arrival kept its slot: the lag grows as the queue does.
    let lags: Vec<i64> = rows
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.t_sent - r.t_intended)
        .collect();
    assert!(
        lags.iter().max().unwrap() > &500_000_000,
        "lag never built up"
    );
}

#[test]
fn shards_split_one_timeline_and_merge_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sim = Server::start(
        bin("loadgen"),
        &["sim", "--listen", &format!("127.0.0.1:{port}")],
        None,
    );
    wait_until("simulator", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let recipe = tmp.path().join("open.yaml");
    std::fs::write(
        &recipe,
        "name: sharded
service:
  kind: simulator
workload:
  pattern: open
  arrival: poisson
  levels: [30, 60]
  warmup: 300ms
  measure: 1500ms
  cooldown: 0s
  timeout: 5s
  request:
    max_tokens: 4
",
    )
    .unwrap();
    let target = format!("http://127.0.0.1:{port}");
    let run = |out: &str, shard: &str, start_at: f64| {
        Command::new(bin("loadgen"))
            .args([
                "run",
                "--recipe",
                recipe.to_str().unwrap(),
                "--target",
                &target,
                "--out",
            ])
            .arg(tmp.path().join(out))
            .args(["--shard", shard, "--start-at", &start_at.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let at = now() + 1.0;
    let shards = [run("s0", "0/2", at), run("s1", "1/2", at)];
    for mut s in shards {
        assert!(s.wait().unwrap().success());
    }
    let mut single = run("single", "0/1", now());
    assert!(single.wait().unwrap().success());

    let out = Command::new(bin("loadgen"))
        .args(["merge", "--out"])
        .arg(tmp.path().join("merged"))
        .arg(tmp.path().join("s0"))
        .arg(tmp.path().join("s1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = |d: &str| {
        requests::read(&tmp.path().join(d).join("requests.parquet"))
            .unwrap()
            .rows
    };
    let (merged, alone) = (rows("merged"), rows("single"));
    for stage in [0u32, 1] {
        let workers = |rs: &[requests::RequestRow]| {
            let mut w: Vec<u32> = rs
                .iter()
                .filter(|r| r.stage == stage)
                .map(|r| r.worker)
                .collect();
            w.sort_unstable();
            w
        };
        // The shards sent exactly the single generator's arrivals, each once.
        assert_eq!(workers(&merged), workers(&alone), "stage {stage}");
        let clients: std::collections::BTreeSet<&str> = merged
            .iter()
            .filter(|r| r.stage == stage)
            .map(|r| r.client.as_str())
            .collect();
        assert_eq!(
            clients.into_iter().collect::<Vec<_>>(),
            ["shard-0", "shard-1"]
        );
    }
    assert!(merged.iter().all(|r| r.ok));
    let ids: std::collections::BTreeSet<&str> =
        merged.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        merged.len(),
        "request ids are unique across shards"
    );
    // The merged summary is rebuilt from the rows, and its schedule adds up to the whole.
    let summary = |d: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join(d).join("summary.json")).unwrap(),
        )
        .unwrap()
    };
    let (m, a) = (summary("merged"), summary("single"));
    for i in 0..2 {
        assert_eq!(
            m["stages"][i]["scheduled"], a["stages"][i]["scheduled"],
            "stage {i}"
        );
        let measured = merged
            .iter()
            .filter(|r| r.stage == i as u32 && r.phase == "measure")
            .count();
        assert_eq!(
            m["stages"][i]["measured"].as_u64().unwrap() as usize,
            measured
        );
        assert_eq!(
            m["stages"][i]["latency_s"]["count"].as_u64().unwrap() as usize,
            measured
        );
    }
    let samples = aifb_core::metrics::read(&tmp.path().join("merged/metrics.parquet")).unwrap();
    assert!(!samples.is_empty());

    // Shards of different sweeps do not merge.
    let bad = Command::new(bin("loadgen"))
        .args(["merge", "--out"])
        .arg(tmp.path().join("bad"))
        .arg(tmp.path().join("s0"))
        .arg(tmp.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("summary.json"));
}

#[test]
fn prompts_come_from_a_sharegpt_file_next_to_the_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Prompt i has i+2 words and its answer i+1 words: the simulator counts words as
    // tokens and generates exactly max_tokens, so every row can be checked.
    let mut lines = String::new();
    for i in 0..5 {
        let ask = vec!["why"; i + 2].join(" ");
        let answer = vec!["because"; i + 1].join(" ");
        lines.push_str(&serde_json::json!({"conversations": [{"from": "human", "value": ask}, {"from": "gpt", "value": answer}]}).to_string());
        lines.push('\n');
    }
    std::fs::write(data.join("chats.jsonl"), lines).unwrap();
    let recipe = "name: dataset
service:
  kind: simulator
monitoring:
  exporter:
    enabled: false
workload:
  pattern: closed
  levels: [2]
  warmup: 200ms
  measure: 1s
  cooldown: 0s
  request:
    dataset: chats.jsonl
";
    std::fs::write(data.join("dataset.yaml"), recipe).unwrap();
    let out = aifb(tmp.path(), &["run", "data/dataset.yaml", "--out", "runs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = only_run(&tmp.path().join("runs"));
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    assert!(rows.len() > 10);
    let mut lengths = BTreeSet::new();
    for r in rows.iter().filter(|r| r.ok) {
        let (p, o) = (r.prompt_tokens.unwrap(), r.output_tokens.unwrap());
        assert_eq!(p, o + 1, "{r:?}");
        lengths.insert(p);
    }
    assert_eq!(lengths.into_iter().collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);

    // A broken dataset is one input error naming the file and line.
    std::fs::write(data.join("chats.jsonl"), "{\"prompt\": \"fine\"}\n{oops\n").unwrap();
    let out = aifb(tmp.path(), &["run", "data/dataset.yaml", "--out", "runs2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("chats.jsonl line 2"), "{err}");
}

#[test]
fn a_sweep_stops_at_the_first_level_that_misses_its_slo() {
    let tmp = tempfile::tempdir().unwrap();
    // short_demo's simulator batches 8 sequences: 1 and 2 users finish in about 0.3 s,
    // 64 users queue for seconds. The sweep must stop after 64 and never run 128.
    let recipe = short_demo("[1, 2, 64, 128]", "1s")
        .replace("workload:\n", "workload:\n  stop_at_slo_miss: true\n")
        + "slo:\n  e2e_p99: 800ms\nmonitoring:\n  exporter:\n    enabled: false\n";
    let run = run_ok(tmp.path(), "slo", &recipe);
    let summary: serde_json::Value = summary_json(&run);
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3, "{summary}");
    assert_eq!(stages[0]["slo_missed"], serde_json::json!([]));
    assert_eq!(stages[1]["slo_missed"], serde_json::json!([]));
    let missed = stages[2]["slo_missed"].to_string();
    assert!(missed.contains("e2e_p99"), "{missed}");
    let report = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(
        report.contains("the sweep stopped after this level"),
        "{report}"
    );
    // Goodput counts the successes within the SLO: all of them below saturation, few
    // once requests queue for seconds.
    let f = |i: usize, k: &str| stages[i][k].as_f64().unwrap();
    for i in 0..2 {
        assert_eq!(f(i, "goodput_rps"), f(i, "throughput_rps"), "stage {i}");
    }
    assert!(
        f(2, "goodput_rps") < 0.5 * f(2, "throughput_rps"),
        "{}",
        stages[2]
    );
    // The per-user token rate is 1 / TPOT: the simulator's step time at 1 user.
    let user = stages[0]["user_output_tokens_per_s"]["p50"]
        .as_f64()
        .unwrap();
    let tpot = stages[0]["tpot_s"]["p50"].as_f64().unwrap();
    assert!((user * tpot - 1.0).abs() < 0.01, "{user} x {tpot}");
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    assert!(rows.iter().all(|r| r.stage < 3));
}

#[test]
fn closed_loop_users_stop_after_their_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = short_demo("[3, 5]", "1s")
        .replace(
            "workload:\n",
            "workload:\n  requests_per_user: 2\n  ramp_up: 0s\n",
        )
        .replace("warmup: 1s", "warmup: 0s")
        + "monitoring:\n  exporter:\n    enabled: false\n";
    let run = run_ok(tmp.path(), "quota", &recipe);
    // The front door reads the run back: `aifb list` and `aifb status`.
    let id = run.file_name().unwrap().to_str().unwrap().to_string();
    let listed = aifb(tmp.path(), &["list", "--out", "runs-quota"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains(&id) && text.contains("DONE"),
        "{text}"
    );
    let status = aifb(tmp.path(), &["status", &id, "--out", "runs-quota"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stage_lines = text
        .lines()
        .filter(|l| l.trim_start().starts_with(['0', '1']) && l.trim_end().ends_with("yes"))
        .count();
    assert_eq!(stage_lines, 2, "{text}");
    let missing = aifb(tmp.path(), &["status", "BM-nope", "--out", "runs-quota"]);
    assert_eq!(missing.status.code(), Some(2));
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    for (stage, users) in [(0u32, 3u32), (1, 5)] {
        let mut per_user = std::collections::BTreeMap::new();
        for r in rows.iter().filter(|r| r.stage == stage) {
            *per_user.entry(r.worker).or_insert(0) += 1;
        }
        assert_eq!(per_user.len() as u32, users, "stage {stage}");
        assert!(
            per_user.values().all(|&n| n == 2),
            "stage {stage}: {per_user:?}"
        );
    }
    // With no ramp-up every user's first request is intended at the stage start.
    let firsts: BTreeSet<i64> = rows
        .iter()
        .filter(|r| r.stage == 0)
        .map(|r| r.t_intended)
        .collect();
    let min = *firsts.iter().next().unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.stage == 0 && r.t_intended == min)
            .count(),
        3
    );
}

#[test]
fn a_trace_replays_its_timestamps_and_prompts_at_each_speed() {
    let tmp = tempfile::tempdir().unwrap();
    // Ten requests over 0.9 s; request i asks i + 1 words.
    let offsets = [0.0, 0.05, 0.1, 0.3, 0.31, 0.32, 0.5, 0.7, 0.85, 0.9];
    let mut lines = String::new();
    for (i, t) in offsets.iter().enumerate() {
        let prompt = vec!["replay"; i + 1].join(" ");
        lines.push_str(&serde_json::json!({"timestamp": 1_700_000_000.0 + t, "prompt": prompt, "max_tokens": 2}).to_string());
        lines.push('\n');
    }
    std::fs::write(tmp.path().join("trace.jsonl"), lines).unwrap();
    let recipe = "name: trace
service:
  kind: simulator
monitoring:
  exporter:
    enabled: false
workload:
  pattern: open
  arrival: trace
  trace: trace.jsonl
  levels: [1, 2]
  warmup: 0s
  measure: 1500ms
  cooldown: 0s
";
    let run = run_ok(tmp.path(), "trace", recipe);
    let m = manifest(&run);
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    for (stage, speed) in [(0u32, 1.0f64), (1, 2.0)] {
        let start = m.stages[stage as usize].start_ns;
        let mut mine: Vec<&requests::RequestRow> =
            rows.iter().filter(|r| r.stage == stage).collect();
        mine.sort_by_key(|r| r.worker);
        assert_eq!(mine.len(), offsets.len(), "stage {stage}");
        for (r, t) in mine.iter().zip(offsets) {
            let want = (t / speed * 1e9) as i64;
            assert!(
                (r.t_intended - start - want).abs() < 1_000,
                "stage {stage}: {r:?}"
            );
            assert_eq!(r.prompt_tokens, Some(r.worker + 1), "{r:?}");
            assert_eq!(r.output_tokens, Some(2));
        }
    }
}

#[test]
fn an_open_loop_ramps_from_one_level_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = "name: ramp
service:
  kind: simulator
monitoring:
  exporter:
    enabled: false
workload:
  pattern: open
  arrival: constant
  ramp: 1s
  levels: [20, 40]
  warmup: 1s
  measure: 1s
  cooldown: 0s
  request:
    max_tokens: 2
";
    let run = run_ok(tmp.path(), "ramp", recipe);
    let m = manifest(&run);
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    // Expected arrivals in the ramp's second: (from + to) / 2; in the measured one: to.
    for (stage, ramping, steady) in [(0u32, 10usize, 20usize), (1, 30, 40)] {
        let start = m.stages[stage as usize].start_ns;
        let in_second = |k: i64| {
            rows.iter()
                .filter(|r| r.stage == stage && (r.t_intended - start) / 1_000_000_000 == k)
                .count()
        };
        assert!(
            (ramping - 1..=ramping).contains(&in_second(0)),
            "stage {stage}: {}",
            in_second(0)
        );
        assert!(
            (steady - 1..=steady + 1).contains(&in_second(1)),
            "stage {stage}: {}",
            in_second(1)
        );
    }
}

/// Starts `aifb run` of a ten-minute single-level simulator run in the background, with
/// `env` added; returns the temp dir, the runs folder and the child.
fn long_run(env: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf, std::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("long.yaml");
    std::fs::write(&recipe, short_demo("[2]", "10m")).unwrap();
    let runs = dir.path().join("runs");
    let child = std::process::Command::new(bin("aifb"))
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--out",
            runs.to_str().unwrap(),
        ])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (dir, runs, child)
}

/// `aifb watch` follows a local run through its loadgen's discovery record, and
/// `aifb cancel` stops it the gentle way: CANCELLED, finished requests kept.
#[test]
fn watch_follows_a_run_and_cancel_stops_it() {
    let (dir, runs, mut child) = long_run(&[]);
    // The loadgen announces itself once its /metrics listens.
    wait_until(
        "the loadgen's discovery record",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(runs.join(".state/discover"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .is_some_and(|e| e.path().join("loadgen-local.json").is_file())
        },
    );
    let run = only_run(&runs);
    let id = manifest(&run).id;
    let mut watch = std::process::Command::new(bin("aifb"))
        .args([
            "watch",
            &id,
            "--out",
            runs.to_str().unwrap(),
            "--interval",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    // Read until a line reports achieved throughput with requests done.
    let measuring = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| {
            l.starts_with("RUNNING") && l.contains("users 2") && !l.contains("achieved       0.0/s")
        })
        .expect("a RUNNING line with throughput");
    assert!(measuring.contains("p99"), "{measuring}");
    let cancel = aifb(
        dir.path(),
        &["cancel", &id, "--out", runs.to_str().unwrap()],
    );
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    assert_eq!(child.wait().unwrap().code(), Some(130));
    // watch ends by itself with the final state.
    let last = lines.map_while(Result::ok).last().unwrap_or_default();
    assert!(last.starts_with("CANCELLED"), "{last}");
    assert!(watch.wait().unwrap().success());
    let m = manifest(&run);
    assert_eq!(m.status, RunStatus::Cancelled);
    assert!(aifb_tests::request_rows(&run).iter().any(|r| r.ok));
    // Its records say stopped; a cancel of an ended run is refused.
    let again = aifb(
        dir.path(),
        &["cancel", &id, "--out", runs.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(2));
    let services = aifb(dir.path(), &["services", "--out", runs.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&services.stdout);
    assert!(
        text.contains("loadgen") && text.contains("exporter") && !text.contains("ready "),
        "{text}"
    );
}

/// A loadgen killed outright (SIGKILL: no chance to close its files) still leaves the
/// requests of its checkpoints, which the run joins into requests.parquet.
#[test]
fn a_killed_loadgen_keeps_the_requests_of_its_checkpoints() {
    let (_dir, runs, mut child) = long_run(&[("AIFB_CHECKPOINT_INTERVAL", "300ms")]);
    let parts = |run: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(run.join("partial"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until("two checkpoints", Duration::from_secs(60), || {
        runs.is_dir() && parts(&only_run(&runs)).len() >= 2
    });
    let run = only_run(&runs);
    let saved: usize = parts(&run)
        .iter()
        .map(|p| {
            requests::read(p)
                .expect("a part file is complete")
                .rows
                .len()
        })
        .sum();
    assert!(saved > 0);
    let loadgen = manifest(&run)
        .processes
        .iter()
        .find(|p| p.role == "loadgen")
        .map(|p| p.pid)
        .expect("loadgen recorded");
    // SAFETY: killing the loadgen this test's run started.
    unsafe {
        libc::kill(loadgen as i32, libc::SIGKILL);
    }
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let file = requests::read(&run.join("requests.parquet")).expect("requests.parquet rebuilt");
    assert!(
        file.rows.len() >= saved,
        "{} rows, {saved} checkpointed",
        file.rows.len()
    );
    assert!(file.manifest.is_some(), "the run manifest is in the footer");
    assert!(
        !run.join("partial").exists(),
        "the parts are joined and removed"
    );
    assert_eq!(manifest(&run).status, RunStatus::Failed);
}

/// `monitoring.chunks` writes every streamed chunk: they add up to each request's
/// chunks and output tokens, and the first one is the request's first token.
#[test]
fn chunks_parquet_keeps_every_streamed_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let text = short_demo("[2]", "2s")
        .replace(
            "  request:\n",
            "  request:\n    stream: true\n    continuous_usage_stats: true\n",
        )
        .replace("workload:\n", "monitoring:\n  chunks: true\nworkload:\n");
    let run = run_ok(dir.path(), "chunks", &text);
    let rows = aifb_tests::request_rows(&run);
    let chunks = aifb_core::chunks::read(&run.join("chunks.parquet")).expect("chunks.parquet");
    let mut by_request: std::collections::HashMap<&str, Vec<&aifb_core::chunks::ChunkRecord>> =
        std::collections::HashMap::new();
    for c in &chunks {
        by_request.entry(c.request_id.as_str()).or_default().push(c);
    }
    let ok: Vec<_> = rows.iter().filter(|r| r.ok).collect();
    assert!(ok.len() > 10);
    for r in ok {
        let cs = &by_request[r.request_id.as_str()];
        assert_eq!(Some(cs.len() as u32), r.chunks, "{}", r.request_id);
        let tokens: u32 = cs.iter().map(|c| c.tokens.expect("per-chunk usage")).sum();
        assert_eq!(Some(tokens), r.output_tokens, "{}", r.request_id);
        assert_eq!(Some(cs[0].t), r.t_first_token);
        assert!(cs.windows(2).all(|w| w[0].t <= w[1].t));
        assert!(cs.iter().all(|c| c.answer && c.t <= r.t_end));
    }
    // vLLM's per-chunk ITL needs these chunks; its counts are the measured successes.
    let out = Command::new(bin("analyzer"))
        .args([
            "compat",
            run.to_str().unwrap(),
            "--as",
            "vllm",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measured = rows.iter().filter(|r| r.ok && r.phase == "measure").count();
    assert_eq!(v[0]["metrics"]["completed"], measured);
    assert!(
        v[0]["metrics"]["p99_itl_ms"]
            .as_f64()
            .is_some_and(|x| x > 0.0)
    );
}

/// `workload.stop_when_oversaturated`: a level far beyond capacity ends early and the sweep
/// with it; a level well within capacity runs its whole window.
#[test]
fn an_oversaturated_level_ends_early() {
    let dir = tempfile::tempdir().unwrap();
    // The short demo's simulator serves about 25 requests/s.
    let text = short_demo("[5, 400, 800]", "8s").replace(
        "  pattern: closed\n",
        "  pattern: open\n  stop_when_oversaturated: true\n",
    );
    let run = run_ok(dir.path(), "oversaturated", &text);
    let summary = summary_json(&run);
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(
        stages.len(),
        2,
        "the sweep stops after the over-saturated level"
    );
    let measured_s = |s: &serde_json::Value| {
        (s["window"]["measure_end_ns"].as_i64().unwrap()
            - s["window"]["measure_start_ns"].as_i64().unwrap()) as f64
            / 1e9
    };
    assert_eq!(stages[0]["oversaturated"], false);
    assert!(
        (measured_s(&stages[0]) - 8.0).abs() < 0.5,
        "{}",
        measured_s(&stages[0])
    );
    assert_eq!(stages[1]["oversaturated"], true);
    assert!(measured_s(&stages[1]) < 8.0, "{}", measured_s(&stages[1]));
}

/// The simulator's truth log (`loadgen sim --truth`) against the loadgen's rows: for every
/// request the client's intervals contain the server's (both on the monotonic clock), and
/// the token counts agree. The size of the difference is measured in bench/loadgen.
#[test]
fn client_intervals_contain_the_servers_true_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let truth = dir.path().join("truth.jsonl");
    let _sim = Server::start(
        bin("loadgen"),
        &[
            "sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--max-num-seqs",
            "8",
            "--truth",
            truth.to_str().unwrap(),
        ],
        None,
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the simulator", Duration::from_secs(30), || {
        std::panic::catch_unwind(|| http_get(&format!("{base}/health"))).is_ok()
    });
    let recipe = dir.path().join("r.yaml");
    std::fs::write(
        &recipe,
        short_demo("[4]", "2s").replace("  request:\n", "  request:\n    stream: true\n"),
    )
    .unwrap();
    let out = Command::new(bin("loadgen"))
        .args([
            "run",
            "--recipe",
            recipe.to_str().unwrap(),
            "--target",
            &base,
            "--out",
        ])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = aifb_tests::request_rows(&dir.path().join("run"));
    let truth: std::collections::HashMap<String, serde_json::Value> =
        std::fs::read_to_string(&truth)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["request_id"].as_str().unwrap().to_string(), v)
            })
            .collect();
    let ok: Vec<_> = rows.iter().filter(|r| r.ok).collect();
    assert!(ok.len() > 20);
    for r in ok {
        let t = &truth[&r.request_id];
        assert_eq!(t["tokens"].as_u64(), r.output_tokens.map(u64::from));
        let server_ttft = t["token_ns"][0].as_i64().unwrap();
        let server_e2e = t["end_ns"].as_i64().unwrap();
        assert!(
            r.t_first_token.unwrap() - r.t_sent >= server_ttft,
            "{}",
            r.request_id
        );
        assert!(r.t_end - r.t_sent >= server_e2e, "{}", r.request_id);
    }
}

/// The short demo as an open loop whose rates `search` chooses, with `extra` top-level
/// sections, and without the exporter.
fn search_demo(search: &str, extra: &str) -> String {
    short_demo("[1]", "2s").replace(
        "  pattern: closed\n  levels: [1]\n",
        &format!("  pattern: open\n  search: {search}\n"),
    ) + extra
        + "monitoring:\n  exporter:\n    enabled: false\n"
}

/// The load levels of a report's curve, in its order.
fn curve_levels(report: &serde_json::Value) -> Vec<f64> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["level"].as_f64().unwrap())
        .collect()
}

/// `workload.search: {mode: sweep}`: a synchronous stage and a throughput probe, then
/// rates evenly spaced strictly between their measured throughputs. The calibration
/// stages are marked in run.json and kept out of the analysis's load curve.
#[test]
fn a_rate_sweep_calibrates_its_range_and_keeps_calibration_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let text = search_demo("{mode: sweep, users: 32, points: 2}", "");
    let run = run_ok(tmp.path(), "sweep", &text);
    let summary = summary_json(&run);
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 4, "{summary}");
    assert_eq!(stages[0]["concurrency"], 1);
    assert_eq!(stages[0]["calibration"], "synchronous");
    assert_eq!(stages[1]["concurrency"], 32);
    assert_eq!(stages[1]["calibration"], "throughput");
    let search = &summary["search"];
    let sync = search["synchronous_rps"].as_f64().unwrap();
    let probe = search["throughput_rps"].as_f64().unwrap();
    // A batching server completes more with 32 users than with one.
    assert!(sync > 0.0 && probe > 2.0 * sync, "{search}");
    for (k, s) in stages[2..].iter().enumerate() {
        assert!(s["calibration"].is_null(), "{s}");
        let rate = s["rate"].as_f64().unwrap();
        let expected = sync + (probe - sync) * (k + 1) as f64 / 3.0;
        assert!((rate / expected - 1.0).abs() < 0.01, "{rate} vs {expected}");
    }
    let m = manifest(&run);
    assert_eq!(
        m.stages.iter().map(|w| w.calibration).collect::<Vec<_>>(),
        vec![
            Some(aifb_core::run::Calibration::Synchronous),
            Some(aifb_core::run::Calibration::Throughput),
            None,
            None
        ]
    );
    // The synchronous stage sent one request at a time.
    let rows = requests::read(&run.join("requests.parquet")).unwrap().rows;
    let mut sync_rows: Vec<_> = rows.iter().filter(|r| r.stage == 0).collect();
    sync_rows.sort_by_key(|r| r.t_sent);
    assert!(sync_rows.len() > 3);
    assert!(
        sync_rows.windows(2).all(|p| p[1].t_sent >= p[0].t_end),
        "overlapping requests in the synchronous stage"
    );
    let report = report_json(&run);
    let curve = curve_levels(&report);
    assert_eq!(curve.len(), 2, "only the rates are points of the curve");
    assert!(curve[0] < curve[1], "{curve:?}");
    let kinds: Vec<&str> = report["calibration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["synchronous", "throughput"]);
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(md.contains("## Rate search (sweep)"), "{md}");
}

/// `workload.search: {mode: slo}`: a throughput probe, then a bisection over the rate.
/// The bracket it reports is made of stages that met and missed the SLO, the highest
/// passing rate lies below the lowest failing one, and it cannot lie well beyond what the
/// simulator can serve (past capacity the queue, and so TTFT, grows without bound).
#[test]
fn an_slo_search_brackets_the_highest_rate_that_meets_the_slo() {
    let tmp = tempfile::tempdir().unwrap();
    let text = search_demo(
        "{mode: slo, users: 32, max_stages: 6, precision: 0.1}",
        "slo:\n  ttft_p99: 250ms\n",
    );
    let run = run_ok(tmp.path(), "slo-search", &text);
    let summary = summary_json(&run);
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages[0]["calibration"], "throughput", "{summary}");
    let search = &summary["search"];
    let probe = search["throughput_rps"].as_f64().unwrap();
    assert_eq!(
        stages[1]["rate"].as_f64().unwrap(),
        (probe * 10.0).round() / 10.0,
        "the first rate is the probe's throughput (three digits)"
    );
    let pass = search["max_rate_meeting_slo"]
        .as_f64()
        .expect("a passing rate");
    let fail = search["min_rate_missing_slo"]
        .as_f64()
        .expect("a failing rate");
    assert!(pass < fail, "{search}");
    let stage_at = |rate: f64| {
        stages
            .iter()
            .find(|s| s["rate"].as_f64() == Some(rate))
            .unwrap_or_else(|| panic!("no stage at {rate}: {summary}"))
    };
    assert_eq!(stage_at(pass)["slo_missed"], serde_json::json!([]));
    assert!(
        stage_at(fail)["slo_missed"]
            .to_string()
            .contains("ttft_p99")
    );
    let report = report_json(&run);
    let capacity = report["simulator"]["capacity_rps"].as_f64().unwrap();
    assert!(pass < 1.25 * capacity, "{pass} vs capacity {capacity}");
    // The curve is ordered by rate although the search ran the rates out of order.
    let levels = curve_levels(&report);
    assert!(levels.windows(2).all(|p| p[0] < p[1]), "{levels:?}");
    assert_eq!(levels.len(), stages.len() - 1);
}
