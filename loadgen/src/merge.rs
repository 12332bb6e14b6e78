//! `loadgen merge`: one run directory from the directories of its shards.
//!
//! Shards (`loadgen run --shard I/N`) split one sweep: shard I sends the open loop's
//! arrivals n with n mod N = I of the single timeline, or drives the closed loop's users u
//! with u mod N = I. Their rows together are exactly the rows of one generator, so the merge
//! concatenates `requests.parquet` and `metrics.parquet` and recomputes `summary.json` from
//! the merged rows (the histograms are rebuilt, not averaged). Stage windows are the union
//! of the shards' windows; scheduled arrivals add up; the generator CPU share is the
//! highest of the shards (the one that limits the run).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aifb_core::metrics::MetricsWriter;
use aifb_core::recipe::Validity;
use aifb_core::requests::{RequestRecord, RequestRow, RequestWriter};
use aifb_core::run::{Manifest, RunDir, StageWindow, write_atomic};
use serde_json::Value;

use crate::sink::StageStats;
use crate::sweep::StageRun;

/// The `&'static str` for a dictionary value read back from a file (operations, phases,
/// error classes: a small, bounded set, each stored once).
fn intern(s: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let set = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    let Ok(mut set) = set.lock() else {
        return "unknown";
    };
    if let Some(v) = set.get(s) {
        return v;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

fn record(r: RequestRow) -> RequestRecord {
    RequestRecord {
        stage: r.stage,
        concurrency: r.concurrency,
        rate: r.rate,
        phase: intern(&r.phase),
        client: r.client,
        worker: r.worker,
        op: intern(&r.op),
        t_intended: r.t_intended,
        t_sent: r.t_sent,
        t_first_byte: r.t_first_byte,
        t_first_token: r.t_first_token,
        t_end: r.t_end,
        ok: r.ok,
        status: r.status,
        error: r.error.as_deref().map(intern),
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
        prompt_tokens: r.prompt_tokens,
        output_tokens: r.output_tokens,
        chunks: r.chunks,
        request_id: r.request_id,
    }
}

/// What one shard's summary says of a stage.
#[derive(Debug, Clone)]
struct ShardStage {
    window: StageWindow,
    scheduled: Option<u64>,
    generator_cpu: Option<f64>,
    oversaturated: bool,
}

fn read_summary(dir: &Path) -> Result<(String, Vec<ShardStage>), String> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let pattern = v["pattern"].as_str().unwrap_or_default().to_string();
    let mut stages = Vec::new();
    for s in v["stages"].as_array().into_iter().flatten() {
        let window: StageWindow = serde_json::from_value(s["window"].clone())
            .map_err(|e| format!("{}: stage window: {e}", path.display()))?;
        stages.push(ShardStage {
            window,
            scheduled: s["scheduled"].as_u64(),
            generator_cpu: s["generator_cpu"].as_f64(),
            oversaturated: s["oversaturated"].as_bool().unwrap_or(false),
        });
    }
    Ok((pattern, stages))
}

/// Union of the shards' windows of each stage, with the shards' scheduled arrivals added
/// up and the highest generator CPU share.
fn merge_stages(shards: &[Vec<ShardStage>]) -> (Vec<StageRun>, BTreeMap<u32, f64>) {
    let mut by_stage: BTreeMap<u32, (StageRun, Option<f64>)> = BTreeMap::new();
    for s in shards.iter().flatten() {
        let e = by_stage.entry(s.window.stage).or_insert_with(|| {
            (
                StageRun {
                    window: s.window.clone(),
                    scheduled: None,
                    generator_cpu_s: None,
                    slo_missed: Vec::new(),
                    oversaturated: false,
                },
                None,
            )
        });
        let w = &mut e.0.window;
        w.start_ns = w.start_ns.min(s.window.start_ns);
        w.measure_start_ns = w.measure_start_ns.min(s.window.measure_start_ns);
        w.measure_end_ns = w.measure_end_ns.max(s.window.measure_end_ns);
        w.end_ns = w.end_ns.max(s.window.end_ns);
        if let Some(n) = s.scheduled {
            e.0.scheduled = Some(e.0.scheduled.unwrap_or(0) + n);
        }
        if let Some(c) = s.generator_cpu {
            e.1 = Some(e.1.map_or(c, |m: f64| m.max(c)));
        }
        e.0.oversaturated |= s.oversaturated;
    }
    let cpu = by_stage
        .iter()
        .filter_map(|(k, (_, c))| c.map(|c| (*k, c)))
        .collect();
    (by_stage.into_values().map(|(r, _)| r).collect(), cpu)
}

/// Counts of what a merge wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// Request rows.
    pub requests: u64,
    /// Metric samples.
    pub samples: u64,
}

