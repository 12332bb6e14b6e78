//! GPU collector: NVIDIA GPUs through NVML, which is loaded at run time (dlopen of
//! `libnvidia-ml.so.1`), so the exporter builds and runs on machines without NVIDIA
//! libraries. Without NVML the collector reports failure on every scrape and logs one line;
//! the other collectors are unaffected.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};

use super::{Collector, Family, Kind};

/// NVML-backed collector.
pub struct Gpu {
    nvml: Result<Nvml, String>,
    logged: bool,
}

impl Gpu {
    /// Tries to load NVML once.
    pub fn new() -> Self {
        Self {
            nvml: Nvml::init().map_err(|e| format!("NVML not available: {e}")),
            logged: false,
        }
    }
}

impl Default for Gpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
        let nvml = match &self.nvml {
            Ok(n) => n,
            Err(e) => {
                if !self.logged {
                    tracing::warn!("gpu collector disabled for this run: {e}");
                    self.logged = true;
                }
                return Err(e.clone());
            }
        };
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let mut info = Family::new("aifb_gpu", "GPU identity", Kind::Info);
        let mut util = Family::new(
            "aifb_gpu_utilization_ratio",
            "Fraction of time at least one kernel ran",
            Kind::Gauge,
        );
        let mut used = Family::new(
            "aifb_gpu_memory_used_bytes",
            "GPU memory in use",
            Kind::Gauge,
        );
        let mut total = Family::new(
            "aifb_gpu_memory_total_bytes",
            "GPU memory in total",
            Kind::Gauge,
        );
        let mut power = Family::new("aifb_gpu_power_watts", "Power draw", Kind::Gauge);
        let mut energy = Family::new(
            "aifb_gpu_energy_joules",
            "Energy consumed since the driver loaded",
            Kind::Counter,
        );
        let mut temp = Family::new(
            "aifb_gpu_temperature_celsius",
            "GPU temperature",
            Kind::Gauge,
        );
        let mut clock = Family::new("aifb_gpu_sm_clock_hertz", "SM clock", Kind::Gauge);
        let mut errors = Vec::new();
        for i in 0..count {
            let d = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(format!("GPU {i}: {e}"));
                    continue;
                }
            };
            let gpu = || vec![("gpu", i.to_string())];
            let uuid = d.uuid().unwrap_or_default();
            let name = d.name().unwrap_or_default();
            info.push(
                vec![
                    ("gpu", i.to_string()),
                    ("uuid", uuid),
                    ("name", name),
                    ("driver", driver.clone()),
                ],
                1.0,
            );
            if let Ok(u) = d.utilization_rates() {
                util.push(gpu(), f64::from(u.gpu) / 100.0);
            }
            if let Ok(m) = d.memory_info() {
                used.push(gpu(), m.used as f64);
                total.push(gpu(), m.total as f64);
            }
            if let Ok(mw) = d.power_usage() {
                power.push(gpu(), f64::from(mw) / 1000.0);
            }
            if let Ok(mj) = d.total_energy_consumption() {
                energy.push(gpu(), mj as f64 / 1000.0);
            }
            if let Ok(c) = d.temperature(TemperatureSensor::Gpu) {
                temp.push(gpu(), f64::from(c));
            }
            if let Ok(mhz) = d.clock_info(Clock::SM) {
                clock.push(gpu(), f64::from(mhz) * 1e6);
            }
        }
        out.extend([info, util, used, total, power, energy, temp, clock]);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
