//! Ollama's native API: `/api/chat` (`op: chat`) and `/api/generate` (`op: completion`),
//! streamed as NDJSON. Token counts come from the final line's `prompt_eval_count` and
//! `eval_count`; a stream that ends without `"done": true` is `truncated`; an `{"error"}`
//! line is a protocol error; HTTP 503 ("server busy", Ollama's queue is full) is
//! back-pressure. Ollama's OpenAI-compatible `/v1` endpoints are driven by `kind: openai`.

use aifb_core::recipe::{Operation, RequestShape};
use serde_json::{Value, json};

use super::{
    Call, Driver, DriverError, Exchange, Spec, http_client, http_ping, read_stream, send,
    status_class,
};
use crate::dataset::Prompts;

/// Splits an NDJSON byte stream into lines, whatever the read boundaries.
#[derive(Debug, Default)]
pub struct NdjsonParser {
    buf: Vec<u8>,
}

impl super::Framing for NdjsonParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        NdjsonParser::push(self, bytes)
    }
    fn finish(&mut self) -> Option<String> {
        NdjsonParser::finish(self)
    }
}

impl super::TokenFold for NdjsonState {
    fn take(&mut self, frame: &str) -> bool {
        NdjsonState::take(self, frame)
    }
    fn chunks(&self) -> u32 {
        self.chunks
    }
    fn counts(&self) -> Option<(u32, u32)> {
        self.counts
    }
    fn finished(&self) -> bool {
        self.done
    }
    fn failed(&self) -> bool {
        self.error
    }
    fn answered(&self) -> bool {
        self.answer
    }
}

impl NdjsonParser {
    /// Feeds bytes; returns the complete, non-empty lines.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if !text.is_empty() {
                out.push(text.to_string());
            }
        }
        out
    }

    /// The last line when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.buf).trim().to_string();
        self.buf.clear();
        (!text.is_empty()).then_some(text)
    }
}

/// What the lines of one answer said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NdjsonState {
    /// Lines carrying content, thinking or tool calls.
    pub chunks: u32,
    /// `"done": true` seen.
    pub done: bool,
    /// `prompt_eval_count`, `eval_count` of the final line.
    pub counts: Option<(u32, u32)>,
    /// An `{"error": …}` line or a line that is not JSON.
    pub error: bool,
    /// The final line's durations: `total`, `load`, `prompt_eval`, `eval` (nanoseconds).
    pub durations: Vec<(&'static str, u64)>,
    /// The last content line carried answer output (not `thinking` only).
    pub answer: bool,
}

impl NdjsonState {
    /// Folds one line; true when it carried a token.
    pub fn take(&mut self, line: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            self.error = true;
            return false;
        };
        if v.get("error").is_some() {
            self.error = true;
            return false;
        }
        let non_empty = |x: Option<&Value>| match x {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            _ => false,
        };
        let m = v.get("message");
        let answer = non_empty(v.get("response"))
            || non_empty(m.and_then(|m| m.get("content")))
            || non_empty(m.and_then(|m| m.get("tool_calls")));
        let content =
            answer || non_empty(v.get("thinking")) || non_empty(m.and_then(|m| m.get("thinking")));
        if content {
            self.chunks += 1;
            self.answer = answer;
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            self.done = true;
            let get = |k: &str| {
                v.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
            };
            if let Some(c) = get("eval_count") {
                self.counts = Some((get("prompt_eval_count").unwrap_or(0), c));
            }
            for (phase, key) in [
                ("total", "total_duration"),
                ("load", "load_duration"),
                ("prompt_eval", "prompt_eval_duration"),
                ("eval", "eval_duration"),
            ] {
                if let Some(ns) = v.get(key).and_then(Value::as_u64) {
                    self.durations.push((phase, ns));
                }
            }
        }
        content
    }
}

/// The Ollama driver.
pub struct Ollama {
    client: reqwest::Client,
    base: String,
    shape: RequestShape,
    model: String,
    prompts: Prompts,
}

impl Ollama {
    fn body(&self, seq: u64) -> (&'static str, Value) {
        let prompt = self.prompts.get(seq);
        let text = prompt.text.as_ref();
        let mut options = json!({"num_predict": prompt.max_tokens});
        if self.shape.ignore_eos {
            // Ollama has no ignore_eos; an empty stop list is the closest it offers.
            options["stop"] = json!([]);
        }
        match self.shape.op {
            Operation::Chat => (
                "/api/chat",
                json!({"model": self.model, "messages": [{"role": "user", "content": text}], "stream": self.shape.stream, "options": options}),
            ),
            Operation::Completion => (
                "/api/generate",
                json!({"model": self.model, "prompt": text, "stream": self.shape.stream, "options": options}),
            ),
        }
    }
}

