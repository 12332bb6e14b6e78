//! Every driver against its service: real Redis, PostgreSQL, Garage (S3) and ChromaDB
//! servers started here on free loopback ports with temp dirs; Qdrant through its
//! documented REST answers; Ollama and vLLM through the simulator's modes. Each run's rows
//! are checked, and what the driver wrote is read back from the server.
//!
//! Needs redis-server, PostgreSQL's server binaries, garage and chroma
//! (scripts/test.sh installs or builds them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aifb_core::requests::RequestRow;
use aifb_loadgen::driver::{payload, vector};
use aifb_tests::*;

/// A short closed-loop workload: two levels, one second measured each.
const QUICK: &str = "workload:
  pattern: closed
  levels: [1, 4]
  warmup: 300ms
  measure: 1s
  cooldown: 0s
  timeout: 10s
";

fn monitoring_off() -> &'static str {
    "monitoring:\n  exporter:\n    enabled: false\n"
}

/// `environment.service_version` of a run's manifest.
fn service_version(run: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    m["environment"]["service_version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn count(rows: &[RequestRow], op: &str) -> usize {
    rows.iter().filter(|r| r.op == op).count()
}

fn assert_all_ok(rows: &[RequestRow]) {
    assert!(!rows.is_empty(), "no rows");
    let bad: Vec<&RequestRow> = rows.iter().filter(|r| !r.ok).take(3).collect();
    assert!(bad.is_empty(), "failed rows: {bad:?}");
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn start_redis(dir: &Path, extra: &[&str]) -> (Server, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let dir_s = dir.to_str().expect("path");
    let mut args = vec![
        "--port",
        &port_s,
        "--bind",
        "127.0.0.1",
        "--dir",
        dir_s,
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    args.extend_from_slice(extra);
    let server = Server::start("redis-server", &args, None);
    let url = format!("redis://127.0.0.1:{port}/");
    wait_until("redis", Duration::from_secs(20), || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .is_ok()
    });
    (server, port)
}

#[test]
fn redis_driver_really_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = start_redis(dir.path(), &[]);
    let recipe = format!(
        "name: redis-rows
service:
  kind: redis
  endpoint: redis://127.0.0.1:{port}
{}{QUICK}  redis:
    mix: {{get: 1, set: 1}}
    keys: 50
    value_size: 64
",
        monitoring_off()
    );
    let (out, run) = run_recipe(dir.path(), "redis", &recipe);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = run.unwrap();
    assert!(
        service_version(&run).starts_with("redis "),
        "{}",
        service_version(&run)
    );
    let rows = request_rows(&run);
    assert_all_ok(&rows);
    let (gets, sets) = (count(&rows, "get"), count(&rows, "set"));
    assert_eq!(gets + sets, rows.len());
    assert!(gets > 10 && sets > 10, "gets {gets} sets {sets}");
    for r in &rows {
        if r.op == "get" {
            // Every key was preloaded: every GET returns a whole value.
            assert_eq!(r.bytes_received, 64, "{r:?}");
        } else {
            // Key `aifb:N` plus the value.
            assert!((64 + 6..=64 + 7).contains(&r.bytes_sent), "{r:?}");
        }
        assert!(r.t_first_byte.is_some() && r.t_end >= r.t_sent);
    }
    // Read back what the driver wrote.
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let size: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 50);
    let v: Vec<u8> = redis::cmd("GET").arg("aifb:7").query(&mut c).unwrap();
    assert_eq!(v, payload(7, 64));
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    let calls = |cmd: &str| -> usize {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // Preloading sent 50 SETs; every recorded request reached the server.
    assert!(calls("set") >= sets + 50, "{stats}");
    assert!(calls("get") >= gets, "{stats}");
}

#[test]
fn redis_wrong_password_is_one_clear_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = start_redis(dir.path(), &["--requirepass", "right-secret"]);
    let recipe = format!(
        "name: redis-auth
service:
  kind: redis
  endpoint: redis://127.0.0.1:{port}
  auth:
    password: wrong-secret
{}{QUICK}",
        monitoring_off()
    );
    let (out, run) = run_recipe(dir.path(), "redis-auth", &recipe);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("check service.auth"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let manifest = std::fs::read_to_string(run.unwrap().join("run.json")).unwrap();
    assert!(manifest.contains("\"FAILED\""), "{manifest}");
}

#[test]
fn redis_killed_mid_run_keeps_every_finished_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut redis, port) = start_redis(dir.path(), &[]);
    let recipe = dir.path().join("kill.yaml");
    std::fs::write(
        &recipe,
        "name: redis-kill
service:
  kind: redis
  endpoint: redis://127.0.0.1:1
workload:
  pattern: closed
  levels: [2]
  warmup: 0s
  measure: 120s
  cooldown: 0s
  timeout: 2s
  redis:
    keys: 10
",
    )
    .unwrap();
    let out = dir.path().join("out");
    let listen = free_port();
    let mut lg = Server::start(
        bin("loadgen"),
        &[
            "run",
            "--recipe",
            recipe.to_str().unwrap(),
            "--target",
            &format!("redis://127.0.0.1:{port}"),
            "--out",
            out.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{listen}"),
        ],
        Some(&dir.path().join("loadgen.log")),
    );
    let metrics = format!("http://127.0.0.1:{listen}/metrics");
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let total = |outcome: &str| -> f64 {
        let Some(text) = client.get(&metrics).send().and_then(|r| r.text()).ok() else {
            return 0.0;
        };
        aifb_core::promtext::parse(&text)
            .unwrap_or_default()
            .iter()
            .filter(|s| {
                s.name == "aifb_loadgen_requests_total"
                    && s.labels.iter().any(|(k, v)| k == "outcome" && v == outcome)
            })
            .map(|s| s.value)
            .sum()
    };
    wait_until("requests flowing", Duration::from_secs(30), || {
        total("ok") >= 200.0
    });
    redis.crash();
    wait_until("errors after the crash", Duration::from_secs(30), || {
        total("reset") + total("connect") > 0.0
    });
    // SAFETY: kill(2) on the loadgen this test started.
    unsafe { libc::kill(lg.0.id() as i32, libc::SIGTERM) };
    let status = lg.0.wait().unwrap();
    assert!(status.code().is_some(), "loadgen died by a signal");
    let rows = aifb_core::requests::read(&out.join("requests.parquet"))
        .unwrap()
        .rows;
    let ok = rows.iter().filter(|r| r.ok).count();
    assert!(ok >= 200, "only {ok} finished requests kept");
    let errors: BTreeMap<&str, usize> =
        rows.iter()
            .filter_map(|r| r.error.as_deref())
            .fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e).or_default() += 1;
                m
            });
    assert!(
        errors
            .keys()
            .all(|e| ["reset", "connect", "cancelled"].contains(e)),
        "{errors:?}"
    );
    assert!(
        errors.get("reset").or(errors.get("connect")).is_some(),
        "{errors:?}"
    );
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("\"stages\""));
}

