//! The OpenAI chat/completions driver: builds a request, streams the answer, and records
//! send, first byte, first token and end times, token counts (server `usage` preferred)
//! and the outcome.

use std::time::{Duration, Instant};

use aifb_core::recipe::{Operation, RequestShape};
use aifb_core::requests::error_class;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::sse::SseParser;

/// How one request went, in monotonic instants.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Written to the socket (just before).
    pub sent: Instant,
    /// Response headers received.
    pub first_byte: Option<Instant>,
    /// First chunk with content, reasoning or tool-call output.
    pub first_token: Option<Instant>,
    /// Arrival of every content chunk after the first (for inter-chunk latency).
    pub chunk_gaps: Vec<Duration>,
    /// Last byte or error.
    pub end: Instant,
    /// HTTP status.
    pub status: Option<u16>,
    /// Error class, `None` on success.
    pub error: Option<&'static str>,
    /// Request body bytes.
    pub bytes_sent: u64,
    /// Response body bytes.
    pub bytes_received: u64,
    /// Prompt tokens (usage, else the prompt's size).
    pub prompt_tokens: Option<u32>,
    /// Output tokens (usage, else counted chunks).
    pub output_tokens: Option<u32>,
    /// Content chunks received.
    pub chunks: u32,
}

/// A prompt of exactly `tokens` whitespace-separated words (one token each for the
/// simulator; close to one token per word for real tokenizers).
pub fn synthetic_prompt(tokens: u32, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "benchmark",
        "the",
        "service",
        "under",
        "steady",
        "load",
        "and",
        "report",
        "latency",
        "for",
        "every",
        "request",
        "with",
        "tokens",
        "per",
        "second",
    ];
    let mut out = String::with_capacity(tokens as usize * 8);
    for i in 0..tokens as u64 {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[((i.wrapping_mul(7).wrapping_add(seed)) % WORDS.len() as u64) as usize]);
    }
    out
}

/// Path and JSON body of a request.
pub fn request_body(shape: &RequestShape, model: &str, prompt: &str) -> (&'static str, Value) {
    let mut body = match shape.op {
        Operation::Chat => {
            json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
        }
        Operation::Completion => json!({"model": model, "prompt": prompt}),
    };
    body["max_tokens"] = json!(shape.max_tokens);
    if shape.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if shape.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    let path = match shape.op {
        Operation::Chat => "/v1/chat/completions",
        Operation::Completion => "/v1/completions",
    };
    (path, body)
}

fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        error_class::TIMEOUT
    } else if e.is_connect() {
        error_class::CONNECT
    } else if e.is_body() || e.is_decode() || e.is_request() {
        error_class::RESET
    } else {
        error_class::PROTOCOL
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        429 | 503 => error_class::BACKPRESSURE,
        400..=499 => error_class::HTTP_4XX,
        _ => error_class::HTTP_5XX,
    }
}

/// What a stream's chunks said, folded.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Content chunks seen.
    pub chunks: u32,
    /// A finish reason was seen.
    pub finished: bool,
    /// `[DONE]` was seen.
    pub done: bool,
    /// Server usage.
    pub usage: Option<(u32, u32)>,
    /// A mid-stream error object was seen.
    pub error: bool,
}

impl StreamState {
    /// Folds one SSE data payload; returns true when it carried content (a token).
    pub fn take(&mut self, data: &str) -> bool {
        if data == "[DONE]" {
            self.done = true;
            return false;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.error = true;
            return false;
        };
        if v.get("error").is_some() || v.get("object").and_then(Value::as_str) == Some("error") {
            self.error = true;
            return false;
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            let get = |k: &str| {
                u.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|x| u32::try_from(x).ok())
            };
            if let (Some(p), Some(c)) = (get("prompt_tokens"), get("completion_tokens")) {
                self.usage = Some((p, c));
            }
        }
        let mut content = false;
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for c in choices {
                let non_empty = |x: Option<&Value>| match x {
                    Some(Value::String(s)) => !s.is_empty(),
                    Some(Value::Array(a)) => !a.is_empty(),
                    _ => false,
                };
                let delta = c.get("delta");
                if non_empty(c.get("text"))
                    || non_empty(delta.and_then(|d| d.get("content")))
                    || non_empty(delta.and_then(|d| d.get("reasoning_content")))
                    || non_empty(delta.and_then(|d| d.get("reasoning")))
                    || non_empty(delta.and_then(|d| d.get("tool_calls")))
                {
                    content = true;
                }
                if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    self.finished = true;
                }
            }
        }
        if content {
            self.chunks += 1;
        }
        content
    }
}

