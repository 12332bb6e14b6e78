//! `loadgen sim`: a simulated OpenAI-compatible LLM server shaped like vLLM.
//!
//! The [`model::Batcher`] decides what runs; one OS thread paces its steps in real time
//! (sleeping, or burning CPU with `burn_cpu`), and the HTTP side streams each sequence's
//! tokens as they are produced. Capacity follows from the settings: see
//! [`aifb_core::recipe::SimulatorSettings::closed_loop_throughput`] and `docs/simulator.md`.

pub mod model;
mod server;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use aifb_core::recipe::SimulatorSettings;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

pub use server::serve;

use model::{Batcher, Sequence};

/// What a request's stream receives from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimEvent {
    /// One more token, with its 0-based index.
    Token(u32),
    /// The sequence is complete.
    Finished,
    /// The request can never fit the KV budget.
    Refused,
}

enum Command {
    Submit(Sequence, mpsc::UnboundedSender<SimEvent>),
}

type ModelLabel = Vec<(&'static str, String)>;

/// vLLM-named metrics of the simulator.
#[derive(Clone)]
pub struct SimMetrics {
    running: Family<ModelLabel, Gauge>,
    waiting: Family<ModelLabel, Gauge>,
    kv_usage: Family<ModelLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    ttft: Family<ModelLabel, Histogram>,
    e2e: Family<ModelLabel, Histogram>,
    prompt_tokens: Family<ModelLabel, Counter>,
    generation_tokens: Family<ModelLabel, Counter>,
    success: Family<Vec<(&'static str, String)>, Counter>,
    label: ModelLabel,
}

impl SimMetrics {
    fn new(model: &str, registry: &mut Registry) -> Self {
        let m = Self {
            running: Family::default(),
            waiting: Family::default(),
            kv_usage: Family::default(),
            ttft: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    5.0, 7.5, 10.0,
                ])
            }),
            e2e: Family::new_with_constructor(|| {
                Histogram::new([
                    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                    60.0,
                ])
            }),
            prompt_tokens: Family::default(),
            generation_tokens: Family::default(),
            success: Family::default(),
            label: vec![("model_name", model.to_string())],
        };
        registry.register(
            "vllm:num_requests_running",
            "Number of requests in model execution batches",
            m.running.clone(),
        );
        registry.register(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed",
            m.waiting.clone(),
        );
        registry.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage, 1 means 100 percent",
            m.kv_usage.clone(),
        );
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            m.ttft.clone(),
        );
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds",
            m.e2e.clone(),
        );
        registry.register(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            m.generation_tokens.clone(),
        );
        registry.register(
            "vllm:request_success",
            "Count of successfully processed requests",
            m.success.clone(),
        );
        // Like vLLM, expose every series from the start, at zero.
        let l = &m.label;
        let _ = m.running.get_or_create(l);
        let _ = m.waiting.get_or_create(l);
        let _ = m.kv_usage.get_or_create(l);
        let _ = m.ttft.get_or_create(l);
        let _ = m.e2e.get_or_create(l);
        let _ = m.prompt_tokens.get_or_create(l);
        let _ = m.generation_tokens.get_or_create(l);
        let _ = m.success.get_or_create(&vec![
            ("finished_reason", "length".to_string()),
            l[0].clone(),
        ]);
        m
    }
}

/// Handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: std_mpsc::Sender<Command>,
    /// Metrics updated by the engine and the HTTP side.
    pub metrics: SimMetrics,
}

impl Engine {
    /// Starts the engine thread.
    pub fn start(settings: SimulatorSettings, model: &str, registry: &mut Registry) -> Self {
        let metrics = SimMetrics::new(model, registry);
        let (tx, rx) = std_mpsc::channel();
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("sim-engine".into())
            .spawn(move || run_engine(settings, rx, m))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the simulator engine thread: {e}"));
        Self { tx, metrics }
    }

    /// Queues a sequence; its events arrive on the returned receiver.
    pub fn submit(&self, seq: Sequence) -> mpsc::UnboundedReceiver<SimEvent> {
        let (etx, erx) = mpsc::unbounded_channel();
        if let Err(std_mpsc::SendError(Command::Submit(_, etx))) =
            self.tx.send(Command::Submit(seq, etx))
        {
            let _ = etx.send(SimEvent::Refused);
        }
        erx
    }
}

