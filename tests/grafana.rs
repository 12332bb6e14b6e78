//! The Grafana dashboards: generated from `grafana/dashboards.py` and in sync with it,
//! type-checked against Grafana's own schema (`@grafana/schema` with `tsc`, installed by
//! scripts/test.sh; Grafana itself cannot be installed here), and built from documented
//! series only. That their queries return data is checked against a real Prometheus in
//! tests/slurm.rs.

use std::path::PathBuf;
use std::process::Command;

use aifb_tests::{cache_dir, workspace};

fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> =
        std::fs::read_dir(workspace().join("grafana/dashboards"))
            .expect("grafana/dashboards")
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let v = serde_json::from_slice(&std::fs::read(e.path()).unwrap())
                    .unwrap_or_else(|err| panic!("{name}: {err}"));
                (name, v)
            })
            .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn dashboards_are_what_their_generator_writes() {
    let out = Command::new("python3")
        .arg(workspace().join("grafana/dashboards.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = dashboards().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "aifb-data-services.json",
            "aifb-gpu.json",
            "aifb-host-job.json",
            "aifb-llm-serving.json",
            "aifb-run-overview.json"
        ]
    );
}

/// The folder holding `node_modules/@grafana/schema` and `typescript`.
fn schema_dir() -> PathBuf {
    std::env::var_os("AIFB_GRAFANA_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("grafana-schema"))
}

#[test]
fn dashboards_type_check_against_grafana_schema() {
    let dir = schema_dir();
    let tsc = dir.join("node_modules/.bin/tsc");
    assert!(
        tsc.is_file() && dir.join("node_modules/@grafana/schema").is_dir(),
        "{} lacks typescript and @grafana/schema: scripts/test.sh installs them",
        dir.display()
    );
    // The check file lives under the schema folder so that `@grafana/schema` resolves.
    let work = tempfile::Builder::new()
        .prefix("check-")
        .tempdir_in(&dir)
        .expect("temp dir");
    let mut ts = String::from(
        "import type { AnnotationQuery, Dashboard, DataQuery } from '@grafana/schema';\n\
         // Prometheus queries, as the annotations carry them.\n\
         interface PromQuery extends DataQuery { expr: string; legendFormat?: string }\n\
         type AifbDashboard = Omit<Dashboard, 'annotations'> & { annotations?: { list?: Array<AnnotationQuery<PromQuery>> } };\n",
    );
    for (i, (name, v)) in dashboards().iter().enumerate() {
        // An object literal: TypeScript rejects unknown fields and wrong types.
        ts.push_str(&format!(
            "// {name}\nexport const d{i}: AifbDashboard = {};\n",
            serde_json::to_string_pretty(v).unwrap()
        ));
    }
    let file = work.path().join("dashboards.ts");
    std::fs::write(&file, &ts).unwrap();
    let run = |path: &std::path::Path| {
        Command::new(&tsc)
            .args([
                "--noEmit",
                "--strict",
                "--target",
                "es2020",
                "--module",
                "nodenext",
                "--moduleResolution",
                "nodenext",
            ])
            .arg(path)
            .current_dir(work.path())
            .output()
            .expect("tsc runs")
    };
    let out = run(&file);
    assert!(
        out.status.success(),
        "dashboards do not match Grafana's schema:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The check can fail: a misspelt field is caught.
    let broken = work.path().join("broken.ts");
    std::fs::write(&broken, ts.replacen("\"gridPos\"", "\"gridPosition\"", 1)).unwrap();
    assert!(
        !run(&broken).status.success(),
        "tsc accepted an unknown panel field"
    );
}

#[test]
fn dashboards_select_the_run_and_use_documented_series() {
    let docs = std::fs::read_to_string(workspace().join("docs/metrics.md")).unwrap();
    let datasource =
        std::fs::read_to_string(workspace().join("grafana/provisioning/datasources/aifb.yml"))
            .unwrap();
    for (name, d) in dashboards() {
        assert!(
            d["uid"].as_str().is_some_and(|u| name.starts_with(u)),
            "{name}: uid"
        );
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(vars[0], "run_id", "{name}");
        let annotation = d["annotations"]["list"][0]["target"]["expr"]
            .as_str()
            .unwrap();
        assert!(
            annotation.contains("aifb_loadgen_stage"),
            "{name}: stage annotations"
        );
        for p in d["panels"].as_array().unwrap() {
            assert!(
                datasource.contains(&format!(
                    "uid: {}",
                    p["datasource"]["uid"].as_str().unwrap()
                )),
                "{name}: panels use the provisioned data source"
            );
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    expr.contains("run_id=\"$run_id\""),
                    "{name}: {expr} selects the run"
                );
                if expr.contains("node=~") {
                    assert!(vars.contains(&"node"), "{name}: $node variable");
                }
                for w in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                {
                    if w.starts_with("aifb_") || w.starts_with("vllm:") {
                        let family = w.trim_end_matches("_bucket");
                        assert!(
                            docs.contains(family),
                            "{name}: {w} is not documented in docs/metrics.md"
                        );
                    }
                }
            }
        }
    }
}
