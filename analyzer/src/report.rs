//! The report of one run: saturation summary, per-stage table, SLO check, written as
//! `report.md` and `report.json`.

use aifb_core::recipe::{Pattern, Recipe, ServiceKind};
use aifb_core::run::Manifest;
use serde::Serialize;

use crate::knee;
use crate::stages::StageSummary;

/// A point of the sweep named in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LevelPoint {
    /// Stage index.
    pub stage: u32,
    /// Load level.
    pub level: f64,
    /// Throughput at that level (requests/s).
    pub throughput_rps: f64,
}

/// What the simulator's parameters predict (when the service was the simulator).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Sequences that can run together.
    pub batch_limit: u32,
    /// Highest throughput the model allows (requests/s).
    pub capacity_rps: f64,
    /// Closed loop: the model's throughput at each level.
    pub throughput_rps: Vec<f64>,
}

/// The SLO verdict per level and the usable capacity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloCheck {
    /// The objectives, as written.
    pub objectives: Vec<String>,
    /// Per stage: whether every objective was met.
    pub met: Vec<bool>,
    /// Highest level at which every objective was met.
    pub usable: Option<LevelPoint>,
    /// The next level up, which failed an objective (brackets the usable capacity).
    pub first_failing: Option<LevelPoint>,
    /// A level that decides the verdict (the usable one or the first failing) has a P99
    /// from fewer than 368 samples (not bounded).
    pub unbounded_p99: bool,
}

/// A calibration stage of a rate search: closed loop, apart from the load curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationStage {
    /// `synchronous` or `throughput`.
    pub kind: String,
    /// Users.
    pub users: u32,
    /// Its aggregates (`level` is the users).
    pub summary: StageSummary,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Run id.
    pub run_id: String,
    /// Recipe name.
    pub name: String,
    /// `closed` or `open`.
    pub pattern: String,
    /// Run status.
    pub status: String,
    /// Unit of the load level.
    pub level_unit: String,
    /// Per-stage aggregates.
    pub stages: Vec<StageSummary>,
    /// The level of maximum throughput.
    pub max_throughput: Option<LevelPoint>,
    /// The Kneedle knee of throughput versus load.
    pub knee: Option<LevelPoint>,
    /// The point of maximum curvature of throughput versus load (secondary).
    pub curvature_knee: Option<LevelPoint>,
    /// Why the knee may be an artefact of the sweep range.
    pub knee_warning: Option<String>,
    /// 95 % interval of the maximum throughput (batch means at its level).
    pub max_throughput_ci95: Option<(f64, f64)>,
    /// N_sat: the lowest level whose throughput interval reaches the maximum (not
    /// distinguishable from it).
    pub saturation: Option<LevelPoint>,
    /// SLO check, when the recipe has objectives.
    pub slo: Option<SloCheck>,
    /// Simulator prediction, when the service was the simulator.
    pub simulator: Option<Prediction>,
    /// Universal Scalability Law fit of throughput versus users (closed loop, 3+ levels).
    pub usl: Option<crate::usl::Fit>,
    /// Bottleneck findings per stage, strongest first (empty without metrics.parquet).
    pub bottlenecks: Vec<Vec<crate::bottleneck::Finding>>,
    /// The top finding at the level of maximum throughput.
    pub saturation_bottleneck: Option<crate::bottleneck::Finding>,
    /// The calibration stages of a rate search (not points of the curve).
    pub calibration: Vec<CalibrationStage>,
    /// What the rate search found, as the generator decided it (`workload.search`).
    pub search: Option<aifb_core::run::SearchResult>,
}

fn point(s: &StageSummary) -> LevelPoint {
    LevelPoint {
        stage: s.stage,
        level: s.level,
        throughput_rps: s.throughput_rps,
    }
}