fn start_postgres(dir: &Path) -> (Server, u16) {
    let data = dir.join("pg");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let script = workspace().join("recipes/services/postgres.sh");
    let server = Server::start(
        &script,
        &[data.to_str().unwrap(), &port.to_string(), "-c", "fsync=off"],
        Some(&dir.join("postgres.log")),
    );
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    wait_until("postgres", Duration::from_secs(60), || {
        postgres::Client::connect(&url, postgres::NoTls).is_ok()
    });
    (server, port)
}

#[test]
fn postgres_transactions_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, port) = start_postgres(dir.path());
    let recipe = format!(
        "name: pg-rows
service:
  kind: postgres
  endpoint: postgres://127.0.0.1:{port}
  database: postgres
  auth:
    user: postgres
{}{QUICK}  postgres:
    mix: {{tpcb: 1, select: 1}}
    scale: 1
",
        monitoring_off()
    );
    let (out, run) = run_recipe(dir.path(), "pg", &recipe);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = run.unwrap();
    assert!(
        service_version(&run).starts_with("postgresql "),
        "{}",
        service_version(&run)
    );
    let rows = request_rows(&run);
    assert_all_ok(&rows);
    let tpcb = count(&rows, "tpcb");
    assert!(tpcb > 10 && count(&rows, "select") > 10);
    let mut c = postgres::Client::connect(
        &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        postgres::NoTls,
    )
    .unwrap();
    // One history row per committed transaction, and the balances add up.
    let history: i64 = c
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(history as usize, tpcb);
    let row = c
        .query_one(
            "SELECT (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::bigint,
                    (SELECT sum(abalance) FROM pgbench_accounts)::bigint,
                    (SELECT sum(bbalance) FROM pgbench_branches)::bigint,
                    (SELECT count(*) FROM pgbench_accounts)",
            &[],
        )
        .unwrap();
    let (delta, accounts, branches, n): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((accounts, branches, n), (delta, delta, 100_000));
}

