//! HTTP front of the simulator: `/health`, `/v1/models`, `/v1/chat/completions`,
//! `/v1/completions` (streamed as SSE in vLLM's chunk format, with per-chunk usage on
//! request, or whole), Ollama's native `/api/tags`, `/api/chat` and `/api/generate`
//! (NDJSON, with Ollama's counts and durations), and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::model::Sequence;
use super::{SimEvent, SimState};

/// Default `max_tokens` when a request gives none.
const DEFAULT_MAX_TOKENS: u32 = 256;

/// Serves the simulator on an already-bound listener until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<SimState>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/metrics", get(metrics))
        .route("/api/tags", get(ollama_tags))
        .route(
            "/api/version",
            get(|| async { Json(json!({"version": "0.0.0-aifb-sim"})) }),
        )
        .route("/api/chat", post(ollama_chat))
        .route("/api/generate", post(ollama_generate))
        .with_state(state);
    // Tokens are small writes: without TCP_NODELAY, Nagle's algorithm and delayed ACKs add
    // ~40 ms to every stream.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app).await
}

async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.model, "object": "model", "owned_by": "aifb-sim", "max_model_len": 32768}]
    }))
}

async fn metrics(State(st): State<Arc<SimState>>, headers: axum::http::HeaderMap) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &st.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = aifb_core::promtext::negotiate(accept, text);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Whitespace-separated words: the simulator's tokenizer.
fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

fn bad_request(message: &str) -> Response {
    let body =
        json!({"object": "error", "message": message, "type": "BadRequestError", "code": 400});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn chat(
    State(st): State<Arc<SimState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body is not valid JSON");
    };
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return bad_request("messages: field required");
    };
    let prompt: u32 = messages
        .iter()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => count_tokens(s),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(count_tokens)
                .sum(),
            _ => 0,
        })
        .sum();
    generate(st, &req, prompt, Kind::Chat, request_id(&headers)).await
}

async fn completions(
    State(st): State<Arc<SimState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body is not valid JSON");
    };
    let prompt = match req.get("prompt") {
        Some(Value::String(s)) => count_tokens(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(count_tokens).sum(),
        _ => return bad_request("prompt: field required"),
    };
    generate(st, &req, prompt, Kind::Completion, request_id(&headers)).await
}

fn token_text(index: u32) -> String {
    const WORDS: [&str; 8] = [
        " the",
        " model",
        " answers",
        " with",
        " simulated",
        " tokens",
        " at",
        " speed",
    ];
    WORDS[index as usize % WORDS.len()].to_string()
}

struct Stream {
    rx: mpsc::UnboundedReceiver<SimEvent>,
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    prompt: u32,
    max_tokens: u32,
    include_usage: bool,
    continuous_usage: bool,
    generated: u32,
    arrived: Instant,
    state: Arc<SimState>,
    phase: Phase,
    /// The client's `x-request-id`.
    request_id: Option<String>,
    /// Nanoseconds from `arrived` to each token's chunk.
    token_ns: Vec<u64>,
}

#[derive(PartialEq)]
enum Phase {
    Role,
    Tokens,
    Usage,
    Done,
    Closed,
}