/// Merges the shard run directories `shards` into `out`.
pub fn merge(
    out: &Path,
    shards: &[PathBuf],
    validity: &Validity,
    slo: &aifb_core::recipe::Slo,
) -> Result<Merged, String> {
    if shards.is_empty() {
        return Err("no shard directories given".into());
    }
    let mut patterns = Vec::new();
    let mut stages = Vec::new();
    for d in shards {
        let (p, s) = read_summary(d)?;
        patterns.push(p);
        stages.push(s);
    }
    if patterns.iter().any(|p| *p != patterns[0]) {
        return Err(format!(
            "the shards ran different patterns ({}): not one sweep",
            patterns.join(", ")
        ));
    }
    let dir = RunDir::new(out);
    std::fs::create_dir_all(&dir.root).map_err(|e| format!("{}: {e}", dir.root.display()))?;
    let (runs, cpu) = merge_stages(&stages);

    let nanos = |d: Option<aifb_core::duration::HumanDuration>| {
        d.map(|d| i64::try_from(d.get().as_nanos()).unwrap_or(i64::MAX))
    };
    let plans: BTreeMap<u32, crate::sink::Plan> = runs
        .iter()
        .map(|r| {
            let w = &r.window;
            (
                w.stage,
                crate::sink::Plan {
                    window: (w.measure_start_ns, w.measure_end_ns),
                    ttft_limit: nanos(slo.ttft_p99),
                    e2e_limit: nanos(slo.e2e_p99),
                },
            )
        })
        .collect();
    let mut manifest: Option<Manifest> = None;
    let mut requests = RequestWriter::create(&dir.requests())?;
    let mut stats: BTreeMap<u32, StageStats> = BTreeMap::new();
    for d in shards {
        let file = aifb_core::requests::read(&d.join("requests.parquet"))?;
        if manifest.is_none()
            && let Some(m) = file.manifest.as_deref()
        {
            manifest = serde_json::from_str(m).ok();
        }
        for row in file.rows {
            let r = record(row);
            stats
                .entry(r.stage)
                .or_insert_with(|| {
                    StageStats::planned(plans.get(&r.stage).copied().unwrap_or_default())
                })
                .add(&r);
            requests.push(r)?;
        }
    }
    // Shards whose files carry no manifest get a new one.
    let mut m = manifest.unwrap_or_else(|| {
        Manifest::new(
            "merged",
            "local",
            aifb_core::run::RunStatus::Done,
            String::new(),
        )
    });
    m.stages = runs.iter().map(|r| r.window.clone()).collect();
    let manifest_json = serde_json::to_string(&m).map_err(|e| e.to_string())?;
    let rows = requests.finish(Some(&manifest_json))?;

    let mut metrics = MetricsWriter::create(&dir.metrics())?;
    for d in shards {
        let path = d.join("metrics.parquet");
        if path.is_file() {
            for s in aifb_core::metrics::read(&path)? {
                metrics.push(s)?;
            }
        }
    }
    let samples = metrics.finish(Some(&manifest_json))?;

    // chunks.parquet, when the shards wrote one.
    let chunk_files: Vec<PathBuf> = shards
        .iter()
        .map(|d| d.join("chunks.parquet"))
        .filter(|p| p.is_file())
        .collect();
    if !chunk_files.is_empty() {
        let mut chunks = aifb_core::chunks::ChunkWriter::create(&dir.chunks())?;
        for p in &chunk_files {
            chunks.extend(aifb_core::chunks::read(p)?)?;
        }
        chunks.finish(Some(&manifest_json))?;
    }

    let mut summary = crate::sink::summary(&m.id, &patterns[0], &runs, &stats, validity, slo, 1.0);
    if let Some(list) = summary["stages"].as_array_mut() {
        for s in list {
            let stage = s["stage"].as_u64().and_then(|n| u32::try_from(n).ok());
            if let Some(c) = stage.and_then(|k| cpu.get(&k)) {
                s["generator_cpu"] = serde_json::json!(c);
            }
        }
    }
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    write_atomic(&dir.summary(), text.as_bytes())
        .map_err(|e| format!("{}: {e}", dir.summary().display()))?;
    write_atomic(
        &dir.manifest(),
        serde_json::to_string_pretty(&m)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", dir.manifest().display()))?;
    Ok(Merged {
        requests: rows,
        samples,
    })
}

/// Rebuilds `requests.parquet` of a run whose loadgen was killed before it could close
/// the file, from the part files its checkpoints left in `<dir>/partial/`; the run
/// manifest (`run.json`, when present) goes into the footer. Returns the rows recovered.
/// The part folder is removed once the file is written.
pub fn recover(dir: &Path) -> Result<u64, String> {
    let partial = dir.join("partial");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&partial)
        .map_err(|e| format!("{}: {e}", partial.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("requests-") && n.ends_with(".parquet"))
        })
        .collect();
    parts.sort();
    let run = RunDir::new(dir);
    let manifest = std::fs::read_to_string(run.manifest()).ok();
    // Written beside, then renamed over whatever a dying writer left behind.
    let tmp = dir.join(".requests.parquet.recover");
    let mut requests = RequestWriter::create(&tmp)?;
    for p in &parts {
        for row in aifb_core::requests::read(p)?.rows {
            requests.push(record(row))?;
        }
    }
    let rows = requests.finish(manifest.as_deref().map(str::trim))?;
    std::fs::rename(&tmp, run.requests()).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::remove_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(start: i64, end: i64, scheduled: u64, cpu: f64) -> ShardStage {
        ShardStage {
            window: StageWindow {
                stage: 0,
                concurrency: None,
                rate: Some(100.0),
                start_ns: start,
                measure_start_ns: start + 10,
                measure_end_ns: end - 10,
                end_ns: end,
                calibration: None,
            },
            scheduled: Some(scheduled),
            generator_cpu: Some(cpu),
            oversaturated: false,
        }
    }

    #[test]
    fn windows_unite_schedules_add_and_the_busiest_shard_counts() {
        let (runs, cpu) = merge_stages(&[
            vec![stage(100, 1000, 40, 0.2)],
            vec![stage(103, 1004, 60, 0.5)],
        ]);
        assert_eq!(runs.len(), 1);
        let w = &runs[0].window;
        assert_eq!(
            (w.start_ns, w.measure_start_ns, w.measure_end_ns, w.end_ns),
            (100, 110, 994, 1004)
        );
        assert_eq!(runs[0].scheduled, Some(100));
        assert_eq!(cpu.get(&0), Some(&0.5));
    }

    #[test]
    fn interned_values_are_shared() {
        let a = intern("get");
        let b = intern(&String::from("get"));
        assert!(std::ptr::eq(a, b));
    }
}
