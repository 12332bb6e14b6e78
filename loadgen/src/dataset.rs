//! What the LLM drivers ask: each request's prompt and output length.
//!
//! Synthetic prompts are whitespace-separated words, one token each for the simulator
//! (close to one per word for real tokenizers), so their lengths are exact: fixed, or drawn
//! uniformly between `prompt_tokens` and `prompt_tokens_max` (and `max_tokens` ..
//! `max_tokens_max`) from the request's seeded stream; `shared_prefix_tokens` puts the same
//! words in front of every prompt (prefix caching). A dataset file replaces them: JSONL (or a
//! JSON array, as ShareGPT ships) of `{"prompt": …, "max_tokens": …}` or ShareGPT
//! conversations, whose first human turn is the prompt and whose answer's word count is the
//! output length. Request `seq` takes entry `seq` modulo the dataset size.

use std::borrow::Cow;
use std::path::Path;

use aifb_core::recipe::RequestShape;
use rand::RngExt;
use serde_json::Value;

/// One prompt and its output length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt<'a> {
    /// The text sent.
    pub text: Cow<'a, str>,
    /// Tokens asked for (`max_tokens`, Ollama `num_predict`).
    pub max_tokens: u32,
}

#[derive(Debug, Clone)]
enum Source {
    Fixed(String),
    Synthetic {
        prompt: (u32, u32),
        output: (u32, u32),
        prefix: String,
    },
    Dataset(Vec<(String, u32)>),
}

/// The prompts of a run.
#[derive(Debug, Clone)]
pub struct Prompts {
    source: Source,
    max_tokens: u32,
    seed: u64,
}

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

/// Appends `tokens` words, starting the word cycle at `offset`.
fn push_words(out: &mut String, tokens: u32, offset: u64) {
    for i in 0..u64::from(tokens) {
        if !out.is_empty() {
            out.push(' ');
        }
        let w = (i.wrapping_mul(7).wrapping_add(offset)) % WORDS.len() as u64;
        out.push_str(WORDS[w as usize]);
    }
}

/// A prompt of exactly `tokens` words.
pub fn synthetic_prompt(tokens: u32, seed: u64) -> String {
    let mut out = String::with_capacity(tokens as usize * 8);
    push_words(&mut out, tokens, seed);
    out
}