fn slo_check(recipe: &Recipe, stages: &[StageSummary]) -> Option<SloCheck> {
    let slo = &recipe.slo;
    let mut objectives = Vec::new();
    if let Some(t) = slo.ttft_p99 {
        objectives.push(format!("ttft_p99 <= {t}"));
    }
    if let Some(t) = slo.e2e_p99 {
        objectives.push(format!("e2e_p99 <= {t}"));
    }
    if let Some(r) = slo.error_rate {
        objectives.push(format!("error_rate <= {r}"));
    }
    if objectives.is_empty() {
        return None;
    }
    let met: Vec<bool> = stages
        .iter()
        .map(|s| {
            let ttft = slo
                .ttft_p99
                .is_none_or(|t| s.ttft.is_some_and(|q| q.p99_estimate <= t.as_secs_f64()));
            let e2e = slo
                .e2e_p99
                .is_none_or(|t| s.latency.is_some_and(|q| q.p99_estimate <= t.as_secs_f64()));
            let err = slo
                .error_rate
                .is_none_or(|r| s.measured > 0 && s.error_rate <= r);
            ttft && e2e && err
        })
        .collect();
    // Stages are in level order. The usable capacity stops below the lowest failing
    // level: a level that passes above it (noise at the limit) does not raise it.
    let first_failing = stages
        .iter()
        .zip(&met)
        .find(|(_, m)| !**m)
        .map(|(s, _)| point(s));
    let usable = stages
        .iter()
        .zip(&met)
        .filter(|(s, m)| **m && first_failing.is_none_or(|f| s.level < f.level))
        .map(|(s, _)| point(s))
        .next_back();
    // The verdict rests on the two levels that bracket it: say when their P99 is not bounded.
    let uses_p99 = slo.ttft_p99.is_some() || slo.e2e_p99.is_some();
    let deciding = [usable, first_failing];
    let unbounded_p99 = uses_p99
        && stages
            .iter()
            .filter(|s| deciding.iter().flatten().any(|d| d.stage == s.stage))
            .any(|s| {
                (slo.ttft_p99.is_some() && s.ttft.is_some_and(|q| q.p99.is_none()))
                    || (slo.e2e_p99.is_some() && s.latency.is_some_and(|q| q.p99.is_none()))
            });
    Some(SloCheck {
        objectives,
        met,
        usable,
        first_failing,
        unbounded_p99,
    })
}

fn prediction(recipe: &Recipe, stages: &[StageSummary]) -> Option<Prediction> {
    if recipe.service.kind != ServiceKind::Simulator {
        return None;
    }
    let sim = &recipe.service.simulator;
    let req = &recipe.workload.request;
    let closed = recipe.workload.pattern == Pattern::Closed
        && recipe.workload.think_time.is_none_or(|t| t.get().is_zero());
    Some(Prediction {
        batch_limit: sim.batch_limit(req.prompt_tokens, req.max_tokens),
        capacity_rps: sim.capacity(req.prompt_tokens, req.max_tokens),
        throughput_rps: if closed {
            stages
                .iter()
                .map(|s| {
                    sim.closed_loop_throughput(s.level as u32, req.prompt_tokens, req.max_tokens)
                })
                .collect()
        } else {
            Vec::new()
        },
    })
}