impl Stream {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => json!({
                "index": 0,
                "text": delta.get("content").cloned().unwrap_or(Value::String(String::new())),
                "logprobs": null,
                "finish_reason": finish
            }),
        };
        let object = if self.kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]});
        if self.continuous_usage {
            body["usage"] = self.usage();
        }
        Bytes::from(format!("data: {body}\n\n"))
    }

    fn usage(&self) -> Value {
        json!({"prompt_tokens": self.prompt, "completion_tokens": self.generated, "total_tokens": self.prompt + self.generated})
    }

    async fn next_bytes(&mut self) -> Option<Bytes> {
        let label = self.state.engine.metrics.label.clone();
        let m = &self.state.engine.metrics;
        loop {
            match self.phase {
                Phase::Role => {
                    self.phase = Phase::Tokens;
                    if self.kind == Kind::Chat {
                        return Some(self.chunk(json!({"role": "assistant", "content": ""}), None));
                    }
                }
                Phase::Tokens => match self.rx.recv().await {
                    Some(SimEvent::Token(i)) => {
                        if i == 0 {
                            m.ttft
                                .get_or_create(&label)
                                .observe(self.arrived.elapsed().as_secs_f64());
                        }
                        self.generated = i + 1;
                        self.token_ns.push(
                            u64::try_from(self.arrived.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        );
                        let last = self.generated >= self.max_tokens;
                        return Some(
                            self.chunk(json!({"content": token_text(i)}), last.then_some("length")),
                        );
                    }
                    Some(SimEvent::Finished) => {
                        m.e2e
                            .get_or_create(&label)
                            .observe(self.arrived.elapsed().as_secs_f64());
                        m.success
                            .get_or_create(&vec![
                                ("finished_reason", "length".to_string()),
                                label[0].clone(),
                            ])
                            .inc();
                        self.phase = if self.include_usage {
                            Phase::Usage
                        } else {
                            Phase::Done
                        };
                    }
                    Some(SimEvent::Refused) | None => {
                        self.phase = Phase::Closed;
                        let err = json!({"object": "error", "message": "request cannot be scheduled", "type": "InternalServerError", "code": 500});
                        return Some(Bytes::from(format!("data: {err}\n\n")));
                    }
                },
                Phase::Usage => {
                    self.phase = Phase::Done;
                    let object = if self.kind == Kind::Chat {
                        "chat.completion.chunk"
                    } else {
                        "text_completion"
                    };
                    let body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": self.usage()});
                    return Some(Bytes::from(format!("data: {body}\n\n")));
                }
                Phase::Done => {
                    self.phase = Phase::Closed;
                    if let Some(id) = &self.request_id {
                        self.state.write_truth(&json!({
                            "request_id": id,
                            "tokens": self.generated,
                            "token_ns": self.token_ns,
                            "end_ns": u64::try_from(self.arrived.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        }));
                    }
                    return Some(Bytes::from_static(b"data: [DONE]\n\n"));
                }
                Phase::Closed => return None,
            }
        }
    }
}

/// Counts the prompt and hands a new sequence to the engine; returns its id and the
/// receiver of its tokens.
fn admit(st: &SimState, prompt: u32, max_tokens: u32) -> (u64, mpsc::UnboundedReceiver<SimEvent>) {
    let label = st.engine.metrics.label.clone();
    st.engine
        .metrics
        .prompt_tokens
        .get_or_create(&label)
        .inc_by(u64::from(prompt));
    let id = st.next_id();
    let rx = st.engine.submit(Sequence {
        id,
        prompt_tokens: prompt,
        max_tokens,
        generated: 0,
    });
    (id, rx)
}

async fn generate(
    st: Arc<SimState>,
    req: &Value,
    prompt: u32,
    kind: Kind,
    request_id: Option<String>,
) -> Response {
    let max_tokens = req
        .get("max_tokens")
        .or_else(|| req.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return bad_request("max_tokens must be at least 1");
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let continuous_usage = req
        .pointer("/stream_options/continuous_usage_stats")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model_label = st.engine.metrics.label.clone();
    let (seq_id, rx) = admit(&st, prompt, max_tokens);
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut s = Stream {
        rx,
        id: format!("{prefix}-sim{seq_id}"),
        created,
        model: st.model.clone(),
        kind,
        prompt,
        max_tokens,
        include_usage,
        continuous_usage,
        generated: 0,
        arrived: Instant::now(),
        state: st.clone(),
        phase: Phase::Role,
        request_id,
        token_ns: Vec::new(),
    };
    if stream {
        let body = futures_util::stream::unfold(s, |mut s| async move {
            s.next_bytes().await.map(|b| (Ok::<_, Infallible>(b), s))
        });
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response();
    }
    // Whole response: wait for every token.
    let mut text = String::new();
    loop {
        match s.rx.recv().await {
            Some(SimEvent::Token(i)) => {
                if i == 0 {
                    st.engine
                        .metrics
                        .ttft
                        .get_or_create(&model_label)
                        .observe(s.arrived.elapsed().as_secs_f64());
                }
                s.generated = i + 1;
                text.push_str(&token_text(i));
            }
            Some(SimEvent::Finished) => break,
            Some(SimEvent::Refused) | None => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request cannot be scheduled",
                )
                    .into_response();
            }
        }
    }
    st.engine
        .metrics
        .e2e
        .get_or_create(&model_label)
        .observe(s.arrived.elapsed().as_secs_f64());
    let choice = match kind {
        Kind::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
        }
        Kind::Completion => json!({"index": 0, "text": text, "finish_reason": "length"}),
    };
    let object = if kind == Kind::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    Json(json!({"id": s.id, "object": object, "created": s.created, "model": s.model, "choices": [choice], "usage": s.usage()}))
        .into_response()
}

