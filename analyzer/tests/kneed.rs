//! Kneedle against every known answer of kneed 0.9.0 in the shared fixtures.

use aifb_analyzer::knee::{Curve, Direction, Params, Smoothing, find};

#[test]
fn matches_kneed_0_9_0_on_every_case() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kneed_cases.json"
    ))
    .unwrap();
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let ds = &data["datasets"][case["dataset"].as_str().unwrap()];
        let xs: Vec<f64> = ds["x"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let ys: Vec<f64> = ds["y"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let p = &case["params"];
        let params = Params {
            sensitivity: p["S"].as_f64().unwrap(),
            curve: if p["curve"] == "concave" {
                Curve::Concave
            } else {
                Curve::Convex
            },
            direction: if p["direction"] == "increasing" {
                Direction::Increasing
            } else {
                Direction::Decreasing
            },
            smoothing: if p["interp_method"] == "interp1d" {
                Smoothing::Interp1d
            } else {
                Smoothing::Polynomial(p["polynomial_degree"].as_u64().unwrap() as usize)
            },
            online: p["online"].as_bool().unwrap(),
        };
        let found = find(&xs, &ys, &params);
        let want = &case["observed_kneed_0_9_0"];
        let got = found.knee.map(|k| k.x);
        if got != want["knee"].as_f64() {
            failures.push(format!(
                "{name}: knee {got:?}, kneed {:?}",
                want["knee"].as_f64()
            ));
            continue;
        }
        let mut all = found.all.clone();
        all.sort_by(f64::total_cmp);
        let want_all: Vec<f64> = want["all_knees_sorted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        if all != want_all {
            failures.push(format!("{name}: all knees {all:?}, kneed {want_all:?}"));
        }
        if let (Some(k), Some(nk)) = (found.knee, want["norm_knee"].as_f64())
            && (k.norm_x - nk).abs() > 1e-9 * nk.abs().max(1.0)
        {
            failures.push(format!("{name}: norm_knee {}, kneed {nk}", k.norm_x));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