impl Report {
    /// Builds the report.
    pub fn new(
        manifest: Option<&Manifest>,
        recipe: Option<&Recipe>,
        stages: Vec<StageSummary>,
    ) -> Report {
        let pattern = manifest
            .map(|m| m.pattern.clone())
            .filter(|p| !p.is_empty())
            .or_else(|| {
                stages.first().map(|_| {
                    if recipe.is_some_and(|r| r.workload.pattern == Pattern::Open) {
                        "open"
                    } else {
                        "closed"
                    }
                    .to_string()
                })
            })
            .unwrap_or_default();
        let max_throughput = stages
            .iter()
            .filter(|s| s.throughput_rps > 0.0)
            .max_by(|a, b| a.throughput_rps.total_cmp(&b.throughput_rps))
            .map(point);
        let xs: Vec<f64> = stages.iter().map(|s| s.level).collect();
        let ys: Vec<f64> = stages.iter().map(|s| s.throughput_rps).collect();
        let kneedle = knee::concave_increasing(&xs, &ys, 1.0);
        let knee = kneedle.map(|k| point(&stages[k.index]));
        let curvature_knee = knee::max_curvature(&xs, &ys).map(|i| point(&stages[i]));
        let knee_warning = knee::sweep_artefact(&ys, kneedle.map(|k| k.index));
        let max_stage = max_throughput.and_then(|m| stages.iter().find(|s| s.stage == m.stage));
        let max_throughput_ci95 = max_stage.and_then(|s| s.throughput_ci95);
        let saturation = max_stage.and_then(|best| {
            stages
                .iter()
                .find(|s| {
                    s.throughput_ci95
                        .map_or(s.stage == best.stage, |(_, hi)| hi >= best.throughput_rps)
                })
                .map(point)
        });
        let measured: Vec<&StageSummary> =
            stages.iter().filter(|s| s.throughput_rps > 0.0).collect();
        let usl = (pattern == "closed" && measured.len() >= 3)
            .then(|| {
                let n: Vec<f64> = measured.iter().map(|s| s.level).collect();
                let x: Vec<f64> = measured.iter().map(|s| s.throughput_rps).collect();
                crate::usl::fit(&n, &x).ok()
            })
            .flatten();
        Report {
            run_id: manifest.map(|m| m.id.clone()).unwrap_or_default(),
            name: manifest
                .map(|m| m.name.clone())
                .or_else(|| recipe.map(|r| r.name.clone()))
                .unwrap_or_default(),
            level_unit: if pattern == "open" {
                "req/s".into()
            } else {
                "users".into()
            },
            pattern,
            status: manifest
                .map(|m| format!("{:?}", m.status).to_uppercase())
                .unwrap_or_else(|| "UNKNOWN".into()),
            slo: recipe.and_then(|r| slo_check(r, &stages)),
            simulator: recipe.and_then(|r| prediction(r, &stages)),
            max_throughput,
            knee,
            curvature_knee,
            knee_warning,
            max_throughput_ci95,
            saturation,
            usl,
            bottlenecks: Vec::new(),
            saturation_bottleneck: None,
            calibration: Vec::new(),
            search: None,
            stages,
        }
    }

    /// Adds bottleneck findings (one list per stage, in stage order).
    pub fn with_bottlenecks(mut self, findings: Vec<Vec<crate::bottleneck::Finding>>) -> Self {
        if let Some(best) = &self.max_throughput {
            let at = self.stages.iter().position(|s| s.stage == best.stage);
            self.saturation_bottleneck = at
                .and_then(|i| findings.get(i))
                .and_then(|f| f.first())
                .cloned();
        }
        self.bottlenecks = findings;
        self
    }

    /// Adds a rate search's calibration stages (with their windows, in the same order)
    /// and what the search found.
    pub fn with_search(
        mut self,
        calibration: Vec<StageSummary>,
        windows: &[aifb_core::run::StageWindow],
        search: Option<aifb_core::run::SearchResult>,
    ) -> Self {
        self.calibration = calibration
            .into_iter()
            .zip(windows)
            .map(|(summary, w)| CalibrationStage {
                kind: w.calibration.map_or("calibration", |c| c.as_str()).into(),
                users: w.concurrency.unwrap_or(0),
                summary,
            })
            .collect();
        self.search = search;
        self
    }