async fn ollama_tags(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(
        json!({"models": [{"name": st.model, "model": st.model, "size": 0, "details": {"family": "aifb-sim"}}]}),
    )
}

async fn ollama_chat(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return ollama_error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return ollama_error(StatusCode::BAD_REQUEST, "messages is required");
    };
    let prompt = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_str))
        .map(count_tokens)
        .sum();
    ollama(st, &req, prompt, Kind::Chat).await
}

async fn ollama_generate(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return ollama_error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let prompt = req
        .get("prompt")
        .and_then(Value::as_str)
        .map_or(0, count_tokens);
    ollama(st, &req, prompt, Kind::Completion).await
}

fn ollama_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn now_rfc3339() -> String {
    aifb_core::clock::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
    )
}

/// One NDJSON line of Ollama's streaming answer.
fn ollama_line(model: &str, kind: Kind, text: &str, done: Option<Value>) -> Bytes {
    let mut v = match kind {
        Kind::Chat => {
            json!({"model": model, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": text}, "done": false})
        }
        Kind::Completion => {
            json!({"model": model, "created_at": now_rfc3339(), "response": text, "done": false})
        }
    };
    if let Some(Value::Object(extra)) = done {
        v["done"] = json!(true);
        for (k, x) in extra {
            v[k] = x;
        }
    }
    Bytes::from(format!("{v}\n"))
}

/// Ollama's native generation: `options.num_predict` tokens (128 when absent), streamed
/// as NDJSON unless `"stream": false`, ending with Ollama's counts and durations.
async fn ollama(st: Arc<SimState>, req: &Value, prompt: u32, kind: Kind) -> Response {
    let max_tokens = req
        .pointer("/options/num_predict")
        .and_then(Value::as_i64)
        .filter(|&n| n > 0)
        .map_or(128, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let (_, rx) = admit(&st, prompt, max_tokens);
    struct Ndjson {
        rx: mpsc::UnboundedReceiver<SimEvent>,
        model: String,
        kind: Kind,
        prompt: u32,
        generated: u32,
        arrived: Instant,
        first: Option<Instant>,
        closed: bool,
    }
    impl Ndjson {
        fn summary(&self) -> Value {
            let total = self.arrived.elapsed();
            let first = self.first.map_or(total, |f| f - self.arrived);
            json!({
                "done_reason": "length",
                "total_duration": total.as_nanos() as u64,
                "load_duration": 0,
                "prompt_eval_count": self.prompt,
                "prompt_eval_duration": first.as_nanos() as u64,
                "eval_count": self.generated,
                "eval_duration": total.saturating_sub(first).as_nanos() as u64,
            })
        }
        async fn next(&mut self) -> Option<Bytes> {
            if self.closed {
                return None;
            }
            match self.rx.recv().await {
                Some(SimEvent::Token(i)) => {
                    self.first.get_or_insert_with(Instant::now);
                    self.generated = i + 1;
                    Some(ollama_line(&self.model, self.kind, &token_text(i), None))
                }
                Some(SimEvent::Finished) => {
                    self.closed = true;
                    Some(ollama_line(
                        &self.model,
                        self.kind,
                        "",
                        Some(self.summary()),
                    ))
                }
                Some(SimEvent::Refused) | None => {
                    self.closed = true;
                    Some(Bytes::from(format!(
                        "{}\n",
                        json!({"error": "request cannot be scheduled"})
                    )))
                }
            }
        }
    }
    let mut n = Ndjson {
        rx,
        model: st.model.clone(),
        kind,
        prompt,
        generated: 0,
        arrived: Instant::now(),
        first: None,
        closed: false,
    };
    if stream {
        let body = futures_util::stream::unfold(n, |mut n| async move {
            n.next().await.map(|b| (Ok::<_, Infallible>(b), n))
        });
        return (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(body),
        )
            .into_response();
    }
    let mut text = String::new();
    loop {
        match n.rx.recv().await {
            Some(SimEvent::Token(i)) => {
                n.first.get_or_insert_with(Instant::now);
                n.generated = i + 1;
                text.push_str(&token_text(i));
            }
            Some(SimEvent::Finished) => break,
            Some(SimEvent::Refused) | None => {
                return ollama_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request cannot be scheduled",
                );
            }
        }
    }
    let line = ollama_line(&n.model, kind, &text, Some(n.summary()));
    ([(header::CONTENT_TYPE, "application/json")], line).into_response()
}
