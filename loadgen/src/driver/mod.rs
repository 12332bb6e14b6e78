//! Drivers: one module per service protocol behind one trait, so every service is driven by
//! the same open/closed-loop engine, histograms, `/metrics` and Parquet rows.
//!
//! | module | service | ops |
//! |---|---|---|
//! | [`openai`] | simulator, vLLM, any OpenAI-compatible server | `chat`, `completion` |
//! | [`ollama`] | Ollama's native API (NDJSON) | `chat`, `completion` |
//! | [`redis`] | Redis | `get`, `set` |
//! | [`postgres`] | PostgreSQL | `tpcb`, `select` |
//! | [`s3`] | S3 stores (MinIO, Garage, …) | `put`, `get` |
//! | [`chroma`] | ChromaDB v2 API | `query`, `upsert` |
//! | [`qdrant`] | Qdrant REST API | `query`, `upsert` |
//! | [`http`] | any HTTP service | `http` |
//!
//! A driver connects (checking credentials), prepares its data (`setup`: tables, bucket,
//! collection, preload), answers a readiness `ping`, and turns one [`Call`] into one
//! [`Exchange`]: the instants of send, first byte, first token and end, the outcome and
//! the byte and token counts. It never panics on what a server answers.

pub mod chroma;
pub mod h1;
pub mod http;
pub mod ollama;
pub mod openai;
pub mod postgres;
pub mod qdrant;
pub mod redis;
pub mod s3;

use std::future::Future;
use std::time::{Duration, Instant};

use aifb_core::recipe::{KeyDistribution, Recipe};
use aifb_core::requests::error_class;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

/// Everything a driver needs to connect.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The resolved recipe (its `service` and `workload` sections).
    pub recipe: Recipe,
    /// Address of the service: `http://host:port`, `redis://…`, `postgres://…`.
    pub target: String,
    /// The password (`service.auth`), resolved.
    pub secret: Option<String>,
    /// Connections to open when the recipe does not say: the most users of a closed-loop
    /// sweep, else a default for open loops.
    pub connections: u32,
}

impl Spec {
    /// A spec for `recipe` against `target`, resolving the password.
    pub fn new(recipe: &Recipe, target: &str) -> Result<Spec, DriverError> {
        let recipe = recipe.resolved();
        let secret = recipe.service.auth.secret().map_err(DriverError::new)?;
        let w = &recipe.workload;
        let connections = match (&w.search, w.pattern) {
            // The throughput probe's users.
            (Some(s), _) => s.users.max(16),
            (None, aifb_core::recipe::Pattern::Closed) => {
                w.levels.iter().cloned().fold(1.0, f64::max).min(100_000.0) as u32
            }
            (None, aifb_core::recipe::Pattern::Open) => 16,
        };
        Ok(Spec {
            target: target.trim_end_matches('/').to_string(),
            recipe,
            secret,
            connections,
        })
    }
}

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Sequence number of the request in this client (seeds its random choices).
    pub seq: u64,
    /// User (closed loop) or arrival (open loop) index.
    pub worker: u32,
    /// The trace entry this request replays (`arrival: trace`).
    pub entry: Option<u64>,
    /// Request id, sent where the protocol allows (`x-request-id`).
    pub request_id: &'a str,
    /// The request's deadline.
    pub timeout: Duration,
}