/// Sends one request and follows it to the end.
pub async fn exchange(
    client: &reqwest::Client,
    base_url: &str,
    shape: &RequestShape,
    model: &str,
    prompt: &str,
    request_id: &str,
    timeout: Duration,
) -> Exchange {
    let (path, body) = request_body(shape, model, prompt);
    let payload = body.to_string();
    let bytes_sent = payload.len() as u64;
    let sent = Instant::now();
    let mut x = Exchange {
        sent,
        first_byte: None,
        first_token: None,
        chunk_gaps: Vec::new(),
        end: sent,
        status: None,
        error: None,
        bytes_sent,
        bytes_received: 0,
        prompt_tokens: None,
        output_tokens: None,
        chunks: 0,
    };
    let url = format!("{base_url}{path}");
    let fut = run(client, &url, payload, request_id, shape.stream, &mut x);
    if tokio::time::timeout(timeout, fut).await.is_err() {
        x.error = Some(error_class::TIMEOUT);
    }
    x.end = Instant::now();
    if x.prompt_tokens.is_none() {
        x.prompt_tokens =
            Some(u32::try_from(prompt.split_whitespace().count()).unwrap_or(u32::MAX));
    }
    x
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    payload: String,
    request_id: &str,
    stream: bool,
    x: &mut Exchange,
) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .body(payload)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            x.error = Some(classify(&e));
            return;
        }
    };
    x.first_byte = Some(Instant::now());
    let status = resp.status().as_u16();
    x.status = Some(status);
    if !resp.status().is_success() {
        x.error = Some(status_class(status));
        if let Ok(b) = resp.bytes().await {
            x.bytes_received = b.len() as u64;
        }
        return;
    }
    if !stream {
        match resp.bytes().await {
            Ok(b) => {
                x.bytes_received = b.len() as u64;
                match serde_json::from_slice::<Value>(&b) {
                    Ok(v) if v.get("choices").is_some() => {
                        let u = v.get("usage");
                        let get = |k: &str| {
                            u.and_then(|u| u.get(k))
                                .and_then(Value::as_u64)
                                .and_then(|n| u32::try_from(n).ok())
                        };
                        x.prompt_tokens = get("prompt_tokens");
                        x.output_tokens = get("completion_tokens");
                        x.first_token = Some(Instant::now());
                    }
                    _ => x.error = Some(error_class::PROTOCOL),
                }
            }
            Err(e) => x.error = Some(classify(&e)),
        }
        return;
    }
    let mut parser = SseParser::default();
    let mut state = StreamState::default();
    let mut last_chunk: Option<Instant> = None;
    let mut body = resp.bytes_stream();
    while let Some(item) = body.next().await {
        match item {
            Ok(bytes) => {
                let now = Instant::now();
                x.bytes_received += bytes.len() as u64;
                for data in parser.push(&bytes) {
                    if state.take(&data) {
                        if x.first_token.is_none() {
                            x.first_token = Some(now);
                        }
                        if let Some(prev) = last_chunk {
                            x.chunk_gaps.push(now - prev);
                        }
                        last_chunk = Some(now);
                    }
                }
            }
            Err(e) => {
                x.error = Some(classify(&e));
                break;
            }
        }
    }
    if let Some(data) = parser.finish() {
        state.take(&data);
    }
    x.chunks = state.chunks;
    match state.usage {
        Some((p, c)) => {
            x.prompt_tokens = Some(p);
            x.output_tokens = Some(c);
        }
        None => x.output_tokens = Some(state.chunks),
    }
    if x.error.is_none() {
        if state.error {
            x.error = Some(error_class::PROTOCOL);
        } else if !state.finished {
            x.error = Some(error_class::TRUNCATED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_exact_word_count() {
        assert_eq!(synthetic_prompt(64, 3).split_whitespace().count(), 64);
        assert_eq!(synthetic_prompt(0, 3), "");
    }

    #[test]
    fn stream_state_reads_vllm_chunks() {
        let mut s = StreamState::default();
        assert!(!s.take(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#));
        assert!(
            s.take(r#"{"choices":[{"index":0,"delta":{"content":" hi"},"finish_reason":null}]}"#)
        );
        assert!(s.take(r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":"length"}]}"#));
        assert!(!s.take(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#
        ));
        assert!(!s.take("[DONE]"));
        assert_eq!(
            (s.chunks, s.finished, s.done, s.usage, s.error),
            (2, true, true, Some((5, 2)), false)
        );
        let mut e = StreamState::default();
        e.take(r#"{"object":"error","message":"boom"}"#);
        assert!(e.error);
        let mut g = StreamState::default();
        g.take("not json");
        assert!(g.error);
    }

    #[test]
    fn body_asks_for_usage_when_streaming() {
        let shape = RequestShape::default();
        let (path, body) = request_body(&shape, "m", "a b");
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert_eq!(body["max_tokens"], json!(64));
    }
}
