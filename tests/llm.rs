//! The loadgen against a real LLM server: llama.cpp's llama-server with Gemma 3 270M
//! (scripts/install-llama-server.sh builds and fetches both once into the cache). Token
//! counts must agree exactly with the server's own `/metrics` and `usage`, and each
//! request's time to first token must contain the server's own prompt time.

use std::time::Duration;

use aifb_tests::*;

fn llama_dir() -> std::path::PathBuf {
    std::env::var_os("AIFB_LLAMA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("llama"))
}

/// The value of one unlabelled series in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    aifb_core::promtext::parse(text)
        .unwrap_or_default()
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("{name} missing from llama-server's /metrics"))
}

#[test]
fn a_real_llm_server_agrees_with_the_loadgen() {
    let dir = llama_dir();
    let server = dir.join("bin/llama-server");
    let model = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        server.is_file() && model.is_file(),
        "{} or the model missing: scripts/install-llama-server.sh builds them",
        server.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _llm = Server::start(
        &server,
        &[
            "-m",
            model.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-c",
            "2048",
            "-np",
            "2",
            "-t",
            "1",
            "--metrics",
            "--alias",
            "gemma3-270m",
            "--chat-template",
            "gemma",
        ],
        Some(&tmp.path().join("llama.log")),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    wait_until("llama-server", Duration::from_secs(120), || {
        http.get(format!("{base}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    let scrape = || {
        http.get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let before = scrape();

    let recipe = format!(
        "name: llama
service:
  kind: openai
  endpoint: {base}
  model: gemma3-270m
monitoring:
  exporter:
    enabled: false
workload:
  pattern: closed
  levels: [1, 2]
  warmup: 0s
  measure: 3s
  cooldown: 0s
  timeout: 60s
  request:
    op: chat
    prompt_tokens: 16
    max_tokens: 12
    ignore_eos: true
"
    );
    let (out, run) = run_recipe(tmp.path(), "llama", &recipe);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run.unwrap();
    let after = scrape();
    let rows = request_rows(&run);
    assert!(rows.len() >= 4, "{} requests", rows.len());
    assert!(
        rows.iter().all(|r| r.ok),
        "{:?}",
        rows.iter().find(|r| !r.ok)
    );

    // Tokens: the server's usage says max_tokens (ignore_eos), and the loadgen's sums are
    // exactly what the server counted while the run lasted.
    for r in &rows {
        assert_eq!(r.output_tokens, Some(12), "{r:?}");
        // llama-server's usage counts the prompt tokens it processed: after the first
        // request most of the (identical) prompt comes from its cache.
        assert!(r.prompt_tokens.unwrap_or(0) >= 1, "{r:?}");
        assert!(r.chunks.unwrap_or(0) >= 1);
    }
    let predicted = metric(&after, "llamacpp:tokens_predicted_total")
        - metric(&before, "llamacpp:tokens_predicted_total");
    let sent: u32 = rows.iter().map(|r| r.output_tokens.unwrap_or(0)).sum();
    assert_eq!(predicted as u32, sent);
    let prompt_processed = metric(&after, "llamacpp:prompt_tokens_total")
        - metric(&before, "llamacpp:prompt_tokens_total");
    let prompt_sent: u32 = rows.iter().map(|r| r.prompt_tokens.unwrap_or(0)).sum();
    assert_eq!(
        prompt_processed as u32, prompt_sent,
        "prompt tokens processed"
    );

    // Time: each request's TTFT (from send) contains the server's prompt processing.
    let prompt_seconds = metric(&after, "llamacpp:prompt_seconds_total")
        - metric(&before, "llamacpp:prompt_seconds_total");
    let ttft: f64 = rows
        .iter()
        .map(|r| (r.t_first_token.unwrap() - r.t_sent) as f64 / 1e9)
        .sum();
    assert!(
        ttft >= prompt_seconds,
        "client TTFT {ttft} s < server prompt time {prompt_seconds} s"
    );

    // The server's own series were scraped into metrics.parquet on the run's clock, and the
    // manifest names the model it served.
    let samples = aifb_core::metrics::read(&run.join("metrics.parquet")).unwrap();
    assert!(
        samples
            .iter()
            .any(|s| s.source == "service" && s.metric == "llamacpp:tokens_predicted_total")
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert!(
        manifest["environment"]["service_models"]
            .to_string()
            .contains("gemma3-270m"),
        "{manifest}"
    );
}
