//! The per-driver parts of a recipe's workload: what a Redis, PostgreSQL, S3, vector
//! database or plain HTTP request looks like, and how the data it works on is prepared.
//!
//! Each section is optional and only valid for its service kind (`workload.redis` with
//! `service.kind: redis`, …); an absent section takes the defaults below. Request mixes are
//! relative weights (`{get: 9, set: 1}` sends nine GETs for one SET on average).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How keys (or objects) are picked from the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// Every key equally likely.
    #[default]
    Uniform,
    /// A few hot keys (Zipf law with `zipf_exponent`), as caches see in practice.
    Zipfian,
}

fn d_true() -> bool {
    true
}
fn d_zipf() -> f64 {
    0.99
}

/// Redis: GET/SET over a key space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisWorkload {
    /// Relative weights of the commands.
    #[serde(default)]
    pub mix: RedisMix,
    /// Bytes of each value written by SET (and preloaded).
    #[serde(default = "d_value_size")]
    pub value_size: u32,
    /// Number of distinct keys.
    #[serde(default = "d_keys")]
    pub keys: u64,
    /// How keys are picked.
    #[serde(default)]
    pub key_distribution: KeyDistribution,
    /// Exponent of the Zipf law (`key_distribution: zipfian`).
    #[serde(default = "d_zipf")]
    pub zipf_exponent: f64,
    /// Prefix of every key, so the benchmark's keys are easy to find and delete.
    #[serde(default = "d_key_prefix")]
    pub key_prefix: String,
    /// Write every key once before the first stage, so GETs hit.
    #[serde(default = "d_true")]
    pub preload: bool,
    /// Connections to open. Absent: one per user (closed loop, like redis-benchmark's
    /// clients) or 16 (open loop). Fewer connections than concurrent requests pipeline
    /// the requests on each connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// Weights of Redis commands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisMix {
    /// `GET key`.
    #[serde(default)]
    pub get: f64,
    /// `SET key value`.
    #[serde(default)]
    pub set: f64,
}

impl Default for RedisMix {
    fn default() -> Self {
        Self { get: 1.0, set: 1.0 }
    }
}

fn d_value_size() -> u32 {
    100
}
fn d_keys() -> u64 {
    10_000
}
fn d_key_prefix() -> String {
    "aifb:".into()
}

impl Default for RedisWorkload {
    fn default() -> Self {
        Self {
            mix: RedisMix::default(),
            value_size: d_value_size(),
            keys: d_keys(),
            key_distribution: KeyDistribution::Uniform,
            zipf_exponent: d_zipf(),
            key_prefix: d_key_prefix(),
            preload: true,
            connections: None,
        }
    }
}

/// Whether the benchmark creates its tables or uses tables that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// Drop and create the `pgbench_*` tables at `scale` before the first stage.
    #[default]
    Create,
    /// Use the `pgbench_*` tables as they are (for example made by `pgbench -i`).
    Existing,
}

/// PostgreSQL: pgbench's TPC-B-like transaction and its read-only point query, on
/// pgbench's own tables, so results compare with `pgbench` directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresWorkload {
    /// Relative weights of the transactions.
    #[serde(default)]
    pub mix: PostgresMix,
    /// pgbench scale factor: `scale` branches, 10·`scale` tellers, 100,000·`scale` accounts.
    #[serde(default = "d_scale")]
    pub scale: u32,
    /// `create` the tables or use `existing` ones.
    #[serde(default)]
    pub schema: SchemaMode,
    /// Drop the tables after the run (only tables this run created).
    #[serde(default)]
    pub teardown: bool,
    /// Connections to open. Absent: one per user (closed loop, like pgbench's clients) or
    /// 16 (open loop). A request waits for a free connection; that wait counts in its
    /// response time, not its service latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// Weights of PostgreSQL transactions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresMix {
    /// pgbench's TPC-B-like read-write transaction (`op` = `tpcb`).
    #[serde(default)]
    pub tpcb: f64,
    /// pgbench's `-S` point SELECT on one account (`op` = `select`).
    #[serde(default)]
    pub select: f64,
}

impl Default for PostgresMix {
    fn default() -> Self {
        Self {
            tpcb: 1.0,
            select: 0.0,
        }
    }
}

fn d_scale() -> u32 {
    1
}

impl Default for PostgresWorkload {
    fn default() -> Self {
        Self {
            mix: PostgresMix::default(),
            scale: d_scale(),
            schema: SchemaMode::Create,
            teardown: false,
            connections: None,
        }
    }
}

