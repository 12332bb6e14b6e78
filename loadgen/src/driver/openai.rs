//! The OpenAI chat/completions driver (the simulator, vLLM, llama-server and every other
//! OpenAI-compatible server): builds a request, streams the answer, and records send,
//! first byte, first token and end times, token counts (server `usage` preferred) and the
//! outcome. For vLLM it also asks for usage in every chunk (`continuous_usage_stats`).

use std::time::Instant;

use aifb_core::recipe::{Operation, RequestShape, ServiceKind};
use aifb_core::requests::error_class;
use serde_json::{Value, json};

use super::{
    Call, Driver, DriverError, Exchange, Spec, classify, http_client, http_ping, read_stream, send,
    status_class,
};
use crate::dataset::{Prompt, Prompts};
use crate::sse::SseParser;

/// The OpenAI driver.
#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    base: String,
    shape: RequestShape,
    model: String,
    prompts: Prompts,
    health: Option<String>,
    token: Option<String>,
    /// The lean HTTP/1.1 client for `http://` targets.
    lean: Option<std::sync::Arc<Lean>>,
}

/// The lean client's target and the request target of the recipe's operation.
#[derive(Debug)]
struct Lean {
    target: super::h1::Target,
    head: super::h1::Head,
}

impl Lean {
    fn new(spec: &Spec, op: Operation) -> Option<Lean> {
        let target = super::h1::Target::new(
            &spec.target,
            spec.connections.max(64) as usize,
            spec.secret.as_deref(),
        )?
        .with_header("content-type", "application/json")?;
        Some(Lean {
            head: target.head(&reqwest::Method::POST, path(op))?,
            target,
        })
    }
}

impl Driver for OpenAi {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let r = &spec.recipe;
        let mut shape = r.workload.request.clone();
        if shape.continuous_usage_stats.is_none() {
            shape.continuous_usage_stats = Some(r.service.kind == ServiceKind::Vllm);
        }
        Ok(OpenAi {
            lean: Lean::new(spec, shape.op).map(std::sync::Arc::new),
            client: http_client(spec.connections)?,
            base: spec.target.clone(),
            prompts: Prompts::for_workload(&r.workload).map_err(DriverError::permanent)?,
            shape,
            model: r.service.model.clone(),
            health: r.service.health_path(),
            token: spec.secret.clone(),
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        let path = self.health.as_deref().unwrap_or("/v1/models");
        http_ping(&self.client, &format!("{}{path}", self.base)).await
    }

    async fn setup(&self) -> Result<(), DriverError> {
        Ok(())
    }

    fn op(&self, _seq: u64) -> &'static str {
        self.shape.op.name()
    }

    async fn call(&self, call: Call<'_>) -> Exchange {
        if let Some(lean) = &self.lean {
            return exchange_lean(
                lean,
                &self.shape,
                &self.model,
                self.prompts.get(call.entry.unwrap_or(call.seq)),
                call,
            )
            .await;
        }
        exchange(
            &self.client,
            &self.base,
            &self.shape,
            &self.model,
            self.prompts.get(call.entry.unwrap_or(call.seq)),
            call,
            self.token.as_deref(),
        )
        .await
    }

