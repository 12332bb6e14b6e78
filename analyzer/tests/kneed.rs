//! Kneedle against kneed 0.9.0's known answers (concave, increasing, interp1d, offline).

use aifb_analyzer::knee::concave_increasing;

#[test]
fn matches_kneed_known_answers() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kneed_concave_increasing.json"
    ))
    .unwrap();
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
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
        let got = concave_increasing(&xs, &ys, case["S"].as_f64().unwrap()).map(|k| k.x);
        assert_eq!(got, case["knee"].as_f64(), "case {}", case["name"]);
    }
}
