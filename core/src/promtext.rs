//! A parser for the Prometheus text exposition format (0.0.4) and the OpenMetrics text
//! format, enough to turn a scrape into samples: comments, `# TYPE`/`# HELP`/`# UNIT`,
//! `# EOF`, escaped label values, special floats and optional timestamps.

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// A parse problem with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    if name_end == 0 {
        return Err("expected a metric name".into());
    }
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut consumed = None;
        loop {
            while chars.peek().is_some_and(|&(_, c)| c == ' ' || c == ',') {
                chars.next();
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    consumed = Some(i + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' || c == ' ' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|&(_, c)| c == ' ') {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("label {key:?}: expected '='"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?}: expected a quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some(other) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label {key:?}: unterminated value"));
            }
            labels.push((key, value));
        }
        let Some(n) = consumed else {
            return Err("unterminated label set".into());
        };
        rest = &after[n..];
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("missing value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses a whole exposition. Returns the samples, or the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            if line == "# EOF" {
                break;
            }
            continue;
        }
        out.push(parse_line(line).map_err(|message| ParseError {
            line: n + 1,
            message,
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_classic_and_openmetrics() {
        let text = "# HELP a_total things\n# TYPE a_total counter\na_total 3\n\
            b{x=\"1\",y=\"q\\\"uote\\nnl\"} 2.5 1700000000000\n\
            vllm:num_requests_running{model_name=\"m\"} 4\n\
            h_bucket{le=\"+Inf\"} +Inf\nn NaN\n# EOF\nignored 1\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            s[0],
            Sample {
                name: "a_total".into(),
                labels: vec![],
                value: 3.0
            }
        );
        assert_eq!(
            s[1].labels,
            vec![("x".into(), "1".into()), ("y".into(), "q\"uote\nnl".into())]
        );
        assert_eq!(s[2].name, "vllm:num_requests_running");
        assert!(s[3].value.is_infinite());
        assert!(s[4].value.is_nan());
    }

    #[test]
    fn reports_bad_lines() {
        let e = parse("ok 1\nbad{x=1} 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("quoted"), "{e}");
        assert!(
            parse("x{a=\"1\"}")
                .unwrap_err()
                .message
                .contains("missing value")
        );
        assert!(
            parse("x abc")
                .unwrap_err()
                .message
                .contains("invalid value")
        );
    }
}

/// Content type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Rewrites OpenMetrics text (as prometheus-client encodes it) into the classic text format
/// that `promtool check metrics` and older scrapers read: counter families take their
/// `_total` name, `info` families become gauges named `_info`, `# UNIT` and `# EOF` go.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (family, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                "gaugehistogram" => (name.to_string(), "histogram"),
                other => (name.to_string(), other),
            };
            if let Some((hname, text)) = help.take()
                && hname == name
            {
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        if let Some((hname, text)) = help.take() {
            out.push_str(&format!("# HELP {hname} {text}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Picks the exposition format from an `Accept` header: OpenMetrics when asked for,
/// classic text otherwise. Returns the content type and the body.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS_CONTENT_TYPE, openmetrics)
    } else {
        (CLASSIC_CONTENT_TYPE, to_classic(&openmetrics))
    }
}

#[cfg(test)]
mod classic_tests {
    use super::*;

    #[test]
    fn rewrites_counters_and_info() {
        let om = "# HELP y things.\n# TYPE y counter\ny_total 3\n# HELP b build.\n# TYPE b info\nb_info{v=\"1\"} 1\n\
                  # HELP s seconds.\n# TYPE s histogram\n# UNIT s seconds\ns_sum 1\n# EOF\n";
        let classic = to_classic(om);
        assert_eq!(
            classic,
            "# HELP y_total things.\n# TYPE y_total counter\ny_total 3\n# HELP b_info build.\n# TYPE b_info gauge\n\
             b_info{v=\"1\"} 1\n# HELP s seconds.\n# TYPE s histogram\ns_sum 1\n"
        );
        assert_eq!(parse(&classic).unwrap().len(), 3);
        assert_eq!(
            negotiate(
                Some("application/openmetrics-text;version=1.0.0"),
                om.into()
            )
            .0,
            OPENMETRICS_CONTENT_TYPE
        );
        assert_eq!(negotiate(None, om.into()).1, classic);
    }
}