fn words(s: &str) -> u32 {
    u32::try_from(s.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// The speaker of a conversation turn (`from` in ShareGPT, `role` in chat logs).
fn role(t: &Value) -> &str {
    t.get("from")
        .or_else(|| t.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The text of a conversation turn (`value` in ShareGPT, `content` in chat logs).
fn turn_text(t: &Value) -> Option<&str> {
    t.get("value")
        .or_else(|| t.get("content"))
        .and_then(Value::as_str)
}

/// Reads a dataset: JSONL or a JSON array of prompt objects or ShareGPT conversations.
pub fn load(path: &Path, default_max_tokens: u32) -> Result<Vec<(String, u32)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let entries: Vec<(usize, Value)> = if text.trim_start().starts_with('[') {
        let v: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a JSON array: {e}", path.display()))?;
        v.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect()
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            out.push((i + 1, v));
        }
        out
    };
    let mut prompts = Vec::with_capacity(entries.len());
    for (n, v) in entries {
        let at = || format!("{} entry {n}", path.display());
        if let Some(p) = v.get("prompt").and_then(Value::as_str) {
            let max = v
                .get("max_tokens")
                .and_then(Value::as_u64)
                .map_or(default_max_tokens, |m| u32::try_from(m).unwrap_or(u32::MAX));
            prompts.push((p.to_string(), max.max(1)));
            continue;
        }
        let Some(turns) = v.get("conversations").and_then(Value::as_array) else {
            return Err(format!(
                "{}: expected \"prompt\" or \"conversations\"",
                at()
            ));
        };
        let Some(first) = turns
            .iter()
            .position(|t| matches!(role(t), "human" | "user"))
        else {
            // Conversations that open with the model have nothing to ask: skipped, as
            // every ShareGPT loader does.
            continue;
        };
        let Some(prompt) = turn_text(&turns[first]) else {
            return Err(format!("{}: the first human turn has no text", at()));
        };
        let answer = turns[first + 1..]
            .iter()
            .find(|t| matches!(role(t), "gpt" | "assistant"))
            .and_then(turn_text)
            .map_or(default_max_tokens, words);
        prompts.push((prompt.to_string(), answer.max(1)));
    }
    if prompts.is_empty() {
        return Err(format!("{}: no usable prompt", path.display()));
    }
    Ok(prompts)
}

/// A recorded trace: send offsets (seconds from the first request, non-decreasing) and, when
/// every line has one, the requests' prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Offsets of the sends, seconds.
    pub offsets: Vec<f64>,
    /// Prompt and output length of every request, when the trace has them.
    pub prompts: Option<Vec<(String, u32)>>,
}

/// Reads a trace: JSONL of `{"timestamp": seconds, "prompt"?: …, "max_tokens"?: …}`.
pub fn load_trace(path: &Path, default_max_tokens: u32) -> Result<Trace, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut times = Vec::new();
    let mut prompts = Vec::new();
    let mut without_prompt = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
        let t = v
            .get("timestamp")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite())
            .ok_or_else(|| format!("{}: needs a numeric \"timestamp\" (seconds)", at()))?;
        if times.last().is_some_and(|&last: &f64| t < last) {
            return Err(format!("{}: timestamps must not decrease", at()));
        }
        times.push(t);
        match v.get("prompt").and_then(Value::as_str) {
            Some(p) => {
                let max = v
                    .get("max_tokens")
                    .and_then(Value::as_u64)
                    .map_or(default_max_tokens, |m| u32::try_from(m).unwrap_or(u32::MAX));
                prompts.push((p.to_string(), max.max(1)));
            }
            None => {
                without_prompt.get_or_insert(i + 1);
            }
        }
    }
    let Some(&first) = times.first() else {
        return Err(format!("{}: no request in the trace", path.display()));
    };
    let prompts = match (prompts.is_empty(), without_prompt) {
        (true, _) => None,
        (false, None) => Some(prompts),
        (false, Some(line)) => {
            return Err(format!(
                "{} line {line}: has no \"prompt\" while other lines do",
                path.display()
            ));
        }
    };
    Ok(Trace {
        offsets: times.iter().map(|t| t - first).collect(),
        prompts,
    })
}

impl Prompts {
    /// The prompts of a workload: the trace's when it replays one that has prompts, else
    /// what `request` describes.
    pub fn for_workload(w: &aifb_core::recipe::Workload) -> Result<Prompts, String> {
        if w.arrival == Some(aifb_core::recipe::Arrival::Trace)
            && let Some(path) = &w.trace
            && let Some(prompts) = load_trace(path, w.request.max_tokens)?.prompts
        {
            return Ok(Prompts {
                source: Source::Dataset(prompts),
                max_tokens: w.request.max_tokens,
                seed: w.seed,
            });
        }
        Prompts::new(&w.request, w.seed)
    }

    /// The prompts `shape` describes; reads its dataset when it names one.
    pub fn new(shape: &RequestShape, seed: u64) -> Result<Prompts, String> {
        let source = if let Some(path) = &shape.dataset {
            Source::Dataset(load(path, shape.max_tokens)?)
        } else if shape.prompt_tokens_max.is_some()
            || shape.max_tokens_max.is_some()
            || shape.shared_prefix_tokens > 0
        {
            Source::Synthetic {
                prompt: (
                    shape.prompt_tokens,
                    shape
                        .prompt_tokens_max
                        .unwrap_or(shape.prompt_tokens)
                        .max(shape.prompt_tokens),
                ),
                output: (
                    shape.max_tokens,
                    shape
                        .max_tokens_max
                        .unwrap_or(shape.max_tokens)
                        .max(shape.max_tokens),
                ),
                prefix: synthetic_prompt(shape.shared_prefix_tokens, seed ^ 0x5052_4546),
            }
        } else {
            Source::Fixed(synthetic_prompt(shape.prompt_tokens, seed))
        };
        Ok(Prompts {
            source,
            max_tokens: shape.max_tokens,
            seed,
        })
    }

