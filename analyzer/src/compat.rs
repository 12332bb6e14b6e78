//! The headline numbers of other LLM benchmarks, computed from aifb's own rows, so a run
//! can be set beside a result of vLLM's `benchmark_serving`, GuideLLM or AIPerf without
//! running them. Each peer defines its metrics a little differently; the definitions
//! below are theirs, applied to the successful requests of one stage's measured window.
//!
//! | metric | vLLM benchmark_serving | GuideLLM | AIPerf |
//! |---|---|---|---|
//! | duration | first send to last end | first send to last end | first send to last end |
//! | TTFT | first token − send | same | same |
//! | TPOT | (E2E − TTFT) / (n − 1), n > 1 | (last token − first token) / n | – |
//! | ITL | every gap between streamed chunks (needs chunks.parquet) | (last token − first token) / (n − 1) | (E2E − TTFT) / (n − 1) |
//! | E2E | end − send | end − send (`request_latency`, s) | end − send |
//! | throughput | completed / duration; output and total tokens / duration | requests/s; output and total tokens per second of each request | requests/s; output tokens / duration; per user 1 / ITL |
//!
//! Percentiles are NumPy's default (linear interpolation between closest ranks), as all
//! three use. `last token` is the last chunk of chunks.parquet when the run kept it, else
//! the end of the response (the `[DONE]` that follows the last token).

use std::collections::{BTreeMap, HashMap};

use aifb_core::chunks::ChunkRecord;
use aifb_core::requests::RequestRow;
use serde_json::{Map, Value, json};

/// A peer whose numbers are reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// vLLM's `benchmarks/benchmark_serving.py` (`vllm bench serve`).
    Vllm,
    /// GuideLLM.
    Guidellm,
    /// NVIDIA AIPerf (GenAI-Perf's successor).
    Aiperf,
}

impl Peer {
    /// Parses `vllm`, `guidellm` or `aiperf`.
    pub fn parse(s: &str) -> Option<Peer> {
        match s {
            "vllm" => Some(Peer::Vllm),
            "guidellm" => Some(Peer::Guidellm),
            "aiperf" => Some(Peer::Aiperf),
            _ => None,
        }
    }
}

