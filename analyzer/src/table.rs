//! Two-column numeric CSV input for `analyzer knee` and `analyzer usl`: comma, tab or
//! whitespace separated, an optional header line, `#` comments. Errors name the file and
//! line.

use std::path::Path;

/// Reads (x, y) pairs; x must increase.
pub fn read_xy(path: &Path) -> Result<(Vec<f64>, Vec<f64>), String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    parse_xy(&text).map_err(|e| format!("{shown}: {e}"))
}

/// Parses (x, y) pairs from text.
pub fn parse_xy(text: &str) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c == '\t' || c == ';' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let parsed: Option<Vec<f64>> = fields
            .iter()
            .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect();
        match parsed {
            Some(v) if v.len() == 2 => {
                if let Some(&last) = xs.last()
                    && v[0] <= last
                {
                    return Err(format!(
                        "line {}: x = {} does not increase (previous {last})",
                        i + 1,
                        v[0]
                    ));
                }
                xs.push(v[0]);
                ys.push(v[1]);
            }
            // A first non-numeric line is a header.
            None if xs.is_empty() && i == first_content_line(text) => continue,
            _ => {
                return Err(format!(
                    "line {}: expected two numbers, got {line:?}",
                    i + 1
                ));
            }
        }
    }
    if xs.len() < 3 {
        return Err(format!("{} data points; at least 3 are needed", xs.len()));
    }
    Ok((xs, ys))
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_separators_and_errors() {
        assert_eq!(
            parse_xy("N,X\n1,10\n2\t19\n4 30\n").unwrap(),
            (vec![1.0, 2.0, 4.0], vec![10.0, 19.0, 30.0])
        );
        assert!(
            parse_xy("1,2\n2,x\n3,4\n")
                .unwrap_err()
                .starts_with("line 2: expected two numbers")
        );
        assert!(
            parse_xy("1,2\n1,3\n2,4\n")
                .unwrap_err()
                .contains("does not increase")
        );
        assert!(parse_xy("a,b\n1,2\n").unwrap_err().contains("at least 3"));
        assert!(parse_xy("1,2,3\n").unwrap_err().contains("line 1"));
    }
}
