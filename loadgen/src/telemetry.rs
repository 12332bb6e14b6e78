//! The loadgen's own Prometheus series (`aifb_loadgen_*`), served on `/metrics` and
//! scraped into metrics.parquet under source `loadgen`.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type OpLabel = Vec<(&'static str, &'static str)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every series the loadgen exports.
pub struct Telemetry {
    /// The registry holding them.
    pub registry: Registry,
    /// `aifb_loadgen_requests_total{op,outcome}`.
    pub requests: Family<OpLabel, Counter>,
    /// `aifb_loadgen_request_duration_seconds{op}`, from send.
    pub duration: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_response_time_seconds{op}`, from intended start.
    pub response_time: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_ttft_seconds{op}`.
    pub ttft: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_inter_token_latency_seconds{op}`: per token (a chunk's gap split over
    /// the tokens the server says it carried; the chunk gap when it does not say).
    pub itl: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_inter_chunk_latency_seconds{op}`: gap between content chunks.
    pub icl: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_tpot_seconds{op}`.
    pub tpot: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_schedule_lag_seconds{op}`.
    pub schedule_lag: Family<OpLabel, Histogram>,
    /// `aifb_loadgen_in_flight`.
    pub in_flight: Gauge,
    /// `aifb_loadgen_client_queue`: open-loop arrivals waiting for a `max_in_flight` slot.
    pub client_queue: Gauge,
    /// `aifb_loadgen_offered_rate` (open loop, requests/s).
    pub offered_rate: Gauge<f64, AtomicU64>,
    /// `aifb_loadgen_target_concurrency` (closed loop, users).
    pub target_concurrency: Gauge,
    /// `aifb_loadgen_stage`: index of the running stage.
    pub stage: Gauge,
    /// `aifb_loadgen_output_tokens_total{op}`.
    pub output_tokens: Family<OpLabel, Counter>,
    /// `aifb_loadgen_prompt_tokens_total{op}`.
    pub prompt_tokens: Family<OpLabel, Counter>,
    /// `aifb_loadgen_server_reported_duration_seconds{op,phase}`: durations the server
    /// reports in its answers (Ollama: `total`, `load`, `prompt_eval`, `eval`).
    pub server_reported: Family<OpLabel, Histogram>,
    /// Each operation's series, looked up once (see [`Telemetry::op`]).
    ops: std::sync::Mutex<Vec<std::sync::Arc<OpSeries>>>,
}

/// The series of one operation, taken from their families the first time each is used
/// (so the exposition shows exactly the series a run produced). A request then records
/// into them without hashing label sets or allocating them.
#[derive(Debug)]
pub struct OpSeries {
    op: &'static str,
    ok: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
    response_time: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    itl: OnceLock<Histogram>,
    icl: OnceLock<Histogram>,
    tpot: OnceLock<Histogram>,
    schedule_lag: OnceLock<Histogram>,
    output_tokens: OnceLock<Counter>,
    prompt_tokens: OnceLock<Counter>,
}

macro_rules! op_series {
    ($($name:ident: $kind:ty, $doc:literal;)*) => {
        impl OpSeries {
            $(
                #[doc = $doc]
                pub fn $name(&self, t: &Telemetry) -> &$kind {
                    self.$name
                        .get_or_init(|| t.$name.get_or_create(&vec![("op", self.op)]).clone())
                }
            )*
        }
    };
}

op_series! {
    duration: Histogram, "`aifb_loadgen_request_duration_seconds` of this operation.";
    response_time: Histogram, "`aifb_loadgen_response_time_seconds` of this operation.";
    ttft: Histogram, "`aifb_loadgen_ttft_seconds` of this operation.";
    itl: Histogram, "`aifb_loadgen_inter_token_latency_seconds` of this operation.";
    icl: Histogram, "`aifb_loadgen_inter_chunk_latency_seconds` of this operation.";
    tpot: Histogram, "`aifb_loadgen_tpot_seconds` of this operation.";
    schedule_lag: Histogram, "`aifb_loadgen_schedule_lag_seconds` of this operation.";
    output_tokens: Counter, "`aifb_loadgen_output_tokens_total` of this operation.";
    prompt_tokens: Counter, "`aifb_loadgen_prompt_tokens_total` of this operation.";
}