/// S3 (MinIO, Garage, Ceph RGW, AWS): PUT and GET of objects of one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Workload {
    /// Bucket used by the benchmark.
    #[serde(default = "d_bucket")]
    pub bucket: String,
    /// Create the bucket when it does not exist.
    #[serde(default = "d_true")]
    pub create_bucket: bool,
    /// Relative weights of the operations.
    #[serde(default)]
    pub mix: S3Mix,
    /// Bytes of each object.
    #[serde(default = "d_object_size")]
    pub object_size: u64,
    /// Number of distinct object keys.
    #[serde(default = "d_objects")]
    pub objects: u64,
    /// How object keys are picked.
    #[serde(default)]
    pub key_distribution: KeyDistribution,
    /// Exponent of the Zipf law (`key_distribution: zipfian`).
    #[serde(default = "d_zipf")]
    pub zipf_exponent: f64,
    /// Prefix of every object key.
    #[serde(default = "d_object_prefix")]
    pub key_prefix: String,
    /// Write every object once before the first stage, so GETs find them.
    #[serde(default = "d_true")]
    pub preload: bool,
    /// Delete the benchmark's objects after the run.
    #[serde(default)]
    pub teardown: bool,
}

/// Weights of S3 operations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Mix {
    /// `PutObject`.
    #[serde(default)]
    pub put: f64,
    /// `GetObject`.
    #[serde(default)]
    pub get: f64,
}

impl Default for S3Mix {
    fn default() -> Self {
        Self { put: 1.0, get: 1.0 }
    }
}

fn d_bucket() -> String {
    "aifb-bench".into()
}
fn d_object_size() -> u64 {
    4096
}
fn d_objects() -> u64 {
    100
}
fn d_object_prefix() -> String {
    "aifb/".into()
}

impl Default for S3Workload {
    fn default() -> Self {
        Self {
            bucket: d_bucket(),
            create_bucket: true,
            mix: S3Mix::default(),
            object_size: d_object_size(),
            objects: d_objects(),
            key_distribution: KeyDistribution::Uniform,
            zipf_exponent: d_zipf(),
            key_prefix: d_object_prefix(),
            preload: true,
            teardown: false,
        }
    }
}

/// Distance function of a vector collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Cosine distance.
    #[default]
    Cosine,
    /// Euclidean (L2) distance.
    Euclid,
    /// Dot product.
    Dot,
}

/// Vector databases (ChromaDB, Qdrant): upserts of precomputed vectors and top-k queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorWorkload {
    /// Collection used by the benchmark.
    #[serde(default = "d_collection")]
    pub collection: String,
    /// Drop and create the collection before the first stage (else it must exist).
    #[serde(default = "d_true")]
    pub recreate: bool,
    /// Dimension of every vector.
    #[serde(default = "d_dimension")]
    pub dimension: u32,
    /// Distance function of a created collection.
    #[serde(default)]
    pub distance: Distance,
    /// Vectors inserted before the first stage.
    #[serde(default = "d_preload")]
    pub preload: u64,
    /// Relative weights of the operations.
    #[serde(default)]
    pub mix: VectorMix,
    /// Results asked of each query.
    #[serde(default = "d_top_k")]
    pub top_k: u32,
    /// Vectors sent by each upsert.
    #[serde(default = "d_batch")]
    pub batch: u32,
    /// Delete the collection after the run.
    #[serde(default)]
    pub teardown: bool,
}

/// Weights of vector operations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorMix {
    /// Top-k nearest-neighbour query.
    #[serde(default)]
    pub query: f64,
    /// Upsert of `batch` vectors.
    #[serde(default)]
    pub upsert: f64,
}

impl Default for VectorMix {
    fn default() -> Self {
        Self {
            query: 1.0,
            upsert: 0.0,
        }
    }
}

fn d_collection() -> String {
    "aifb_bench".into()
}
fn d_dimension() -> u32 {
    128
}
fn d_preload() -> u64 {
    1000
}
fn d_top_k() -> u32 {
    10
}
fn d_batch() -> u32 {
    1
}

impl Default for VectorWorkload {
    fn default() -> Self {
        Self {
            collection: d_collection(),
            recreate: true,
            dimension: d_dimension(),
            distance: Distance::Cosine,
            preload: d_preload(),
            mix: VectorMix::default(),
            top_k: d_top_k(),
            batch: d_batch(),
            teardown: false,
        }
    }
}

/// A plain HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpWorkload {
    /// HTTP method.
    #[serde(default = "d_method")]
    pub method: String,
    /// Path (and query) appended to the service's base URL.
    #[serde(default = "d_path")]
    pub path: String,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Statuses that count as success; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
}

fn d_method() -> String {
    "GET".into()
}
fn d_path() -> String {
    "/".into()
}

impl Default for HttpWorkload {
    fn default() -> Self {
        Self {
            method: d_method(),
            path: d_path(),
            body: None,
            headers: BTreeMap::new(),
            expect_status: Vec::new(),
        }
    }
}

/// Checks a mix of weights: each finite and ≥ 0, at least one > 0.
pub(crate) fn check_mix(weights: &[(&str, f64)]) -> Option<String> {
    if let Some((op, w)) = weights.iter().find(|(_, w)| !(w.is_finite() && *w >= 0.0)) {
        return Some(format!("weight of {op} must be >= 0, got {w}"));
    }
    if weights.iter().all(|(_, w)| *w == 0.0) {
        let names: Vec<&str> = weights.iter().map(|(n, _)| *n).collect();
        return Some(format!(
            "give at least one operation a weight > 0 ({})",
            names.join(", ")
        ));
    }
    None
}
