//! aifb's per-node Prometheus exporter.
//!
//! | module | role |
//! |---|---|
//! | [`collector`] | the [`collector::Collector`] trait and the metric families it fills |
//! | [`collector::node`] | node CPU seconds by mode, memory total and available |
//! | [`collector::process`] | the service's processes (by PID or name, children included) |
//! | [`collector::gpu`] | NVIDIA GPUs through NVML, loaded at run time |
//! | [`scrape`] | runs the collectors for one scrape, with per-collector health series |

pub mod collector;
pub mod scrape;