/// NumPy's default percentile (`linear`): rank p/100·(n−1) between the closest values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = p / 100.0 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Population standard deviation (`np.std`).
fn std(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// `mean_X`, `median_X`, `std_X`, `p99_X` (vLLM's keys; milliseconds).
fn vllm_stats(out: &mut Map<String, Value>, name: &str, values_ms: Vec<f64>) {
    let v = sorted(values_ms);
    out.insert(format!("mean_{name}_ms"), json!(mean(&v)));
    out.insert(format!("median_{name}_ms"), json!(percentile(&v, 50.0)));
    out.insert(format!("std_{name}_ms"), json!(std(&v)));
    out.insert(format!("p99_{name}_ms"), json!(percentile(&v, 99.0)));
}

/// `{mean, median, p90, p95, p99}` of a distribution (GuideLLM's and AIPerf's summaries).
fn summary(values: Vec<f64>) -> Value {
    let v = sorted(values);
    json!({
        "count": v.len(),
        "mean": mean(&v),
        "median": percentile(&v, 50.0),
        "p90": percentile(&v, 90.0),
        "p95": percentile(&v, 95.0),
        "p99": percentile(&v, 99.0),
        "min": v.first(),
        "max": v.last(),
    })
}

const MS: f64 = 1e-6;

/// The peer's numbers for one stage: `rows` are the stage's requests (all phases; only
/// the measured, successful ones count), `chunks` its streamed chunks by request id.
pub fn stage(peer: Peer, rows: &[&RequestRow], chunks: &HashMap<&str, Vec<&ChunkRecord>>) -> Value {
    let ok: Vec<&&RequestRow> = rows
        .iter()
        .filter(|r| r.ok && r.phase == "measure")
        .collect();
    let failed = rows
        .iter()
        .filter(|r| !r.ok && r.phase == "measure")
        .count();
    let start = ok.iter().map(|r| r.t_sent).min();
    let end = ok.iter().map(|r| r.t_end).max();
    let duration_s = match (start, end) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let per_s = |x: f64| (duration_s > 0.0).then(|| x / duration_s);
    let n_out = |r: &RequestRow| r.output_tokens.unwrap_or(0);
    let n_in = |r: &RequestRow| r.prompt_tokens.unwrap_or(0);
    let total_out: u64 = ok.iter().map(|r| u64::from(n_out(r))).sum();
    let total_in: u64 = ok.iter().map(|r| u64::from(n_in(r))).sum();
    let e2e_ns = |r: &RequestRow| (r.t_end - r.t_sent) as f64;
    let ttft_ns = |r: &RequestRow| r.t_first_token.map(|f| (f - r.t_sent) as f64);
    let last_token = |r: &RequestRow| {
        chunks
            .get(r.request_id.as_str())
            .and_then(|c| c.last().map(|c| c.t))
            .unwrap_or(r.t_end)
    };
    let ttft_ms: Vec<f64> = ok
        .iter()
        .filter_map(|r| ttft_ns(r))
        .map(|x| x * MS)
        .collect();
    let mut out = Map::new();
    match peer {
        Peer::Vllm => {
            out.insert("duration".into(), json!(duration_s));
            out.insert("completed".into(), json!(ok.len()));
            out.insert("failed".into(), json!(failed));
            out.insert("total_input_tokens".into(), json!(total_in));
            out.insert("total_output_tokens".into(), json!(total_out));
            out.insert("request_throughput".into(), json!(per_s(ok.len() as f64)));
            out.insert("output_throughput".into(), json!(per_s(total_out as f64)));
            out.insert(
                "total_token_throughput".into(),
                json!(per_s((total_in + total_out) as f64)),
            );
            vllm_stats(&mut out, "ttft", ttft_ms.clone());
            vllm_stats(
                &mut out,
                "tpot",
                ok.iter()
                    .filter(|r| n_out(r) > 1)
                    .filter_map(|r| Some((e2e_ns(r) - ttft_ns(r)?) / f64::from(n_out(r) - 1) * MS))
                    .collect(),
            );
            let itl: Vec<f64> = ok
                .iter()
                .filter_map(|r| chunks.get(r.request_id.as_str()))
                .flat_map(|c| c.windows(2).map(|w| (w[1].t - w[0].t) as f64 * MS))
                .collect();
            if itl.is_empty() {
                // vLLM's ITL is per chunk: without chunks.parquet it cannot be computed.
                for k in ["mean", "median", "std", "p99"] {
                    out.insert(format!("{k}_itl_ms"), Value::Null);
                }
            } else {
                vllm_stats(&mut out, "itl", itl);
            }
            vllm_stats(
                &mut out,
                "e2el",
                ok.iter().map(|r| e2e_ns(r) * MS).collect(),
            );
        }
        Peer::Guidellm => {
            out.insert("duration".into(), json!(duration_s));
            out.insert("successful_requests".into(), json!(ok.len()));
            out.insert("errored_requests".into(), json!(failed));
            out.insert("requests_per_second".into(), json!(per_s(ok.len() as f64)));
            out.insert(
                "request_latency".into(),
                summary(ok.iter().map(|r| e2e_ns(r) / 1e9).collect()),
            );
            out.insert("time_to_first_token_ms".into(), summary(ttft_ms.clone()));
            out.insert(
                "time_per_output_token_ms".into(),
                summary(
                    ok.iter()
                        .filter(|r| n_out(r) > 0 && r.t_first_token.is_some())
                        .filter_map(|r| {
                            Some(
                                (last_token(r) - r.t_first_token?) as f64 / f64::from(n_out(r))
                                    * MS,
                            )
                        })
                        .collect(),
                ),
            );
            out.insert(
                "inter_token_latency_ms".into(),
                summary(
                    ok.iter()
                        .filter(|r| n_out(r) > 1 && r.t_first_token.is_some())
                        .filter_map(|r| {
                            Some(
                                (last_token(r) - r.t_first_token?) as f64 / f64::from(n_out(r) - 1)
                                    * MS,
                            )
                        })
                        .collect(),
                ),
            );
            out.insert(
                "output_tokens_per_second".into(),
                summary(
                    ok.iter()
                        .map(|r| f64::from(n_out(r)) / (e2e_ns(r) / 1e9))
                        .collect(),
                ),
            );
            out.insert(
                "tokens_per_second".into(),
                summary(
                    ok.iter()
                        .map(|r| f64::from(n_out(r) + n_in(r)) / (e2e_ns(r) / 1e9))
                        .collect(),
                ),
            );
        }
        Peer::Aiperf => {
            let itl: Vec<f64> = ok
                .iter()
                .filter(|r| n_out(r) > 1)
                .filter_map(|r| Some((e2e_ns(r) - ttft_ns(r)?) / f64::from(n_out(r) - 1)))
                .collect();
            out.insert("benchmark_duration".into(), json!(duration_s));
            out.insert("request_count".into(), json!(ok.len()));
            out.insert("error_request_count".into(), json!(failed));
            out.insert("request_throughput".into(), json!(per_s(ok.len() as f64)));
            out.insert(
                "output_token_throughput".into(),
                json!(per_s(total_out as f64)),
            );
            out.insert("time_to_first_token".into(), summary(ttft_ms.clone()));
            out.insert(
                "inter_token_latency".into(),
                summary(itl.iter().map(|x| x * MS).collect()),
            );
            out.insert(
                "request_latency".into(),
                summary(ok.iter().map(|r| e2e_ns(r) * MS).collect()),
            );
            out.insert(
                "output_token_throughput_per_user".into(),
                summary(itl.iter().filter(|x| **x > 0.0).map(|x| 1e9 / x).collect()),
            );
            out.insert(
                "output_sequence_length".into(),
                summary(ok.iter().map(|r| f64::from(n_out(r))).collect()),
            );
            out.insert(
                "input_sequence_length".into(),
                summary(ok.iter().map(|r| f64::from(n_in(r))).collect()),
            );
        }
    }
    Value::Object(out)
}

/// The peer's numbers for every stage of a run: `[{stage, level, metrics}]`.
pub fn run(peer: Peer, rows: &[RequestRow], chunks: &[ChunkRecord]) -> Value {
    let mut by_request: HashMap<&str, Vec<&ChunkRecord>> = HashMap::new();
    for c in chunks {
        by_request.entry(c.request_id.as_str()).or_default().push(c);
    }
    for v in by_request.values_mut() {
        v.sort_by_key(|c| c.t);
    }
    let mut stages: BTreeMap<u32, Vec<&RequestRow>> = BTreeMap::new();
    for r in rows {
        stages.entry(r.stage).or_default().push(r);
    }
    Value::Array(
        stages
            .into_iter()
            .map(|(s, rs)| {
                let level = rs
                    .first()
                    .and_then(|r| r.concurrency.map(f64::from).or(r.rate));
                json!({"stage": s, "level": level, "metrics": stage(peer, &rs, &by_request)})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS_NS: i64 = 1_000_000;

    /// Equal within floating-point rounding.
    fn close(v: &Value, want: f64) {
        let got = v.as_f64().unwrap_or(f64::NAN);
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{got} != {want}"
        );
    }

    /// A measured, successful request sent at `sent` ms with first token at +`ttft` ms,
    /// ending at +`e2e` ms with `n` output tokens.
    fn req(id: &str, sent: i64, ttft: i64, e2e: i64, n: u32) -> RequestRow {
        RequestRow {
            stage: 0,
            concurrency: Some(2),
            phase: "measure".into(),
            ok: true,
            t_sent: sent * MS_NS,
            t_first_token: Some((sent + ttft) * MS_NS),
            t_end: (sent + e2e) * MS_NS,
            prompt_tokens: Some(10),
            output_tokens: Some(n),
            request_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn numpy_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert!((percentile(&v, 99.0).unwrap() - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn vllm_numbers_by_hand() {
        // Two requests: 0 ms → TTFT 100, E2E 500, 5 tokens; 1000 ms → TTFT 200, E2E 1000,
        // 9 tokens. Duration: 0 to 2000 ms.
        let rows = [req("a", 0, 100, 500, 5), req("b", 1000, 200, 1000, 9)];
        let refs: Vec<&RequestRow> = rows.iter().collect();
        let chunk = |t_ms: i64| ChunkRecord {
            request_id: "a".into(),
            t: t_ms * MS_NS,
            tokens: None,
            answer: true,
        };
        let a_chunks = [chunk(100), chunk(150), chunk(300)];
        let mut map = HashMap::new();
        map.insert("a", a_chunks.iter().collect::<Vec<_>>());
        let v = stage(Peer::Vllm, &refs, &map);
        close(&v["duration"], 2.0);
        assert_eq!(v["completed"], 2);
        close(&v["request_throughput"], 1.0);
        close(&v["output_throughput"], 7.0);
        close(&v["total_token_throughput"], 17.0);
        close(&v["mean_ttft_ms"], 150.0);
        close(&v["median_ttft_ms"], 150.0);
        close(&v["std_ttft_ms"], 50.0);
        // TPOT: (500−100)/4 = 100 and (1000−200)/8 = 100.
        close(&v["mean_tpot_ms"], 100.0);
        // ITL: the chunk gaps 50 and 150 of request a.
        close(&v["mean_itl_ms"], 100.0);
        close(&v["p99_itl_ms"], 149.0);
        close(&v["mean_e2el_ms"], 750.0);
    }

    #[test]
    fn guidellm_and_aiperf_numbers_by_hand() {
        let rows = [req("a", 0, 100, 500, 5), req("b", 1000, 200, 1000, 9)];
        let refs: Vec<&RequestRow> = rows.iter().collect();
        let none = HashMap::new();
        let g = stage(Peer::Guidellm, &refs, &none);
        close(&g["requests_per_second"], 1.0);
        // Without chunks the last token is the end: (500−100)/5 = 80, (1000−200)/9.
        close(
            &g["time_per_output_token_ms"]["median"],
            (80.0 + 800.0 / 9.0) / 2.0,
        );
        close(&g["inter_token_latency_ms"]["mean"], 100.0);
        close(&g["request_latency"]["mean"], 0.75);
        close(&g["output_tokens_per_second"]["mean"], 9.5);
        let a = stage(Peer::Aiperf, &refs, &none);
        close(&a["inter_token_latency"]["mean"], 100.0);
        close(&a["output_token_throughput_per_user"]["mean"], 10.0);
        close(&a["output_token_throughput"], 7.0);
        close(&a["time_to_first_token"]["p99"], 199.0);
    }

    #[test]
    fn failures_and_warmup_do_not_count() {
        let mut bad = req("x", 0, 10, 20, 2);
        bad.ok = false;
        let mut warm = req("w", 0, 10, 20, 2);
        warm.phase = "warmup".into();
        let rows = [bad, warm, req("a", 0, 100, 500, 5)];
        let refs: Vec<&RequestRow> = rows.iter().collect();
        let v = stage(Peer::Vllm, &refs, &HashMap::new());
        assert_eq!(v["completed"], 1);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["mean_itl_ms"], Value::Null);
    }
}
