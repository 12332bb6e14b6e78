//! Incremental Server-Sent Events parser: bytes in, `data` payloads out.
//!
//! Handles events split across reads, CRLF or LF line ends, comments (`:`), several `data:`
//! lines in one event (joined with `\n`) and fields other than `data` (ignored).

/// Parser state between reads.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, &mut events);
        }
        events
    }

    fn take_line(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        if field == "data" {
            self.data.push(value.to_string());
        }
    }

    /// Ends the stream: an event not closed by a blank line is still returned.
    pub fn finish(&mut self) -> Option<String> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let mut ignored = Vec::new();
            self.take_line(&line, &mut ignored);
        }
        (!self.data.is_empty()).then(|| std::mem::take(&mut self.data).join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_reads_and_line_ends() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            p.push(b":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\nevent: e\ndata: [DONE]\n"),
            vec!["{\"a\":1}".to_string(), "x\ny".to_string()]
        );
        assert_eq!(p.push(b"\n"), vec!["[DONE]".to_string()]);
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let input = "data: héllo\n\ndata:no-space\n\n";
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for b in input.as_bytes() {
            out.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, vec!["héllo".to_string(), "no-space".to_string()]);
        let mut q = SseParser::default();
        q.push(b"data: tail");
        assert_eq!(q.finish().as_deref(), Some("tail"));
    }
}
