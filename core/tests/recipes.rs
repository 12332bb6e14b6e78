//! Every bad recipe in tests/recipes/bad states, on its first line, the one-line error it
//! must produce (`# expect: ...`); every recipe shipped in recipes/ must validate.

use std::path::Path;

use aifb_core::recipe::Recipe;

#[test]
fn bad_recipes_give_their_expected_first_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recipes/bad");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be '# expect: <message>'",
                    path.display()
                )
            });
        let errs =
            Recipe::load(&path).expect_err(&format!("{} should be rejected", path.display()));
        let want = format!("{}: {expected}", path.display());
        if errs[0] != want {
            failures.push(format!(
                "{}\n   got: {}\n  want: {want}",
                path.display(),
                errs[0]
            ));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} bad recipes");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shipped_recipes_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            Recipe::load(&path).unwrap_or_else(|e| panic!("{}", e.join("\n")));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn every_problem_is_reported_in_line_order() {
    let text = "name: t\nservice:\n  kind: simulator\nworkload:\n  pattern: closed\n  levels: [0, 2]\n  measure: 0s\nslo:\n  error_rate: -1\n";
    let errs: Vec<String> = Recipe::parse(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "workload.levels[0]: must be > 0, got 0 (line 6)",
            "workload.measure: must be > 0 (line 7)",
            "slo.error_rate: must be between 0 and 1, got -1 (line 9)",
        ]
    );
}