fn pace(deadline: Instant, burn: bool) {
    if burn {
        let mut x = 0u64;
        while Instant::now() < deadline {
            for i in 0..256u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
    } else {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }
}

fn run_engine(settings: SimulatorSettings, rx: std_mpsc::Receiver<Command>, m: SimMetrics) {
    let burn = settings.burn_cpu;
    let mut batcher = Batcher::new(settings);
    let mut streams: HashMap<u64, mpsc::UnboundedSender<SimEvent>> = HashMap::new();
    let label = m.label.clone();
    // Steps are paced against absolute deadlines so that sleep overshoot does not
    // accumulate; after an idle gap the schedule restarts from now.
    let mut last_deadline: Option<Instant> = None;
    let accept = |cmd: Command,
                  batcher: &mut Batcher,
                  streams: &mut HashMap<u64, mpsc::UnboundedSender<SimEvent>>| {
        let Command::Submit(seq, tx) = cmd;
        let id = seq.id;
        match batcher.submit(seq) {
            Ok(()) => {
                streams.insert(id, tx);
            }
            Err(_) => {
                let _ = tx.send(SimEvent::Refused);
            }
        }
    };
    loop {
        if batcher.is_idle() {
            match rx.recv() {
                Ok(cmd) => accept(cmd, &mut batcher, &mut streams),
                Err(_) => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            accept(cmd, &mut batcher, &mut streams);
        }
        let now = Instant::now();
        let start = match last_deadline {
            Some(d) if now.saturating_duration_since(d) < Duration::from_millis(2) => d,
            _ => now,
        };
        let step = batcher.step();
        m.running
            .get_or_create(&label)
            .set(batcher.running() as i64);
        m.waiting
            .get_or_create(&label)
            .set(batcher.waiting() as i64);
        m.kv_usage.get_or_create(&label).set(batcher.kv_usage());
        if step.tokens.is_empty() {
            last_deadline = None;
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let deadline = start + step.duration;
        pace(deadline, burn);
        last_deadline = Some(deadline);
        m.generation_tokens
            .get_or_create(&label)
            .inc_by(step.tokens.len() as u64);
        for (id, index) in &step.tokens {
            let gone = streams
                .get(id)
                .is_none_or(|tx| tx.send(SimEvent::Token(*index)).is_err());
            if gone {
                streams.remove(id);
                batcher.cancel(*id);
            }
        }
        for id in &step.finished {
            if let Some(tx) = streams.remove(id) {
                let _ = tx.send(SimEvent::Finished);
            }
        }
    }
}

/// Shared state of the HTTP side.
pub struct SimState {
    /// The engine.
    pub engine: Engine,
    /// Model id served.
    pub model: String,
    /// The metrics registry.
    pub registry: Registry,
    next_id: std::sync::atomic::AtomicU64,
    /// Where the server-side times of every streamed request go (`loadgen sim --truth`).
    truth: std::sync::OnceLock<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl SimState {
    /// Records the server-side times of every streamed OpenAI request into `path`, one
    /// JSON line each: `request_id` (the `x-request-id` header), `tokens`, and
    /// `token_ns` / `end_ns`, nanoseconds from the handler's start to each token's chunk
    /// and to the end of the stream, on the monotonic clock. They are the truth a
    /// client's measurements can be checked against.
    pub fn record_truth(&self, path: &std::path::Path) -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.truth
            .set(std::sync::Mutex::new(std::io::BufWriter::new(file)))
            .map_err(|_| "the truth log is already open".to_string())
    }

    /// Writes one truth line (flushed, so a killed simulator keeps what it wrote).
    pub(crate) fn write_truth(&self, line: &serde_json::Value) {
        use std::io::Write;
        if let Some(m) = self.truth.get()
            && let Ok(mut w) = m.lock()
        {
            let _ = writeln!(w, "{line}").and_then(|_| w.flush());
        }
    }

    /// Builds the engine and registry.
    pub fn new(settings: SimulatorSettings, model: &str) -> Arc<Self> {
        let mut registry = Registry::default();
        let engine = Engine::start(settings, model, &mut registry);
        Arc::new(Self {
            engine,
            model: model.to_string(),
            registry,
            next_id: Default::default(),
            truth: Default::default(),
        })
    }

    fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}
