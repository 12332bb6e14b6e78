//! Finds the line of a key path (`workload.levels[2]`) in a YAML text.
//!
//! Validation runs on typed values, which no longer know where they came from. This module
//! indexes the source once, so an error about `workload.levels[2]` can say `(line 14)`.
//! It understands block mappings, block sequences (indented or not), and one-line flow
//! sequences and mappings; inside anything more exotic it answers with the line of the
//! nearest enclosing key it did find, which is still the right place to look.

use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug)]
struct Frame {
    indent: usize,
    segment: Segment,
}

/// An index from key paths to 1-based line numbers.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

fn render(frames: &[Frame]) -> String {
    let mut out = String::new();
    for f in frames {
        match &f.segment {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

fn unquote(key: &str) -> String {
    let k = key.trim();
    if k.len() >= 2
        && ((k.starts_with('"') && k.ends_with('"')) || (k.starts_with('\'') && k.ends_with('\'')))
    {
        k[1..k.len() - 1].to_string()
    } else {
        k.to_string()
    }
}

/// Splits `key: value` (or `key:`) outside quotes; returns (key, value).
fn split_key(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' if i == 0 => quote = Some(b),
                b'#' if i > 0 && bytes[i - 1] == b' ' => return None,
                b'[' | b'{' if i == 0 => return None,
                b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                    return Some((&text[..i], text[i + 1..].trim()));
                }
                _ => {}
            },
        }
    }
    None
}

/// Splits the inside of a one-line flow collection at top-level commas.
fn flow_items(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    if !inner[start..].trim().is_empty() {
        items.push(&inner[start..]);
    }
    items
}

fn strip_comment(value: &str) -> &str {
    match value.find(" #") {
        Some(i) if !value.starts_with('"') && !value.starts_with('\'') => value[..i].trim_end(),
        _ => value,
    }
}

impl LineIndex {
    /// Indexes a YAML text.
    pub fn new(text: &str) -> Self {
        let mut index = LineIndex::default();
        let mut frames: Vec<Frame> = Vec::new();
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut block_scalar_indent: Option<usize> = None;

        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim_start_matches(' ');
            let mut indent = raw.len() - trimmed.len();
            if let Some(bi) = block_scalar_indent {
                if trimmed.is_empty() || indent > bi {
                    continue;
                }
                block_scalar_indent = None;
            }
            let mut rest = trimmed.trim_end();
            if rest.is_empty() || rest.starts_with('#') || rest == "---" || rest == "..." {
                continue;
            }
            loop {
                if rest == "-" || rest.starts_with("- ") {
                    while frames.last().is_some_and(|f| {
                        f.indent > indent
                            || (f.indent == indent && matches!(f.segment, Segment::Index(_)))
                    }) {
                        frames.pop();
                    }
                    let parent = render(&frames);
                    let counter = counters.entry(parent).or_insert(0);
                    let i = *counter;
                    *counter += 1;
                    frames.push(Frame {
                        indent,
                        segment: Segment::Index(i),
                    });
                    index.lines.entry(render(&frames)).or_insert(line_no);
                    let after = &rest[1..];
                    let inner = after.trim_start_matches(' ');
                    indent += 1 + (after.len() - inner.len());
                    rest = inner;
                    if rest.is_empty() {
                        break;
                    }
                    continue;
                }
                if let Some((key, value)) = split_key(rest) {
                    while frames.last().is_some_and(|f| f.indent >= indent) {
                        frames.pop();
                    }
                    frames.push(Frame {
                        indent,
                        segment: Segment::Key(unquote(key)),
                    });
                    let path = render(&frames);
                    // A key seen again starts a fresh sequence count.
                    counters.retain(|k, _| {
                        !(k == &path
                            || k.starts_with(&format!("{path}."))
                            || k.starts_with(&format!("{path}[")))
                    });
                    index.lines.entry(path.clone()).or_insert(line_no);
                    let value = strip_comment(value);
                    if value.starts_with('|') || value.starts_with('>') {
                        block_scalar_indent = Some(indent);
                    } else if value.starts_with('[') && value.ends_with(']') {
                        for (i, _) in flow_items(&value[1..value.len() - 1]).iter().enumerate() {
                            index.lines.entry(format!("{path}[{i}]")).or_insert(line_no);
                        }
                    } else if value.starts_with('{') && value.ends_with('}') {
                        for item in flow_items(&value[1..value.len() - 1]) {
                            if let Some((k, _)) = split_key(item.trim()) {
                                index
                                    .lines
                                    .entry(format!("{path}.{}", unquote(k)))
                                    .or_insert(line_no);
                            }
                        }
                    }
                }
                break;
            }
        }
        index
    }

    /// The line of `path`, or of its nearest ancestor that was found.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path.to_string();
        loop {
            if let Some(&line) = self.lines.get(&p) {
                return Some(line);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
            if p.is_empty() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: demo
# a comment
workload:
  pattern: closed
  levels: [1, 2, 4]
  mix:
    - op: chat
      weight: 2
    - op: completion
service:
  command:
  - loadgen
  - sim
  notes: |
    text: that is not a key
  port: 8000
";

    #[test]
    fn finds_keys_items_and_flow_items() {
        let ix = LineIndex::new(TEXT);
        assert_eq!(ix.line_of("name"), Some(1));
        assert_eq!(ix.line_of("workload.pattern"), Some(4));
        assert_eq!(ix.line_of("workload.levels[2]"), Some(5));
        assert_eq!(ix.line_of("workload.mix[0].weight"), Some(8));
        assert_eq!(ix.line_of("workload.mix[1].op"), Some(9));
        assert_eq!(ix.line_of("service.command[1]"), Some(13));
        assert_eq!(ix.line_of("service.port"), Some(16));
        assert_eq!(ix.line_of("service.notes.text"), Some(14));
    }

    #[test]
    fn falls_back_to_nearest_ancestor() {
        let ix = LineIndex::new(TEXT);
        assert_eq!(ix.line_of("workload.mix[7].op"), Some(6));
        assert_eq!(ix.line_of("missing.key"), None);
    }
}
