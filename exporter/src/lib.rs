//! aifb's per-node Prometheus exporter.
//!
//! | module | role |
//! |---|---|
//! | [`collector`] | the [`collector::Collector`] trait and the metric families it fills |
//! | [`collector::node`] | node CPU seconds by mode, memory, load, pressure stall |
//! | [`collector::process`] | the service's processes (by PID, name or cgroup, children included) |
//! | [`collector::job`] | the SLURM job's identity and cgroup (v2 and v1) |
//! | [`collector::probe`] | service probes: Redis, PostgreSQL, vLLM, Ollama, Qdrant, ChromaDB, MinIO |
//! | [`collector::gpu`] | NVIDIA GPUs through NVML, loaded at run time |
//! | [`collector::cgroup`] | PSI and cgroup readers shared by the collectors |
//! | [`scrape`] | one scrape: collectors in parallel under a deadline, health series, encoding |
//! | [`serve`] | HTTP: shared collections, limits, gzip, content negotiation, auth, TLS |
//! | [`webconfig`] | `--web.config.file` in the Prometheus exporter-toolkit format |

pub mod collector;
pub mod scrape;
pub mod serve;
pub mod webconfig;