    async fn identity(&self) -> super::Identity {
        let models = super::get_json(&self.client, &format!("{}/v1/models", self.base))
            .await
            .and_then(|v| {
                v["data"].as_array().map(|d| {
                    d.iter()
                        .filter_map(|m| m["id"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        // vLLM answers /version; other servers may not.
        let version = super::get_json(&self.client, &format!("{}/version", self.base))
            .await
            .and_then(|v| v["version"].as_str().map(|s| format!("vllm {s}")));
        super::Identity { version, models }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        Ok(())
    }
}

/// Path and JSON body of a request.
pub fn request_body(
    shape: &RequestShape,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> (&'static str, Value) {
    let mut body = match shape.op {
        Operation::Chat => {
            json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
        }
        Operation::Completion => json!({"model": model, "prompt": prompt}),
    };
    body["max_tokens"] = json!(max_tokens);
    if shape.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if shape.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if shape.stream && shape.continuous_usage_stats == Some(true) {
        body["stream_options"]["continuous_usage_stats"] = json!(true);
    }
    (path(shape.op), body)
}

/// The API path of an operation.
pub fn path(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "/v1/chat/completions",
        Operation::Completion => "/v1/completions",
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
    /// The last content chunk carried answer output (not reasoning only).
    pub answer: bool,
    /// Completion tokens the last frame's usage counted (continuous usage stats).
    pub frame_completion: Option<u32>,
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
        self.frame_completion = None;
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            let get = |k: &str| {
                u.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|x| u32::try_from(x).ok())
            };
            if let (Some(p), Some(c)) = (get("prompt_tokens"), get("completion_tokens")) {
                self.usage = Some((p, c));
                self.frame_completion = Some(c);
            }
        }
        let mut content = false;
        let mut answer = false;
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for c in choices {
                let non_empty = |x: Option<&Value>| match x {
                    Some(Value::String(s)) => !s.is_empty(),
                    Some(Value::Array(a)) => !a.is_empty(),
                    _ => false,
                };
                let delta = c.get("delta");
                let answers = non_empty(c.get("text"))
                    || non_empty(delta.and_then(|d| d.get("content")))
                    || non_empty(delta.and_then(|d| d.get("tool_calls")));
                if answers
                    || non_empty(delta.and_then(|d| d.get("reasoning_content")))
                    || non_empty(delta.and_then(|d| d.get("reasoning")))
                {
                    content = true;
                }
                answer |= answers;
                if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    self.finished = true;
                }
            }
        }
        if content {
            self.chunks += 1;
            self.answer = answer;
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
    prompt: Prompt<'_>,
    call: Call<'_>,
    token: Option<&str>,
) -> Exchange {
    let (path, body) = request_body(shape, model, &prompt.text, prompt.max_tokens);
    let payload = body.to_string();
    let mut x = Exchange::start(shape.op.name(), payload.len() as u64);
    let url = format!("{base_url}{path}");
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-request-id", call.request_id)
        .body(payload);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let timed_out = tokio::time::timeout(call.timeout, run(req, shape.stream, &mut x))
        .await
        .is_err();
    close(x, timed_out, &prompt)
}

/// Ends an exchange: its end time, a timeout, and the prompt's length in words when the
/// server did not count its tokens.
fn close(x: Exchange, timed_out: bool, prompt: &Prompt<'_>) -> Exchange {
    let mut x = x.ended(timed_out);
    if x.prompt_tokens.is_none() {
        x.prompt_tokens =
            Some(u32::try_from(prompt.text.split_whitespace().count()).unwrap_or(u32::MAX));
    }
    x
}

/// [`exchange`] over the lean HTTP/1.1 client.
async fn exchange_lean(
    lean: &Lean,
    shape: &RequestShape,
    model: &str,
    prompt: Prompt<'_>,
    call: Call<'_>,
) -> Exchange {
    let (_, body) = request_body(shape, model, &prompt.text, prompt.max_tokens);
    let payload = body.to_string();
    let mut x = Exchange::start(shape.op.name(), payload.len() as u64);
    let request = super::h1::Request {
        head: &lean.head,
        request_id: Some(call.request_id),
        body: payload.as_bytes(),
    };
    let timed_out = tokio::time::timeout(
        call.timeout,
        run_lean(&lean.target.pool, request, shape.stream, &mut x),
    )
    .await
    .is_err();
    close(x, timed_out, &prompt)
}

async fn run_lean(
    pool: &super::h1::Pool,
    request: super::h1::Request<'_>,
    stream: bool,
    x: &mut Exchange,
) {
    let Some((mut body, status)) = super::send_lean(pool, &request, x).await else {
        return;
    };
    if !(200..300).contains(&status) || !stream {
        let Some(all) = super::read_body(&mut body, x, true).await else {
            return;
        };
        body.release();
        if !(200..300).contains(&status) {
            x.error = Some(status_class(status));
        } else {
            complete_answer(&all, x);
        }
        return;
    }
    read_stream::<SseParser, StreamState>(&mut body, x).await;
    if x.error.is_none() || x.error == Some(error_class::TRUNCATED) {
        body.release();
    }
}

/// Reads a whole (not streamed) answer: its usage, or a protocol error.
fn complete_answer(b: &[u8], x: &mut Exchange) {
    match serde_json::from_slice::<Value>(b) {
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

async fn run(req: reqwest::RequestBuilder, stream: bool, x: &mut Exchange) {
    let Some(resp) = send(req, x).await else {
        return;
    };
    let status = resp.status().as_u16();
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
                complete_answer(&b, x);
            }
            Err(e) => x.error = Some(classify(&e)),
        }
        return;
    }
    read_stream::<SseParser, StreamState>(&mut super::ReqwestBody::new(resp), x).await;
}

impl super::Framing for SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        SseParser::push(self, bytes)
    }
    fn finish(&mut self) -> Option<String> {
        SseParser::finish(self)
    }
}

impl super::TokenFold for StreamState {
    fn take(&mut self, frame: &str) -> bool {
        StreamState::take(self, frame)
    }
    fn chunks(&self) -> u32 {
        self.chunks
    }
    fn counts(&self) -> Option<(u32, u32)> {
        self.usage
    }
    fn finished(&self) -> bool {
        self.finished
    }
    fn failed(&self) -> bool {
        self.error
    }
    fn answered(&self) -> bool {
        self.answer
    }
    fn tokens_so_far(&self) -> Option<u32> {
        self.frame_completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_exact_word_count() {
        use crate::dataset::synthetic_prompt;
        assert_eq!(synthetic_prompt(64, 3).split_whitespace().count(), 64);
        assert_eq!(synthetic_prompt(0, 3), "");
    }

    #[test]
    fn reasoning_is_not_the_answer_and_per_chunk_usage_counts_tokens() {
        use crate::driver::TokenFold;
        let mut s = StreamState::default();
        assert!(s.take(r#"{"choices":[{"delta":{"reasoning_content":"let me"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#));
        assert!(!s.answered());
        assert_eq!(s.tokens_so_far(), Some(2));
        assert!(s.take(r#"{"choices":[{"delta":{"content":"Yes"}}],"usage":{"prompt_tokens":5,"completion_tokens":5}}"#));
        assert!(s.answered());
        assert_eq!(s.tokens_so_far(), Some(5));
        // Without per-chunk usage the count is unknown, not the last one seen.
        assert!(s.take(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#));
        assert!(s.answered());
        assert_eq!(s.tokens_so_far(), None);
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
        let (path, body) = request_body(&shape, "m", "a b", 64);
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert_eq!(body["max_tokens"], json!(64));
    }
}