/// How one request went, in monotonic instants.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Operation (`op` in requests.parquet).
    pub op: &'static str,
    /// Written to the socket (just before).
    pub sent: Instant,
    /// Response headers (or first reply byte) received.
    pub first_byte: Option<Instant>,
    /// First chunk with content, reasoning or tool-call output.
    pub first_token: Option<Instant>,
    /// First chunk with answer output (content or a tool call), after any reasoning.
    pub first_answer: Option<Instant>,
    /// Gap before every content chunk after the first (inter-chunk latency).
    pub chunk_gaps: Vec<Duration>,
    /// Inter-token latencies: a chunk's gap split evenly over the tokens the server says
    /// it carried (per-chunk usage), else the chunk gap itself.
    pub token_gaps: Vec<Duration>,
    /// Every content chunk: when, tokens in it (when the server says), answer or
    /// reasoning.
    pub chunk_log: Vec<(Instant, Option<u32>, bool)>,
    /// Last byte or error.
    pub end: Instant,
    /// Protocol status (HTTP).
    pub status: Option<u16>,
    /// Error class, `None` on success.
    pub error: Option<&'static str>,
    /// Request bytes.
    pub bytes_sent: u64,
    /// Response bytes.
    pub bytes_received: u64,
    /// Prompt tokens (LLM).
    pub prompt_tokens: Option<u32>,
    /// Output tokens (LLM).
    pub output_tokens: Option<u32>,
    /// Content chunks received (LLM).
    pub chunks: Option<u32>,
    /// Durations the server reported in its answer, by phase (Ollama's `*_duration`).
    pub server_reported: Vec<(&'static str, Duration)>,
}

impl Exchange {
    /// An exchange of `op` starting now.
    pub fn start(op: &'static str, bytes_sent: u64) -> Exchange {
        let now = Instant::now();
        Exchange {
            op,
            sent: now,
            first_byte: None,
            first_token: None,
            first_answer: None,
            chunk_gaps: Vec::new(),
            token_gaps: Vec::new(),
            chunk_log: Vec::new(),
            end: now,
            status: None,
            error: None,
            bytes_sent,
            bytes_received: 0,
            prompt_tokens: None,
            output_tokens: None,
            chunks: None,
            server_reported: Vec::new(),
        }
    }

    /// Marks the end now, as a timeout when the exchange ran out of time.
    pub fn ended(mut self, timed_out: bool) -> Exchange {
        if timed_out {
            self.error = Some(error_class::TIMEOUT);
        }
        self.end = Instant::now();
        self
    }

    /// Marks the end now; `error` `None` is a success.
    pub fn finish(mut self, error: Option<&'static str>) -> Exchange {
        self.end = Instant::now();
        if self.error.is_none() {
            self.error = error;
        }
        self
    }
}

/// A driver failure outside a request (connect, credentials, setup): one line for the
/// user. A permanent failure (wrong password, missing bucket) is not retried while waiting
/// for the service to become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverError {
    /// What went wrong, one line.
    pub message: String,
    /// Retrying cannot help.
    pub permanent: bool,
}

