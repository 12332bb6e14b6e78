//! E-divisive against the change points of the shared fixtures (Apache Otava, MongoDB).

use aifb_analyzer::changepoint::{Settings, e_divisive, e_divisive_1d};

#[test]
fn otava_single_step() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/changepoint_cases.json"
    ))
    .unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let series: Vec<f64> = d["datasets"]["single"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want: Vec<usize> = d["expected"][0]["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(e_divisive_1d(&series, &Settings::default()), want);
}

#[test]
fn mongodb_synthetic_steps() {
    // [0]*1000 + [1]*1000 → [1000]. Fewer permutations than the fixture's 100 keep the debug
    // build quick; 20 still resolve p = 1/21 < 0.05.
    let series: Vec<f64> = std::iter::repeat_n(0.0, 1000)
        .chain(std::iter::repeat_n(1.0, 1000))
        .collect();
    let s = Settings {
        permutations: 20,
        ..Settings::default()
    };
    assert_eq!(e_divisive_1d(&series, &s), vec![1000]);
    // [[0,0]]*100 + [[1,1]]*100 + [[20,20]]*100 → detected as 200 first, then 100.
    let series: Vec<Vec<f64>> = std::iter::repeat_n(vec![0.0, 0.0], 100)
        .chain(std::iter::repeat_n(vec![1.0, 1.0], 100))
        .chain(std::iter::repeat_n(vec![20.0, 20.0], 100))
        .collect();
    assert_eq!(e_divisive(&series, &Settings::default()), vec![200, 100]);
}
