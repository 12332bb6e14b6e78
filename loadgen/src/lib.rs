//! aifb's load generator and simulated LLM server.
//!
//! | module | role |
//! |---|---|
//! | [`sim`] | `loadgen sim`: the simulated OpenAI/vLLM server (batching model, HTTP, metrics) |
//! | [`sse`] | incremental Server-Sent Events parser |
//! | [`dataset`] | each LLM request's prompt and output length: synthetic (fixed, ranges, shared prefix) or a ShareGPT/JSONL file |
//! | [`driver`] | one driver per service protocol (OpenAI/vLLM, Ollama, Redis, PostgreSQL, S3, ChromaDB, Qdrant, HTTP) behind one trait |
//! | [`merge`] | `loadgen merge`: one run directory from the shards of a multi-node run |
//! | [`schedule`] | the open loop's arrival timeline (constant, Poisson, gamma) and think times |
//! | [`sweep`] | stages, closed and open loops, phases |
//! | [`search`] | which level each stage runs: fixed levels or a rate search (sweep, SLO-bounded) |
//! | [`saturation`] | early stop of an open-loop level whose backlog keeps growing |
//! | [`slo`] | per-stage p99s of the measured requests, to stop a sweep at the first level missing its SLOs |
//! | [`sink`] | requests.parquet and per-stage HdrHistograms (summary.json) |
//! | [`scrape`] | scrapes `/metrics` endpoints into metrics.parquet |
//! | [`telemetry`] | the loadgen's own `aifb_loadgen_*` series |

pub mod dataset;
pub mod driver;
pub mod merge;
pub mod saturation;
pub mod schedule;
pub mod scrape;
pub mod search;
pub mod sim;
pub mod sink;
pub mod slo;
pub mod sse;
pub mod sweep;
pub mod telemetry;
