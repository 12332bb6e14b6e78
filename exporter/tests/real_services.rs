//! The exporter against real servers started here on free loopback ports: Redis and
//! PostgreSQL probed (and seen going down), and a real Prometheus that finds the exporter
//! through the file_sd target file the exporter wrote and scrapes it.
//!
//! Needs redis-server, PostgreSQL's server binaries and prometheus (scripts/test.sh
//! installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, start_exporter};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tool(name: &str, candidates: &[&str]) -> PathBuf {
    for c in candidates {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} is not installed (scripts/test.sh installs it)"))
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| tool(name, &[]))
}

/// Polls `ready` until it holds or `limit` passes.
fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not ready within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(url: &str) -> Vec<aifb_core::promtext::Sample> {
    let text = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .unwrap()
        .text()
        .unwrap();
    aifb_core::promtext::parse(&text).unwrap()
}

fn value(s: &[aifb_core::promtext::Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.iter()
        .find(|x| {
            x.name == name
                && labels
                    .iter()
                    .all(|(k, v)| x.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|x| x.value)
}

/// A user the database server can run as (PostgreSQL refuses root).
fn run_as_postgres(cmd: &mut Command) -> &mut Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        *cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program)
        .args(args);
    }
    cmd
}

fn start_postgres(dir: &Path) -> (Running, u16) {
    let data = dir.join("pgdata");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let uid = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .expect("a postgres user");
        let uid: u32 = String::from_utf8_lossy(&uid.stdout)
            .trim()
            .parse()
            .expect("postgres uid");
        std::os::unix::fs::chown(dir, Some(uid), None).unwrap();
    }
    let out = run_as_postgres(
        Command::new(postgres_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let child = run_as_postgres(
        Command::new(postgres_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display())),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let running = Running(child);
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    wait_for("postgres", Duration::from_secs(30), || {
        postgres::Client::connect(&url, postgres::NoTls).is_ok()
    });
    (running, port)
}

#[test]
fn probes_real_redis_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let redis = Running(
        Command::new(tool("redis-server", &["/usr/bin/redis-server"]))
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    wait_for("redis", Duration::from_secs(10), || {
        redis::Client::open(redis_url.as_str())
            .and_then(|c| c.get_connection())
            .is_ok()
    });
    let mut con = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..25 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
        let _: i64 = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut con)
            .unwrap();
    }

    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let (_pg, pg_port) = start_postgres(&pg_dir);
    let pg_url = format!("postgresql://postgres@127.0.0.1:{pg_port}/postgres");
    let mut client = postgres::Client::connect(&pg_url, postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2);")
        .unwrap();

    let (_exporter, url) = start_exporter(&[
        "--probe".into(),
        format!("redis={redis_url}@cache"),
        "--probe".into(),
        format!("postgres={pg_url}@db"),
        "--process.name".into(),
        "redis-server".into(),
        "--process.service".into(),
        "cache".into(),
    ]);
    let s = scrape(&url);
    assert_eq!(
        value(
            &s,
            "aifb_service_up",
            &[("service", "cache"), ("kind", "redis")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "aifb_service_up",
            &[("service", "db"), ("kind", "postgres")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &s,
            "aifb_redis_commands_processed_total",
            &[("service", "cache")]
        )
        .unwrap()
            >= 50.0
    );
    assert!(
        value(
            &s,
            "aifb_redis_keyspace_hits_total",
            &[("service", "cache")]
        )
        .unwrap()
            >= 25.0
    );
    assert!(value(&s, "aifb_postgres_commits_total", &[("service", "db")]).unwrap() >= 1.0);
    assert!(value(&s, "aifb_postgres_backends", &[("service", "db")]).unwrap() >= 1.0);
    assert!(value(&s, "aifb_process_processes", &[("service", "cache")]).unwrap() >= 1.0);
    assert_eq!(
        value(
            &s,
            "aifb_scrape_collector_success",
            &[("collector", "probe")]
        ),
        Some(1.0)
    );

    // Redis goes away: its probe says so, PostgreSQL's does not change.
    drop(con);
    drop(redis);
    let s = scrape(&url);
    assert_eq!(
        value(
            &s,
            "aifb_service_up",
            &[("service", "cache"), ("kind", "redis")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &s,
            "aifb_service_up",
            &[("service", "db"), ("kind", "postgres")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "aifb_process_processes", &[("service", "cache")]),
        Some(0.0)
    );
}

#[test]
fn real_prometheus_discovers_and_scrapes_the_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets");
    let state = dir.path().join("state");
    let run_id = "BM-20260101-000000-beef";
    let (_exporter, url) = start_exporter(&[
        "--discovery.run-id".into(),
        run_id.into(),
        "--discovery.dir".into(),
        state.display().to_string(),
        "--discovery.file-sd".into(),
        targets.display().to_string(),
    ]);
    let records = aifb_core::discovery::read_run(&state, run_id);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, aifb_core::discovery::State::Ready);
    assert!(
        url.contains(&records[0].addr),
        "{url} vs {}",
        records[0].addr
    );

    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: aifb\n    file_sd_configs:\n      - files: ['{}/*.json']\n        refresh_interval: 1s\n",
            targets.display()
        ),
    )
    .unwrap();
    let _prometheus = Running(
        Command::new(tool("prometheus", &["/usr/bin/prometheus"]))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let query =
        format!("http://127.0.0.1:{prom_port}/api/v1/query?query=aifb_scrape_collector_success");
    let mut found = serde_json::Value::Null;
    wait_for(
        "prometheus to scrape the exporter",
        Duration::from_secs(90),
        || {
            let Ok(resp) = http.get(&query).send() else {
                return false;
            };
            let Ok(v) = resp.json::<serde_json::Value>() else {
                return false;
            };
            let ok = v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            if ok {
                found = v;
            }
            ok
        },
    );
    let series = found["data"]["result"].as_array().unwrap();
    let node = series
        .iter()
        .find(|s| s["metric"]["collector"] == "node")
        .expect("node collector series");
    assert_eq!(
        node["metric"]["run_id"], run_id,
        "labels from the file_sd target"
    );
    assert_eq!(node["metric"]["role"], "exporter");
    assert_eq!(node["value"][1], "1");
    // Prometheus asks for OpenMetrics; counters arrive under their _total names.
    let q = format!("http://127.0.0.1:{prom_port}/api/v1/query?query=aifb_node_cpu_seconds_total");
    let v: serde_json::Value = http.get(&q).send().unwrap().json().unwrap();
    assert!(
        v["data"]["result"].as_array().is_some_and(|r| r.len() >= 4),
        "{v}"
    );

    // A clean stop marks the record stopped.
    let mut exporter = _exporter;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(exporter.0.id() as i32, libc::SIGTERM);
    }
    assert!(exporter.0.wait().unwrap().success());
    assert_eq!(
        aifb_core::discovery::read_run(&state, run_id)[0].state,
        aifb_core::discovery::State::Stopped
    );
}