fn garage() -> PathBuf {
    std::env::var_os("GARAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("garage/bin/garage"))
}

const GARAGE_KEY: &str = "GK0123456789abcdef01234567";
const GARAGE_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn s3_recipe(name: &str, port: u16, secret: &str, s3: &str) -> String {
    format!(
        "name: {name}
service:
  kind: s3
  endpoint: http://127.0.0.1:{port}
  region: garage
  health:
    timeout: 20s
  auth:
    user: {GARAGE_KEY}
    password: {secret}
{}{QUICK}  s3:
{s3}",
        monitoring_off()
    )
}

#[test]
fn s3_objects_round_trip_on_a_real_store() {
    let g = garage();
    assert!(
        g.is_file(),
        "{} missing: scripts/install-garage.sh builds it",
        g.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("garage");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let script = workspace().join("recipes/services/garage.sh");
    let log = dir.path().join("garage-script.log");
    let mut cmd = Command::new(&script);
    cmd.args([data.to_str().unwrap(), &port.to_string()])
        .env("GARAGE", &g);
    let _store = Server(
        cmd.stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("garage-script.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("garage key imported", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("S3 API on"))
    });

    let body = "    bucket: aifb-rows\n    objects: 20\n    object_size: 1000\n    mix: {put: 1, get: 1}\n";
    let (out, run) = run_recipe(
        dir.path(),
        "s3",
        &s3_recipe("s3-rows", port, GARAGE_SECRET, body),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = request_rows(&run.unwrap());
    assert_all_ok(&rows);
    assert!(count(&rows, "put") > 5 && count(&rows, "get") > 5);
    for r in &rows {
        match r.op.as_str() {
            "get" => assert_eq!(r.bytes_received, 1000, "{r:?}"),
            _ => assert_eq!(r.bytes_sent, 1000, "{r:?}"),
        }
        assert_eq!(r.status, Some(200));
    }
    // Read an object back with an independent signed GET.
    let bucket = rusty_s3::Bucket::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        "aifb-rows",
        "garage",
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(GARAGE_KEY, GARAGE_SECRET);
    use rusty_s3::S3Action;
    let url = rusty_s3::actions::GetObject::new(&bucket, Some(&creds), "aifb/3")
        .sign(Duration::from_secs(60));
    let got = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url.as_str())
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(got.as_ref(), payload(3, 1000).as_slice());

    // A missing bucket the recipe may not create, and a wrong secret: one-line input errors.
    let missing = "    bucket: no-such-bucket\n    create_bucket: false\n";
    let (out, _) = run_recipe(
        dir.path(),
        "s3-missing",
        &s3_recipe("s3-missing", port, GARAGE_SECRET, missing),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-bucket does not exist"),
        "{}",
        stderr(&out)
    );
    let wrong = &GARAGE_SECRET.replace('0', "f");
    let (out, _) = run_recipe(
        dir.path(),
        "s3-wrong",
        &s3_recipe("s3-wrong", port, wrong, body),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
}

fn chroma() -> PathBuf {
    std::env::var_os("AIFB_CHROMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("chroma-venv/bin/chroma"))
}

#[test]
fn chroma_vectors_are_indexed_and_found() {
    let exe = chroma();
    assert!(
        exe.is_file(),
        "{} missing: scripts/test.sh installs chromadb",
        exe.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("chroma");
    let _chroma = Server::start(
        &exe,
        &[
            "run",
            "--path",
            data.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
        Some(&dir.path().join("chroma.log")),
    );
    let base = format!("http://127.0.0.1:{port}");
    let recipe = |name: &str, vector: &str| {
        format!(
            "name: {name}
service:
  kind: chroma
  endpoint: {base}
  health:
    timeout: 60s
{}{QUICK}  vector:
{vector}",
            monitoring_off()
        )
    };
    let v = "    collection: rows\n    dimension: 16\n    preload: 300\n    mix: {query: 3, upsert: 1}\n    top_k: 5\n";
    let (out, run) = run_recipe(dir.path(), "chroma", &recipe("chroma-rows", v));
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = request_rows(&run.unwrap());
    assert_all_ok(&rows);
    assert!(count(&rows, "query") > 5 && count(&rows, "upsert") > 0);

    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let prefix =
        format!("{base}/api/v2/tenants/default_tenant/databases/default_database/collections");
    let meta: serde_json::Value = http
        .get(format!("{prefix}/rows"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = meta["id"].as_str().unwrap();
    let n: u64 = http
        .get(format!("{prefix}/{id}/count"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // Upserts overwrite preloaded ids: the collection holds exactly the preload.
    assert_eq!(n, 300);
    let hit: serde_json::Value = http
        .post(format!("{prefix}/{id}/query"))
        .json(&serde_json::json!({"query_embeddings": [vector(7, 16)], "n_results": 1}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hit["ids"][0][0], "7", "{hit}");

    let missing = "    collection: absent\n    recreate: false\n    dimension: 16\n";
    let (out, _) = run_recipe(
        dir.path(),
        "chroma-missing",
        &recipe("chroma-missing", missing),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("collection absent does not exist"),
        "{}",
        stderr(&out)
    );
}

/// What the stand-in Qdrant saw: method, path, `api-key` header and JSON body.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, serde_json::Value)>>>;

/// Serves Qdrant's REST answers as its API reference documents them, recording every
/// request; collection `absent` does not exist.
fn documented_qdrant(seen: Seen) -> (u16, std::thread::JoinHandle<()>) {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use serde_json::json;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                    let seen = seen.clone();
                    async move {
                        let path = uri.path().to_string();
                        let key = headers.get("api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
                        let json_body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        seen.lock().unwrap().push((method.to_string(), uri.to_string(), key, json_body));
                        let ok = |result: serde_json::Value| {
                            (StatusCode::OK, axum::Json(json!({"result": result, "status": "ok", "time": 0.0002})))
                        };
                        if path == "/readyz" {
                            return (StatusCode::OK, axum::Json(json!("all shards are ready")));
                        }
                        if path.starts_with("/collections/absent") {
                            return (
                                StatusCode::NOT_FOUND,
                                axum::Json(json!({"status": {"error": "Not found: Collection `absent` doesn't exist!"}, "time": 0.0001})),
                            );
                        }
                        match (method.as_str(), path.ends_with("/points/query"), path.ends_with("/points")) {
                            ("POST", true, _) => ok(json!({"points": [{"id": 7, "version": 3, "score": 0.99}]})),
                            ("PUT", _, true) => ok(json!({"operation_id": 1, "status": "completed"})),
                            _ => ok(json!(true)),
                        }
                    }
                },
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        });
    });
    (port, handle)
}

#[test]
fn qdrant_driver_speaks_the_documented_rest_api() {
    let seen: Seen = Arc::default();
    let (port, _server) = documented_qdrant(seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let recipe = |name: &str, vector: &str| {
        format!(
            "name: {name}
service:
  kind: qdrant
  endpoint: http://127.0.0.1:{port}
  auth:
    password: qdrant-key
{}{QUICK}  vector:
{vector}",
            monitoring_off()
        )
    };
    let v = "    collection: bench\n    dimension: 8\n    preload: 700\n    mix: {query: 1, upsert: 1}\n    top_k: 3\n    batch: 2\n";
    let (out, run) = run_recipe(dir.path(), "qdrant", &recipe("qdrant-rows", v));
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = request_rows(&run.unwrap());
    assert_all_ok(&rows);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .filter(|(_, p, _, _)| p != "/readyz")
            .all(|(_, _, key, _)| key.as_deref() == Some("qdrant-key")),
        "the API key goes with every request but the (unauthenticated) health check: {:?}",
        seen.iter()
            .filter(|(_, _, k, _)| k.is_none())
            .map(|(m, p, _, _)| format!("{m} {p}"))
            .collect::<Vec<_>>()
    );
    let create = seen
        .iter()
        .find(|(m, p, _, _)| m == "PUT" && p == "/collections/bench")
        .expect("collection created");
    assert_eq!(
        create.3["vectors"],
        serde_json::json!({"size": 8, "distance": "Cosine"})
    );
    let delete = seen
        .iter()
        .position(|(m, p, _, _)| m == "DELETE" && p == "/collections/bench");
    let created = seen
        .iter()
        .position(|(m, p, _, _)| m == "PUT" && p == "/collections/bench");
    assert!(delete < created, "recreate deletes first");
    let upserts: Vec<_> = seen
        .iter()
        .filter(|(m, p, _, _)| m == "PUT" && p == "/collections/bench/points?wait=true")
        .collect();
    // Preload: 700 points in batches of 500, then 2 per upsert request.
    assert_eq!(upserts[0].3["points"].as_array().unwrap().len(), 500);
    assert_eq!(upserts[1].3["points"].as_array().unwrap().len(), 200);
    assert_eq!(upserts[2].3["points"].as_array().unwrap().len(), 2);
    assert_eq!(
        upserts[0].3["points"][3]["vector"],
        serde_json::json!(vector(3, 8))
    );
    let query = seen
        .iter()
        .find(|(_, p, _, _)| p.ends_with("/points/query"))
        .expect("a query");
    assert_eq!(query.3["limit"], 3);
    assert_eq!(query.3["query"].as_array().unwrap().len(), 8);
    assert_eq!(count(&rows, "query") + count(&rows, "upsert"), rows.len());

    let (out, _) = run_recipe(
        dir.path(),
        "qdrant-missing",
        &recipe(
            "qdrant-missing",
            "    collection: absent\n    recreate: false\n",
        ),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("collection absent does not exist"),
        "{}",
        stderr(&out)
    );
}

fn start_sim() -> (Server, u16) {
    let port = free_port();
    let sim = Server::start(
        bin("loadgen"),
        &["sim", "--listen", &format!("127.0.0.1:{port}")],
        None,
    );
    wait_until("simulator", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (sim, port)
}

#[test]
fn ollama_vllm_and_http_drivers_against_the_simulator() {
    let (_sim, port) = start_sim();
    let dir = tempfile::tempdir().unwrap();
    let llm = |name: &str, kind: &str, op: &str| {
        format!(
            "name: {name}
service:
  kind: {kind}
  endpoint: http://127.0.0.1:{port}
{}{QUICK}  request:
    op: {op}
    prompt_tokens: 24
    max_tokens: 6
",
            monitoring_off()
        )
    };
    for (kind, op) in [
        ("ollama", "chat"),
        ("ollama", "completion"),
        ("vllm", "chat"),
    ] {
        let (out, run) = run_recipe(
            dir.path(),
            &format!("{kind}-{op}"),
            &llm(&format!("{kind}-{op}"), kind, op),
        );
        assert!(out.status.success(), "{kind} {op}: {}", stderr(&out));
        let run = run.unwrap();
        let rows = request_rows(&run);
        assert_all_ok(&rows);
        // The manifest records what the server said it serves.
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert_eq!(
            manifest["environment"]["service_models"],
            serde_json::json!(["sim-llm"]),
            "{kind}"
        );
        if kind == "ollama" {
            // Ollama's own durations, from its final NDJSON line, reach metrics.parquet.
            let samples = aifb_core::metrics::read(&run.join("metrics.parquet")).unwrap();
            let eval = samples.iter().filter(|s| {
                s.metric == "aifb_loadgen_server_reported_duration_seconds_count"
                    && s.labels.iter().any(|(k, v)| k == "phase" && v == "eval")
            });
            assert!(
                eval.map(|s| s.value).fold(0.0, f64::max) >= 1.0,
                "no server-reported eval durations"
            );
        }
        for r in &rows {
            assert_eq!(r.op, op);
            assert_eq!(
                (r.prompt_tokens, r.output_tokens, r.chunks),
                (Some(24), Some(6), Some(6)),
                "{kind}: {r:?}"
            );
            let ft = r.t_first_token.expect("first token");
            assert!(r.t_sent < ft && ft < r.t_end, "{r:?}");
        }
    }
    let http = |name: &str, expect: &str| {
        format!(
            "name: {name}
service:
  kind: http
  endpoint: http://127.0.0.1:{port}
  health:
    path: /health
{}{QUICK}  http:
    path: /v1/models
    expect_status: [{expect}]
",
            monitoring_off()
        )
    };
    let (out, run) = run_recipe(dir.path(), "http-ok", &http("http-ok", "200"));
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = request_rows(&run.unwrap());
    assert_all_ok(&rows);
    assert!(
        rows.iter()
            .all(|r| r.op == "http" && r.status == Some(200) && r.bytes_received > 20)
    );
    // A status outside the success list fails every request, and the run says so.
    let (out, run) = run_recipe(dir.path(), "http-bad", &http("http-bad", "201"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows = request_rows(&run.unwrap());
    assert!(
        rows.iter()
            .all(|r| !r.ok && r.error.as_deref() == Some("protocol"))
    );
}

/// The shipped recipes: all valid; those whose servers run here start them through their
/// own command and complete a shortened sweep.
#[test]
fn shipped_recipes_start_their_services() {
    let recipes = workspace().join("recipes");
    for entry in std::fs::read_dir(&recipes).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = aifb(&recipes, &["validate", p.to_str().unwrap()]);
            assert!(out.status.success(), "{}: {}", p.display(), stderr(&out));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let chroma_dir = chroma().parent().unwrap().to_path_buf();
    let garage_dir = garage().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}:{}",
        chroma_dir.display(),
        garage_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for name in ["redis", "postgres", "s3", "chroma"] {
        let mut r = aifb_core::recipe::Recipe::load(&recipes.join(format!("{name}.yaml"))).unwrap();
        r.workload.levels = vec![1.0, 2.0];
        r.workload.warmup = aifb_core::duration::HumanDuration::millis(200);
        r.workload.measure = aifb_core::duration::HumanDuration::millis(700);
        r.workload.cooldown = aifb_core::duration::HumanDuration::millis(0);
        r.monitoring.exporter.enabled = false;
        if let Some(v) = r.workload.vector.as_mut() {
            v.preload = 200;
        }
        for a in &mut r.service.command {
            *a = a.replace("{recipe_dir}", recipes.to_str().unwrap());
        }
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, r.to_yaml()).unwrap();
        let runs = dir.path().join(format!("runs-{name}"));
        let out = Command::new(bin("aifb"))
            .args([
                "run",
                file.to_str().unwrap(),
                "--out",
                runs.to_str().unwrap(),
            ])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let run = only_run(&runs);
        let rows = request_rows(&run);
        assert_all_ok(&rows);
        // The service's throwaway data dir is gone with the run.
        let id = run.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            !std::env::temp_dir()
                .join(format!("aifb-{id}-data"))
                .exists(),
            "{name}"
        );
    }
}

/// An OpenAI-compatible server that misbehaves in turn: request n gets a good stream
/// (n mod 4 = 0), a reset connection (1), a garbage stream (2) or a stream that stalls
/// past the request timeout (3).
fn misbehaving_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                // Read the request head and body.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_len = loop {
                    let Ok(k) = s.read(&mut chunk) else { return };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        break end + 4 + len;
                    }
                };
                while buf.len() < body_len {
                    let Ok(k) = s.read(&mut chunk) else { return };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let token = r#"data: {"choices":[{"index":0,"delta":{"content":" hi"},"finish_reason":null}]}"#;
                let last = r#"data: {"choices":[{"index":0,"delta":{"content":" end"},"finish_reason":"length"}]}"#;
                match n % 4 {
                    0 => {
                        let _ = write!(s, "{head}{token}\n\n{last}\n\ndata: [DONE]\n\n");
                    }
                    1 => {
                        // The connection ends in the middle of a chunk of the body.
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n40\r\ndata: {\"cho",
                        );
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    2 => {
                        let _ = write!(s, "{head}{token}\n\ndata: {{not json at all\n\n");
                    }
                    _ => {
                        let _ = write!(s, "{head}{token}\n\n");
                        let _ = s.flush();
                        std::thread::sleep(Duration::from_secs(3));
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_misbehaving_server_gets_every_failure_classified_and_every_row_kept() {
    let port = misbehaving_server();
    let dir = tempfile::tempdir().unwrap();
    let recipe = format!(
        "name: faults
service:
  kind: openai
  endpoint: http://127.0.0.1:{port}
  health:
    path: /v1/models
{}workload:
  pattern: closed
  levels: [2]
  warmup: 0s
  measure: 2s
  cooldown: 0s
  timeout: 500ms
  request:
    max_tokens: 2
",
        monitoring_off()
    );
    let recipe_path = dir.path().join("faults.yaml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(bin("loadgen"))
        .args(["run", "--recipe", recipe_path.to_str().unwrap(), "--target"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    // Some requests succeeded: the run completes.
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = aifb_core::requests::read(&out_dir.join("requests.parquet"))
        .unwrap()
        .rows;
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *classes
            .entry(r.error.clone().unwrap_or_else(|| "ok".into()))
            .or_default() += 1;
    }
    for want in ["ok", "reset", "protocol", "timeout"] {
        assert!(classes.contains_key(want), "no {want}: {classes:?}");
    }
    assert!(
        classes
            .keys()
            .all(|k| ["ok", "reset", "protocol", "timeout", "cancelled"].contains(&k.as_str())),
        "{classes:?}"
    );
    // A good stream's rows are complete; a stalled one kept its first token.
    for r in rows.iter().filter(|r| r.ok) {
        assert_eq!((r.output_tokens, r.chunks), (Some(2), Some(2)), "{r:?}");
    }
    assert!(
        rows.iter()
            .any(|r| r.error.as_deref() == Some("timeout") && r.t_first_token.is_some())
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["stages"][0]["requests"].as_u64().unwrap() as usize,
        rows.len()
    );
}