    /// The prompt of request `seq`.
    pub fn get(&self, seq: u64) -> Prompt<'_> {
        match &self.source {
            Source::Fixed(text) => Prompt {
                text: Cow::Borrowed(text),
                max_tokens: self.max_tokens,
            },
            Source::Dataset(items) => {
                let (text, max_tokens) = &items[(seq % items.len() as u64) as usize];
                Prompt {
                    text: Cow::Borrowed(text),
                    max_tokens: *max_tokens,
                }
            }
            Source::Synthetic {
                prompt,
                output,
                prefix,
            } => {
                let mut rng = crate::driver::rng_for(self.seed ^ 0x5052_4f4d, seq);
                let n = rng.random_range(prompt.0..=prompt.1);
                let out = rng.random_range(output.0..=output.1);
                let mut text = prefix.clone();
                push_words(&mut text, n, seq);
                Prompt {
                    text: Cow::Owned(text),
                    max_tokens: out,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> RequestShape {
        RequestShape::default()
    }

    #[test]
    fn synthetic_lengths_are_exact_and_reproducible() {
        let s = RequestShape {
            prompt_tokens: 10,
            prompt_tokens_max: Some(20),
            max_tokens: 5,
            max_tokens_max: Some(7),
            shared_prefix_tokens: 4,
            ..shape()
        };
        let p = Prompts::new(&s, 9).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seq in 0..2000 {
            let a = p.get(seq);
            assert_eq!(a, p.get(seq));
            let n = words(&a.text);
            assert!((14..=24).contains(&n), "{n}");
            assert!((5..=7).contains(&a.max_tokens));
            seen.insert(n);
            // The shared prefix is the same words in front of every prompt.
            let head: Vec<&str> = a.text.split_whitespace().take(4).collect();
            assert_eq!(
                head,
                synthetic_prompt(4, 9 ^ 0x5052_4546)
                    .split_whitespace()
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(seen.len(), 11, "every length 10..=20 (+4) appears");
        let fixed = Prompts::new(&shape(), 1).unwrap();
        assert_eq!(words(&fixed.get(3).text), 64);
        assert_eq!(fixed.get(3).max_tokens, 64);
    }

    #[test]
    fn sharegpt_and_prompt_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(
            &jsonl,
            concat!(
                r#"{"id":"a","conversations":[{"from":"human","value":"what is a knee"},{"from":"gpt","value":"the point where a curve bends"}]}"#,
                "\n\n",
                r#"{"id":"b","conversations":[{"from":"gpt","value":"hello"}]}"#,
                "\n",
                r#"{"prompt":"say hi","max_tokens":3}"#,
                "\n"
            ),
        )
        .unwrap();
        let d = load(&jsonl, 64).unwrap();
        assert_eq!(
            d,
            vec![("what is a knee".to_string(), 6), ("say hi".to_string(), 3)]
        );
        let array = dir.path().join("d.json");
        std::fs::write(
            &array,
            r#"[{"conversations":[{"role":"user","content":"q"}]}]"#,
        )
        .unwrap();
        assert_eq!(load(&array, 8).unwrap(), vec![("q".to_string(), 8)]);
        let s = RequestShape {
            dataset: Some(jsonl.clone()),
            ..shape()
        };
        let p = Prompts::new(&s, 1).unwrap();
        assert_eq!(p.get(0).text, "what is a knee");
        assert_eq!(p.get(3).max_tokens, 3);
        // Bad input names the file and the line.
        std::fs::write(&jsonl, "{\"prompt\":\"ok\"}\nnot json\n").unwrap();
        let e = load(&jsonl, 8).unwrap_err();
        assert!(e.contains("d.jsonl line 2"), "{e}");
        std::fs::write(&jsonl, "{\"text\":\"x\"}\n").unwrap();
        assert!(load(&jsonl, 8).unwrap_err().contains("entry 1"));
    }
}
