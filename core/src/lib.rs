//! Shared foundation of aifb: the contracts between the binaries.
//!
//! | module | contract |
//! |---|---|
//! | [`recipe`] | the YAML recipe: types, defaults, validation with located errors |
//! | [`workloads`] | the per-driver workload sections of a recipe (Redis, PostgreSQL, S3, vectors, HTTP) |
//! | [`yamlpath`] | maps a key path such as `workload.levels[2]` to its line in a YAML text |
//! | [`duration`] | human durations (`500ms`, `2s`, `1m`) used in recipes |
//! | [`run`] | run ids, the run directory layout and the `run.json` manifest |
//! | [`requests`] | `requests.parquet`, schema `aifb.requests/1` |
//! | [`metrics`] | `metrics.parquet`, schema `aifb.metrics/1` |
//! | [`promtext`] | parsing of the Prometheus text exposition format |
//! | [`parquet_util`] | the streaming row writer and footer keys shared by both Parquet files |
//! | [`discovery`] | discovery records and Prometheus file_sd targets of started components |
//! | [`clock`] | one wall clock with monotonic precision shared by requests and scrapes |
//! | [`exit`] | exit codes shared by every binary and the one-line error type |

#[cfg(feature = "parquet")]
pub mod chunks;
pub mod clock;
pub mod discovery;
pub mod duration;
pub mod exit;
#[cfg(feature = "parquet")]
pub mod metrics;
pub mod promtext;
pub mod recipe;
#[cfg(feature = "parquet")]
pub mod requests;
pub mod run;
pub mod workloads;
pub mod yamlpath;

#[cfg(feature = "parquet")]
pub mod parquet_util;

/// The aifb version, written into lock files, manifests and `_build_info` series.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