impl DriverError {
    /// A failure that may pass (the service is still starting).
    pub fn new(message: String) -> DriverError {
        DriverError {
            message,
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: String) -> DriverError {
        DriverError {
            message,
            permanent: true,
        }
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DriverError {}

/// A service protocol.
pub trait Driver: Sized + Send + Sync + 'static {
    /// Connects to the service and checks the credentials.
    fn connect(spec: &Spec) -> impl Future<Output = Result<Self, DriverError>> + Send;
    /// A cheap readiness check (HTTP health path, `PING`, `SELECT 1`, `ListBuckets`).
    fn ping(&self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Prepares the data the workload needs (tables, bucket, collection, preload).
    fn setup(&self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// The operation request `seq` performs.
    fn op(&self, seq: u64) -> &'static str;
    /// Sends one request and follows it to its end.
    fn call(&self, call: Call<'_>) -> impl Future<Output = Exchange> + Send;
    /// What the service says of itself: its version and the models it serves (best
    /// effort; recorded in the run manifest).
    fn identity(&self) -> impl Future<Output = Identity> + Send {
        async { Identity::default() }
    }
    /// Removes what `setup` created, when the recipe asks for it.
    fn teardown(&self) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// What a service says of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Version string.
    pub version: Option<String>,
    /// Models served.
    pub models: Vec<String>,
}

/// GETs JSON from `url` (two seconds at most); `None` on any failure.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The random source of request `seq`: the same seed and sequence number always make the
/// same choices, whatever the timing.
pub fn rng_for(seed: u64, seq: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Picks the operation of each request by relative weights, reproducibly: request `seq`
/// of a run with `seed` always gets the same operation and the same random stream.
#[derive(Debug, Clone)]
pub struct Mix {
    ops: Vec<(&'static str, f64)>,
    seed: u64,
}

impl Mix {
    /// A mix from `(op, weight)` pairs; zero weights are dropped.
    pub fn new(seed: u64, weights: &[(&'static str, f64)]) -> Mix {
        let total: f64 = weights.iter().map(|(_, w)| w.max(0.0)).sum();
        let mut acc = 0.0;
        let mut ops = Vec::new();
        for &(op, w) in weights {
            if w > 0.0 && total > 0.0 {
                acc += w / total;
                ops.push((op, acc));
            }
        }
        Mix { ops, seed }
    }

    /// The operation for a uniform draw `u` in [0, 1).
    pub fn pick(&self, u: f64) -> &'static str {
        self.ops
            .iter()
            .find(|(_, c)| u < *c)
            .or(self.ops.last())
            .map_or("none", |(op, _)| op)
    }

    /// The operation of request `seq` and the random stream for its other choices.
    pub fn draw(&self, seq: u64) -> (&'static str, SmallRng) {
        use rand::RngExt;
        let mut rng = rng_for(self.seed, seq);
        (self.pick(rng.random()), rng)
    }

    /// The operation of request `seq`.
    pub fn op(&self, seq: u64) -> &'static str {
        self.draw(seq).0
    }
}

/// Picks keys `0..n` uniformly or by a Zipf law (key 0 the hottest).
#[derive(Debug, Clone)]
pub struct Keyspace {
    n: u64,
    zipf: Option<Zipf<f64>>,
}

impl Keyspace {
    /// A key space of `n` keys.
    pub fn new(n: u64, distribution: KeyDistribution, exponent: f64) -> Keyspace {
        let n = n.max(1);
        let zipf = match distribution {
            KeyDistribution::Uniform => None,
            KeyDistribution::Zipfian => Zipf::new(n as f64, exponent).ok(),
        };
        Keyspace { n, zipf }
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// True when the key space is a single key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Draws a key index.
    pub fn draw(&self, rng: &mut SmallRng) -> u64 {
        use rand::RngExt;
        match &self.zipf {
            Some(z) => (z.sample(rng) as u64).clamp(1, self.n) - 1,
            None => rng.random_range(0..self.n),
        }
    }
}

/// A value of `len` bytes, deterministic in `key` (so a read can be checked).
pub fn payload(key: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for b in x.to_le_bytes() {
            if out.len() < len {
                // Printable, so the values are readable in redis-cli.
                out.push(b'a' + (b % 26));
            }
        }
    }
    out
}

/// A vector of `dim` components in [-1, 1], deterministic in `id`: what preloading wrote
/// can be recomputed, and a query for vector `id` must find `id` first.
pub fn vector(id: u64, dim: u32) -> Vec<f32> {
    let mut x = id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x9E37_79B9_7F4A_7C15;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Sends an HTTP request, recording the first byte (response headers) and the status, or
/// the error class when no response came.
///
/// A pooled keep-alive connection that the server has just closed (servers close idle or
/// much-used connections) fails before any response byte; such a request is sent once more
/// on a new connection, as browsers and HTTP clients do. The exchange keeps its first send
/// time, so the retry's cost shows in the latency.
pub async fn send(req: reqwest::RequestBuilder, x: &mut Exchange) -> Option<reqwest::Response> {
    let again = req.try_clone();
    let first = req.send().await;
    let result = match (first, again) {
        (Err(e), Some(again)) if classify(&e) == error_class::RESET => again.send().await,
        (r, _) => r,
    };
    match result {
        Ok(r) => {
            x.first_byte = Some(Instant::now());
            x.status = Some(r.status().as_u16());
            Some(r)
        }
        Err(e) => {
            x.error = Some(classify(&e));
            None
        }
    }
}

/// How a streamed body is cut into frames (SSE events, NDJSON lines).
pub trait Framing: Default {
    /// Feeds bytes; returns the frames they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<String>;
    /// The last frame when the body ended without its terminator.
    fn finish(&mut self) -> Option<String>;
}

/// What the frames of one streamed answer said.
pub trait TokenFold: Default {
    /// Folds one frame; true when it carried a token.
    fn take(&mut self, frame: &str) -> bool;
    /// Frames that carried tokens.
    fn chunks(&self) -> u32;
    /// Prompt and output tokens as the server counted them.
    fn counts(&self) -> Option<(u32, u32)>;
    /// The answer ended properly (finish reason, `done`).
    fn finished(&self) -> bool;
    /// An error frame or a frame that was not understood.
    fn failed(&self) -> bool;
    /// Whether the last frame that carried a token carried answer output (content or a
    /// tool call) rather than reasoning only.
    fn answered(&self) -> bool {
        true
    }
    /// The output tokens the server counted up to and including the last frame, when it
    /// reports them per frame (vLLM's `continuous_usage_stats`).
    fn tokens_so_far(&self) -> Option<u32> {
        None
    }
}

/// Where the bytes of a response body come from, chunk by chunk as they arrive.
pub trait ByteSource: Send {
    /// The next chunk; `None` at the end of the body, an error class when it broke off.
    fn next_chunk(
        &mut self,
    ) -> impl Future<Output = Option<Result<bytes::Bytes, &'static str>>> + Send;
}

/// A reqwest response's body.
pub struct ReqwestBody(
    std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static>,
    >,
);

impl ReqwestBody {
    /// The body of `resp`.
    pub fn new(resp: reqwest::Response) -> ReqwestBody {
        ReqwestBody(Box::pin(resp.bytes_stream()))
    }
}

impl ByteSource for ReqwestBody {
    async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, &'static str>> {
        use futures_util::StreamExt;
        self.0.next().await.map(|r| r.map_err(|e| classify(&e)))
    }
}

/// A body read over the lean HTTP/1.1 client, from the connection that carries it.
impl ByteSource for h1::Lease<'_> {
    async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, &'static str>> {
        self.chunk().await
    }
}

/// Sends a request over the lean HTTP/1.1 client, recording the first byte (response head)
/// and the status, or the error class when no response came.
pub async fn send_lean<'a>(
    pool: &'a h1::Pool,
    request: &h1::Request<'_>,
    x: &mut Exchange,
) -> Option<(h1::Lease<'a>, u16)> {
    match pool.send(request).await {
        Ok((lease, status)) => {
            x.first_byte = Some(Instant::now());
            x.status = Some(status);
            Some((lease, status))
        }
        Err(e) => {
            x.error = Some(e);
            None
        }
    }
}

/// Reads a whole body, counting its bytes, and returns them when `keep` (else an empty
/// buffer); `None`, with the error class in `x`, when it broke off.
pub async fn read_body(
    body: &mut impl ByteSource,
    x: &mut Exchange,
    keep: bool,
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(item) = body.next_chunk().await {
        match item {
            Ok(b) => {
                x.bytes_received += b.len() as u64;
                if keep {
                    buf.extend_from_slice(&b);
                }
            }
            Err(e) => {
                x.error = Some(e);
                return None;
            }
        }
    }
    Some(buf)
}

/// Reads a streamed answer to its end: times the first token and the gap before every
/// later one, counts bytes, and fills the token counts and the outcome (`protocol` for an
/// error frame, `truncated` when it never finished). Returns the fold for driver-specific
/// fields.
pub async fn read_stream<F: Framing, S: TokenFold>(
    body: &mut impl ByteSource,
    x: &mut Exchange,
) -> S {
    let mut framing = F::default();
    let mut state = S::default();
    let mut last: Option<Instant> = None;
    let mut counted: Option<u32> = None;
    while let Some(item) = body.next_chunk().await {
        match item {
            Ok(bytes) => {
                let now = Instant::now();
                x.bytes_received += bytes.len() as u64;
                for frame in framing.push(&bytes) {
                    if state.take(&frame) {
                        // Tokens in this chunk: the server's running count when it gives
                        // one, else none known (a chunk is then taken as one token).
                        let tokens = state
                            .tokens_so_far()
                            .map(|n| n.saturating_sub(counted.unwrap_or(0)));
                        if tokens.is_some() {
                            counted = state.tokens_so_far();
                        }
                        x.first_token.get_or_insert(now);
                        if state.answered() {
                            x.first_answer.get_or_insert(now);
                        }
                        if let Some(prev) = last {
                            let gap = now - prev;
                            x.chunk_gaps.push(gap);
                            match tokens {
                                // A chunk of k tokens: k inter-token gaps of gap/k.
                                Some(k) if k > 1 => x
                                    .token_gaps
                                    .extend(std::iter::repeat_n(gap / k, k as usize)),
                                Some(0) => {}
                                _ => x.token_gaps.push(gap),
                            }
                        }
                        x.chunk_log.push((now, tokens, state.answered()));
                        last = Some(now);
                    }
                }
            }
            Err(e) => {
                x.error = Some(e);
                break;
            }
        }
    }
    if let Some(frame) = framing.finish() {
        state.take(&frame);
    }
    x.chunks = Some(state.chunks());
    match state.counts() {
        Some((p, c)) => {
            x.prompt_tokens = Some(p);
            x.output_tokens = Some(c);
        }
        None => x.output_tokens = Some(state.chunks()),
    }
    if x.error.is_none() {
        if state.failed() {
            x.error = Some(error_class::PROTOCOL);
        } else if !state.finished() {
            x.error = Some(error_class::TRUNCATED);
        }
    }
    state
}

/// What one vector-database request does: query the neighbours of a preloaded vector, or
/// upsert vectors over preloaded ids (the collection keeps its size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorOp {
    /// Top-k query for the vector of this id.
    Query(u64),
    /// Upsert of the vectors of these ids.
    Upsert(Vec<u64>),
}

impl VectorOp {
    /// The operation of request `seq`: `preload` ids to draw from, `batch` per upsert.
    pub fn draw(mix: &Mix, seq: u64, preload: u64, batch: u32) -> (&'static str, VectorOp) {
        use rand::RngExt;
        let (op, mut rng) = mix.draw(seq);
        let space = preload.max(1);
        let v = if op == "query" {
            VectorOp::Query(rng.random_range(0..space))
        } else {
            VectorOp::Upsert((0..batch).map(|_| rng.random_range(0..space)).collect())
        };
        (op, v)
    }
}

/// The id ranges in which `n` vectors are preloaded (500 per request).
pub fn preload_batches(n: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    (0..n.div_ceil(500)).map(move |b| b * 500..((b + 1) * 500).min(n))
}

/// The error class of a failed reqwest call.
pub fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        error_class::TIMEOUT
    } else if e.is_connect() {
        error_class::CONNECT
    } else if e.is_body() || e.is_decode() || e.is_request() {
        error_class::RESET
    } else {
        error_class::PROTOCOL
    }
}

/// The error class of an unsuccessful HTTP status: 429 and 503 are the server pushing
/// back (Ollama's "server busy", vLLM's queue limits), not a failure of the request.
pub fn status_class(status: u16) -> &'static str {
    match status {
        429 | 503 => error_class::BACKPRESSURE,
        400..=499 => error_class::HTTP_4XX,
        500..=599 => error_class::HTTP_5XX,
        // A status the request did not expect (1xx, 2xx or 3xx outside the success list).
        _ => error_class::PROTOCOL,
    }
}