    /// The short summary printed after a run.
    pub fn headline(&self) -> String {
        let unit = &self.level_unit;
        let mut out = String::new();
        match &self.max_throughput {
            Some(p) => {
                out.push_str(&format!("max throughput {:.2} req/s", p.throughput_rps));
                if let Some((lo, hi)) = self.max_throughput_ci95 {
                    out.push_str(&format!(" [{lo:.2}, {hi:.2}]"));
                }
                out.push_str(&format!(" at {} {unit}", fmt_level(p.level)));
                if let Some(s) = self.saturation.filter(|s| s.stage != p.stage) {
                    out.push_str(&format!(
                        ", indistinguishable from {} {unit} up",
                        fmt_level(s.level)
                    ));
                }
            }
            None => out.push_str("no successful request was measured"),
        }
        if let Some(k) = &self.knee {
            out.push_str(&format!("; knee at {} {unit}", fmt_level(k.level)));
        }
        if let Some(slo) = &self.slo {
            match (&slo.usable, &slo.first_failing) {
                (Some(u), Some(f)) => out.push_str(&format!(
                    "; SLOs met up to {} {unit} (not at {})",
                    fmt_level(u.level),
                    fmt_level(f.level)
                )),
                (Some(u), None) => out.push_str(&format!(
                    "; SLOs met up to {} {unit}, the highest level run",
                    fmt_level(u.level)
                )),
                (None, _) => out.push_str("; SLOs met at no level"),
            }
            if slo.unbounded_p99 {
                out.push_str(" (a deciding P99 comes from fewer than 368 samples: not bounded)");
            }
        }
        out
    }