impl Driver for Ollama {
    async fn connect(spec: &Spec) -> Result<Self, DriverError> {
        let r = &spec.recipe;
        Ok(Ollama {
            client: http_client(spec.connections)?,
            base: spec.target.clone(),
            shape: r.workload.request.clone(),
            model: r.service.model.clone(),
            prompts: Prompts::for_workload(&r.workload).map_err(DriverError::permanent)?,
        })
    }

    async fn ping(&self) -> Result<(), DriverError> {
        http_ping(&self.client, &format!("{}/api/tags", self.base)).await
    }

    async fn setup(&self) -> Result<(), DriverError> {
        Ok(())
    }

    fn op(&self, _seq: u64) -> &'static str {
        self.shape.op.name()
    }

    async fn call(&self, call: Call<'_>) -> Exchange {
        let (path, body) = self.body(call.entry.unwrap_or(call.seq));
        let payload = body.to_string();
        let mut x = Exchange::start(self.shape.op.name(), payload.len() as u64);
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-request-id", call.request_id)
            .body(payload);
        let run = async {
            let Some(resp) = send(req, &mut x).await else {
                return;
            };
            if !resp.status().is_success() {
                x.error = Some(status_class(resp.status().as_u16()));
                return;
            }
            let state: NdjsonState = read_stream::<NdjsonParser, NdjsonState>(
                &mut super::ReqwestBody::new(resp),
                &mut x,
            )
            .await;
            x.server_reported = state
                .durations
                .iter()
                .map(|&(phase, ns)| (phase, std::time::Duration::from_nanos(ns)))
                .collect();
        };
        let timed_out = tokio::time::timeout(call.timeout, run).await.is_err();
        x.ended(timed_out)
    }

    async fn identity(&self) -> super::Identity {
        let models = super::get_json(&self.client, &format!("{}/api/tags", self.base))
            .await
            .and_then(|v| {
                v["models"].as_array().map(|d| {
                    d.iter()
                        .filter_map(|m| m["name"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        let version = super::get_json(&self.client, &format!("{}/api/version", self.base))
            .await
            .and_then(|v| v["version"].as_str().map(|s| format!("ollama {s}")));
        super::Identity { version, models }
    }

    async fn teardown(&self) -> Result<(), DriverError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_lines_are_not_the_answer() {
        use crate::driver::TokenFold;
        let mut s = NdjsonState::default();
        assert!(s.take(
            r#"{"message":{"role":"assistant","content":"","thinking":"Hmm"},"done":false}"#
        ));
        assert!(!s.answered());
        assert!(s.take(r#"{"message":{"role":"assistant","content":"Yes"},"done":false}"#));
        assert!(s.answered());
        assert_eq!(s.chunks, 2);
    }

    // Lines as Ollama's API documentation shows them for /api/chat.
    const CHAT: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
        "\n"
    );

    #[test]
    fn lines_split_across_reads_are_joined() {
        let bytes = CHAT.as_bytes();
        for cut in [1, 7, 60, bytes.len() - 3] {
            let mut p = NdjsonParser::default();
            let mut s = NdjsonState::default();
            for l in p
                .push(&bytes[..cut])
                .into_iter()
                .chain(p.push(&bytes[cut..]))
            {
                s.take(&l);
            }
            assert_eq!(p.finish(), None);
            assert_eq!(
                s,
                NdjsonState {
                    chunks: 1,
                    done: true,
                    counts: Some((26, 282)),
                    error: false,
                    durations: vec![
                        ("total", 4_883_583_458),
                        ("load", 1_334_875),
                        ("prompt_eval", 342_546_000),
                        ("eval", 4_535_599_000)
                    ],
                    answer: true,
                },
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn errors_and_truncation_are_seen() {
        let mut s = NdjsonState::default();
        assert!(s.take(r#"{"model":"m","response":" hi","done":false}"#));
        assert!(!s.take(r#"{"error":"an unknown error was encountered while running the model"}"#));
        assert!(s.error && !s.done);
        let mut t = NdjsonState::default();
        t.take(r#"{"model":"m","message":{"role":"assistant","content":"","thinking":"hmm"},"done":false}"#);
        assert_eq!((t.chunks, t.done), (1, false));
        let mut p = NdjsonParser::default();
        assert!(p.push(b"{\"done\":true}").is_empty());
        assert_eq!(p.finish().as_deref(), Some("{\"done\":true}"));
    }
}