impl OpSeries {
    /// `aifb_loadgen_requests_total{op, outcome}`: the `ok` series is kept, the error
    /// classes are looked up.
    pub fn finished(&self, t: &Telemetry, outcome: &'static str) {
        if outcome == "ok" {
            self.ok
                .get_or_init(|| {
                    t.requests
                        .get_or_create(&vec![("op", self.op), ("outcome", "ok")])
                        .clone()
                })
                .inc();
        } else {
            t.requests
                .get_or_create(&vec![("op", self.op), ("outcome", outcome)])
                .inc();
        }
    }
}

impl Telemetry {
    /// Registers every series.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let t = Telemetry {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            response_time: Family::new_with_constructor(latency_histogram),
            ttft: Family::new_with_constructor(latency_histogram),
            itl: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            icl: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            tpot: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            schedule_lag: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.00001, 2.0, 20))
            }),
            in_flight: Gauge::default(),
            client_queue: Gauge::default(),
            offered_rate: Gauge::default(),
            target_concurrency: Gauge::default(),
            stage: Gauge::default(),
            output_tokens: Family::default(),
            prompt_tokens: Family::default(),
            server_reported: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
            ops: Default::default(),
        };
        registry.register(
            "aifb_loadgen_client_queue",
            "Open-loop arrivals waiting in the client queue for a max_in_flight slot",
            t.client_queue.clone(),
        );
        registry.register(
            "aifb_loadgen_server_reported_duration_seconds",
            "Durations the server reports in its answers (Ollama's total, load, prompt_eval and eval), by operation and phase",
            t.server_reported.clone(),
        );
        registry.register(
            "aifb_loadgen_requests",
            "Requests finished, by operation and outcome (ok or error class)",
            t.requests.clone(),
        );
        registry.register(
            "aifb_loadgen_request_duration_seconds",
            "Service latency: from send to last byte",
            t.duration.clone(),
        );
        registry.register(
            "aifb_loadgen_response_time_seconds",
            "Response time from the intended start (coordinated-omission corrected)",
            t.response_time.clone(),
        );
        registry.register(
            "aifb_loadgen_ttft_seconds",
            "Time from send to the first content token",
            t.ttft.clone(),
        );
        registry.register(
            "aifb_loadgen_inter_token_latency_seconds",
            "Gap between consecutive output tokens (a chunk's gap split over its tokens when the server counts them per chunk, else the chunk gap)",
            t.itl.clone(),
        );
        registry.register(
            "aifb_loadgen_inter_chunk_latency_seconds",
            "Gap between consecutive content chunks",
            t.icl.clone(),
        );
        registry.register(
            "aifb_loadgen_tpot_seconds",
            "Time per output token after the first",
            t.tpot.clone(),
        );
        registry.register(
            "aifb_loadgen_schedule_lag_seconds",
            "Delay between intended and actual send",
            t.schedule_lag.clone(),
        );
        registry.register(
            "aifb_loadgen_in_flight",
            "Requests sent and not yet finished",
            t.in_flight.clone(),
        );
        registry.register(
            "aifb_loadgen_offered_rate",
            "Offered request rate of the open loop (requests per second)",
            t.offered_rate.clone(),
        );
        registry.register(
            "aifb_loadgen_target_concurrency",
            "Users of the closed loop in this stage",
            t.target_concurrency.clone(),
        );
        registry.register(
            "aifb_loadgen_stage",
            "Index of the running load level",
            t.stage.clone(),
        );
        registry.register(
            "aifb_loadgen_output_tokens",
            "Output tokens received",
            t.output_tokens.clone(),
        );
        registry.register(
            "aifb_loadgen_prompt_tokens",
            "Prompt tokens sent",
            t.prompt_tokens.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// The series of operation `op`.
    pub fn op(&self, op: &'static str) -> std::sync::Arc<OpSeries> {
        let Ok(mut ops) = self.ops.lock() else {
            return std::sync::Arc::new(OpSeries::new(op));
        };
        if let Some(s) = ops.iter().find(|s| s.op == op) {
            return s.clone();
        }
        let s = std::sync::Arc::new(OpSeries::new(op));
        ops.push(s.clone());
        s
    }

    /// The exposition text (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("cannot encode loadgen metrics: {e}");
        }
        text
    }
}

impl OpSeries {
    fn new(op: &'static str) -> OpSeries {
        OpSeries {
            op,
            ok: OnceLock::new(),
            duration: OnceLock::new(),
            response_time: OnceLock::new(),
            ttft: OnceLock::new(),
            itl: OnceLock::new(),
            icl: OnceLock::new(),
            tpot: OnceLock::new(),
            schedule_lag: OnceLock::new(),
            output_tokens: OnceLock::new(),
            prompt_tokens: OnceLock::new(),
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