/// The HTTP client shared by the HTTP drivers: no proxy, no Nagle delay, a pool as large
/// as the concurrency.
pub fn http_client(connections: u32) -> Result<reqwest::Client, DriverError> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections.max(64) as usize)
        .build()
        .map_err(|e| DriverError::new(format!("cannot build the HTTP client: {e}")))
}

/// A one-line description of a reqwest error with its causes.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// GETs `url` and requires a success status; used by HTTP drivers' pings.
pub async fn http_ping(client: &reqwest::Client, url: &str) -> Result<(), DriverError> {
    let r = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| DriverError::new(format!("{url}: {}", describe(&e))))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(DriverError::new(format!("{url} answered {}", r.status())))
    }
}

/// Runs a blocking-free async body under the call's timeout, classifying a timeout.
pub async fn with_timeout<F>(timeout: Duration, x: Exchange, body: F) -> Exchange
where
    F: Future<Output = Exchange>,
{
    let sent = x.sent;
    let op = x.op;
    match tokio::time::timeout(timeout, body).await {
        Ok(x) => x,
        Err(_) => {
            let mut t = Exchange::start(op, 0);
            t.sent = sent;
            t.finish(Some(error_class::TIMEOUT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_follows_weights() {
        let m = Mix::new(1, &[("get", 3.0), ("set", 1.0), ("del", 0.0)]);
        let n = 10_000;
        let gets = (0..n)
            .filter(|i| m.pick(f64::from(*i) / f64::from(n)) == "get")
            .count();
        assert_eq!(gets, 7_500);
        assert_eq!(m.pick(0.99), "set");
        assert_eq!(Mix::new(1, &[("put", 1.0)]).pick(0.999_999), "put");
        assert_eq!(m.draw(42).0, m.op(42));
    }

    #[test]
    fn zipf_keys_are_skewed_and_in_range() {
        let k = Keyspace::new(1000, KeyDistribution::Zipfian, 0.99);
        let mut rng = rng_for(1, 2);
        let draws: Vec<u64> = (0..20_000).map(|_| k.draw(&mut rng)).collect();
        assert!(draws.iter().all(|&d| d < 1000));
        let hot = draws.iter().filter(|&&d| d == 0).count();
        let cold = draws.iter().filter(|&&d| d == 999).count();
        assert!(hot > 20 * cold.max(1), "hot {hot} cold {cold}");
        let u = Keyspace::new(10, KeyDistribution::Uniform, 1.0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[u.draw(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn choices_are_reproducible() {
        use rand::RngExt;
        let a: u64 = rng_for(7, 42).random();
        let b: u64 = rng_for(7, 42).random();
        let c: u64 = rng_for(7, 43).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(payload(5, 100), payload(5, 100));
        assert_ne!(payload(5, 100), payload(6, 100));
        assert_eq!(payload(5, 13).len(), 13);
    }

    #[test]
    fn preload_batches_cover_every_id_once() {
        let b: Vec<_> = preload_batches(1201).collect();
        assert_eq!(b, vec![0..500, 500..1000, 1000..1201]);
        assert_eq!(preload_batches(0).count(), 0);
        let mix = Mix::new(1, &[("query", 1.0), ("upsert", 1.0)]);
        for seq in 0..200 {
            match VectorOp::draw(&mix, seq, 10, 3) {
                ("query", VectorOp::Query(id)) => assert!(id < 10),
                ("upsert", VectorOp::Upsert(ids)) => {
                    assert_eq!(ids.len(), 3);
                    assert!(ids.iter().all(|&i| i < 10));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn busy_statuses_are_backpressure() {
        assert_eq!(status_class(503), error_class::BACKPRESSURE);
        assert_eq!(status_class(429), error_class::BACKPRESSURE);
        assert_eq!(status_class(404), error_class::HTTP_4XX);
        assert_eq!(status_class(500), error_class::HTTP_5XX);
        assert_eq!(status_class(302), error_class::PROTOCOL);
    }
}
