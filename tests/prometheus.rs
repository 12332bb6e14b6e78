//! The Prometheus rules: valid for promtool, their unit tests pass, and every aifb series
//! they use is one the binaries document (docs/metrics.md).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (scripts/test.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn rules_are_valid_and_their_unit_tests_pass() {
    let (ok, text) = promtool(
        &["check", "rules", "rules/aifb.rules.yml"],
        &root().join("prometheus"),
    );
    assert!(ok, "{text}");
    let (ok, text) = promtool(
        &["test", "rules", "aifb.rules.test.yml"],
        &root().join("prometheus/tests"),
    );
    assert!(ok && text.contains("SUCCESS"), "{text}");
}

#[test]
fn rules_use_only_documented_series() {
    let rules = std::fs::read_to_string(root().join("prometheus/rules/aifb.rules.yml")).unwrap();
    let docs = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("aifb_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        // Histograms are documented by their family name.
        let family = name.trim_end_matches("_bucket");
        assert!(
            docs.contains(family),
            "{name} is used by a rule but not documented in docs/metrics.md"
        );
    }
}