    /// report.md.
    pub fn markdown(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |s| format!("{:.1}", s * 1e3));
        let mut md = format!(
            "# aifb report: {}\n\nRun `{}` ({} loop, {}).\n\n",
            self.name, self.run_id, self.pattern, self.status
        );
        md.push_str(&format!("**{}.**\n\n", self.headline()));
        if let Some(p) = &self.simulator {
            md.push_str(&format!(
                "Simulator model: batch limit {} sequences, predicted capacity {:.2} req/s.\n\n",
                p.batch_limit, p.capacity_rps
            ));
        }
        if let (Some(b), Some(p)) = (&self.saturation_bottleneck, &self.max_throughput) {
            md.push_str(&format!(
                "Bottleneck at {} {}: **{}** ({}). {}.\n\n",
                fmt_level(p.level),
                self.level_unit,
                b.class,
                b.evidence.join("; "),
                capitalized(&b.recommendation)
            ));
        }
        if let (Some(k), Some(c)) = (&self.knee, &self.curvature_knee)
            && k.stage != c.stage
        {
            md.push_str(&format!(
                "Kneedle puts the knee at {} {}, maximum curvature at {} {}.\n\n",
                fmt_level(k.level),
                self.level_unit,
                fmt_level(c.level),
                self.level_unit
            ));
        }
        if let Some(u) = &self.usl {
            let m = &u.model;
            let peak = match (u.peak_concurrency, u.peak_throughput) {
                (Some(n), Some(x)) => format!("peak {x:.2} req/s at {n:.1} users"),
                _ => "no peak within the model".to_string(),
            };
            md.push_str(&format!(
                "USL fit: σ = {:.4}, κ = {:.2e}, λ = {:.3} req/s per user; {peak}; R² = {:.3}{}.\n\n",
                m.sigma,
                m.kappa,
                m.lambda,
                u.r_squared,
                if u.good { "" } else { " (poor fit: read with care)" }
            ));
        }
        // Token and TTFT columns only for LLM runs.
        let llm = self
            .stages
            .iter()
            .any(|s| s.ttft.is_some() || s.output_tokens_per_s > 0.0);
        let (llm_head, llm_align) = if llm {
            (" tokens/s | TTFT p50 ms | TTFT p99 ms |", "---:|---:|---:|")
        } else {
            ("", "")
        };
        md.push_str(&format!(
            "| stage | {} | throughput req/s | p50 ms | p90 ms | p99 ms |{llm_head} measured | errors |\n",
            self.level_unit
        ));
        md.push_str(&format!(
            "|---:|---:|---:|---:|---:|---:|{llm_align}---:|---:|\n"
        ));
        for s in &self.stages {
            let llm_cells = if llm {
                format!(
                    " {:.1} | {} | {} |",
                    s.output_tokens_per_s,
                    ms(s.ttft.and_then(|q| q.p50)),
                    ms(s.ttft.and_then(|q| q.p99))
                )
            } else {
                String::new()
            };
            md.push_str(&format!(
                "| {} | {} | {:.2} | {} | {} | {} |{llm_cells} {} | {:.1} % |\n",
                s.stage,
                fmt_level(s.level),
                s.throughput_rps,
                ms(s.latency.and_then(|q| q.p50)),
                ms(s.latency.and_then(|q| q.p90)),
                ms(s.latency.and_then(|q| q.p99)),
                s.measured,
                s.error_rate * 100.0
            ));
        }
        if let Some(slo) = &self.slo {
            md.push_str(&format!("\nSLOs: {}.\n", slo.objectives.join(", ")));
        }
        md.push_str(&self.search_markdown());
        let warned: Vec<&StageSummary> = self
            .stages
            .iter()
            .filter(|s| !s.warnings.is_empty())
            .collect();
        if !warned.is_empty() || self.knee_warning.is_some() {
            md.push_str("\n## Validity\n\n");
            if let Some(w) = &self.knee_warning {
                md.push_str(&format!("- knee: {w}\n"));
            }
            for s in warned {
                for w in &s.warnings {
                    md.push_str(&format!(
                        "- stage {} ({} {}): {w}\n",
                        s.stage,
                        fmt_level(s.level),
                        self.level_unit
                    ));
                }
            }
        }
        md.push_str(
            "\nThroughput counts successful requests that ended inside each stage's measured window. \
             Latency is from send to last byte; TTFT from send to the first content token; percentiles \
             are nearest-rank over the requests started in the measured window.\n\n![throughput and latency](plots/throughput_latency.svg)\n",
        );
        md
    }

    /// The rate search's section: its calibration stages and what it found.
    fn search_markdown(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |s| format!("{:.1}", s * 1e3));
        let mut md = String::new();
        if self.search.is_none() && self.calibration.is_empty() {
            return md;
        }
        let mode = self.search.as_ref().map_or("", |s| s.mode.as_str());
        md.push_str(&format!(
            "\n## Rate search{}\n\n",
            if mode.is_empty() {
                String::new()
            } else {
                format!(" ({mode})")
            }
        ));
        if !self.calibration.is_empty() {
            md.push_str("Calibration stages (closed loop, no think time; not points of the curve above):\n\n");
            md.push_str("| stage | calibration | users | throughput req/s | p50 ms | p99 ms | measured | errors |\n");
            md.push_str("|---:|---|---:|---:|---:|---:|---:|---:|\n");
            for c in &self.calibration {
                let s = &c.summary;
                md.push_str(&format!(
                    "| {} | {} | {} | {:.2} | {} | {} | {} | {:.1} % |\n",
                    s.stage,
                    c.kind,
                    c.users,
                    s.throughput_rps,
                    ms(s.latency.and_then(|q| q.p50)),
                    ms(s.latency.and_then(|q| q.p99)),
                    s.measured,
                    s.error_rate * 100.0
                ));
            }
            md.push('\n');
        }
        if let Some(s) = &self.search {
            let rps = |v: Option<f64>| {
                v.map_or("none".to_string(), |r| {
                    format!("{} req/s", fmt_level((r * 100.0).round() / 100.0))
                })
            };
            if s.mode == "slo" {
                md.push_str(&format!(
                    "Highest rate that met every SLO: {}; lowest that missed one: {} (the generator's p99s, stage by stage).",
                    rps(s.max_rate_meeting_slo),
                    rps(s.min_rate_missing_slo)
                ));
            } else {
                md.push_str(&format!(
                    "Rates spread strictly between the synchronous throughput ({}) and the probe's ({}).",
                    rps(s.synchronous_rps),
                    rps(s.throughput_rps)
                ));
            }
            md.push_str(&format!(" The search ended: {}.\n", s.ended));
        }
        md
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A level without a trailing `.0` when whole.
pub fn fmt_level(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}
