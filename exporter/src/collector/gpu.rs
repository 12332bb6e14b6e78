//! GPU collector: NVIDIA GPUs through NVML, loaded at run time (dlopen of
//! `libnvidia-ml.so.1`), so the exporter builds and runs on machines without NVIDIA
//! libraries. Without NVML the collector reports failure on every scrape and logs one line;
//! the other collectors are unaffected.
//!
//! The collector turns [`GpuReading`]s into families; where readings come from is a
//! [`GpuBackend`]: [`NvmlBackend`] in production, a fixed list in tests.
//!
//! `aifb_gpu_utilization_ratio` is NVML's "utilization": the fraction of the sample period
//! during which at least one kernel ran. It says nothing about how much of the GPU the
//! kernels used; the GPM ratios (Hopper and newer) do, and `aifb_gpu_profiling_available`
//! says whether they exist.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Collector, Family, Kind};

/// GPM activity ratios (0..1) over the interval between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Activity {
    /// Fraction of SMs busy.
    pub sm_active: Option<f64>,
    /// Resident warps over the maximum.
    pub sm_occupancy: Option<f64>,
    /// Tensor pipes busy.
    pub tensor_active: Option<f64>,
    /// DRAM bandwidth used over the peak.
    pub dram_active: Option<f64>,
}

/// What one GPU reports in one scrape. Missing fields were not supported or failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuReading {
    /// NVML index.
    pub index: u32,
    /// `GPU-…` UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Driver version.
    pub driver: String,
    /// Fraction of time at least one kernel ran.
    pub utilization: Option<f64>,
    /// Memory used, bytes.
    pub memory_used: Option<u64>,
    /// Memory in total, bytes.
    pub memory_total: Option<u64>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// Enforced power limit, watts.
    pub power_limit_watts: Option<f64>,
    /// Energy since driver load, joules.
    pub energy_joules: Option<f64>,
    /// Temperature, °C.
    pub temperature_celsius: Option<f64>,
    /// SM clock, Hz.
    pub sm_clock_hertz: Option<f64>,
    /// Memory clock, Hz.
    pub memory_clock_hertz: Option<f64>,
    /// Throttle reasons and whether each is active.
    pub throttle: Vec<(&'static str, bool)>,
    /// PCIe transmit and receive, bytes/s.
    pub pcie_bytes_per_second: Option<(f64, f64)>,
    /// Volatile ECC errors: corrected, uncorrected.
    pub ecc_errors: Option<(u64, u64)>,
    /// Compute processes and their GPU memory, bytes.
    pub processes: Vec<(u32, u64)>,
    /// Whether GPM profiling metrics are supported.
    pub profiling_available: bool,
    /// GPM ratios, when supported and a previous sample exists.
    pub activity: Option<Activity>,
}

/// A source of GPU readings.
pub trait GpuBackend: Send {
    /// Reads every GPU.
    fn read(&mut self) -> Result<Vec<GpuReading>, String>;
    /// XID errors seen so far: (gpu index, xid) → count.
    fn xid_errors(&self) -> BTreeMap<(u32, u64), u64>;
}

/// Which GPUs belong to this job: indices or UUIDs from `CUDA_VISIBLE_DEVICES`, else
/// `SLURM_JOB_GPUS`. `None` means all.
pub fn visible_from_env(cuda: Option<&str>, slurm: Option<&str>) -> Option<HashSet<String>> {
    let pick = cuda
        .filter(|s| !s.trim().is_empty())
        .or(slurm.filter(|s| !s.trim().is_empty()))?;
    Some(
        pick.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The GPU collector.
pub struct Gpu {
    backend: Box<dyn GpuBackend>,
    visible: Option<HashSet<String>>,
    top_processes: usize,
    logged: bool,
}

impl Gpu {
    /// A collector over `backend`, restricted to `visible` GPUs, exporting the `top_processes`
    /// largest per-process memory users per GPU (0: none).
    pub fn new(
        backend: Box<dyn GpuBackend>,
        visible: Option<HashSet<String>>,
        top_processes: usize,
    ) -> Self {
        Self {
            backend,
            visible,
            top_processes,
            logged: false,
        }
    }

    /// The NVML-backed collector, restricted to the job's GPUs from the environment.
    pub fn from_env(top_processes: usize) -> Self {
        let visible = visible_from_env(
            std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
            std::env::var("SLURM_JOB_GPUS").ok().as_deref(),
        );
        Self::new(Box::new(NvmlBackend::new()), visible, top_processes)
    }
}

/// Families being filled, by name, in name order.
#[derive(Default)]
struct Families(BTreeMap<&'static str, Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: Vec<(&'static str, String)>,
        v: f64,
    ) {
        self.0
            .entry(name)
            .or_insert_with(|| Family::new(name, help, kind))
            .push(labels, v);
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, gpu: u32, v: Option<f64>) {
        if let Some(v) = v {
            self.add(name, help, Kind::Gauge, vec![("gpu", gpu.to_string())], v);
        }
    }
}

/// Turns readings into families (pure).
pub fn families(
    readings: &[GpuReading],
    xid: &BTreeMap<(u32, u64), u64>,
    top_processes: usize,
) -> Vec<Family> {
    let mut info = Family::new("aifb_gpu", "GPU identity", Kind::Info);
    let mut f = Families::default();
    for r in readings {
        let i = r.index;
        let gpu = || vec![("gpu", i.to_string())];
        info.push(
            vec![
                ("gpu", i.to_string()),
                ("uuid", r.uuid.clone()),
                ("name", r.name.clone()),
                ("driver", r.driver.clone()),
            ],
            1.0,
        );
        f.gauge(
            "aifb_gpu_utilization_ratio",
            "Fraction of time at least one kernel ran",
            i,
            r.utilization,
        );
        f.gauge(
            "aifb_gpu_memory_used_bytes",
            "GPU memory in use",
            i,
            r.memory_used.map(|v| v as f64),
        );
        f.gauge(
            "aifb_gpu_memory_total_bytes",
            "GPU memory in total",
            i,
            r.memory_total.map(|v| v as f64),
        );
        f.gauge("aifb_gpu_power_watts", "Power draw", i, r.power_watts);
        f.gauge(
            "aifb_gpu_power_limit_watts",
            "Enforced power limit",
            i,
            r.power_limit_watts,
        );
        f.gauge(
            "aifb_gpu_temperature_celsius",
            "GPU temperature",
            i,
            r.temperature_celsius,
        );
        f.gauge("aifb_gpu_sm_clock_hertz", "SM clock", i, r.sm_clock_hertz);
        f.gauge(
            "aifb_gpu_memory_clock_hertz",
            "Memory clock",
            i,
            r.memory_clock_hertz,
        );
        if let Some(e) = r.energy_joules {
            f.add(
                "aifb_gpu_energy_joules",
                "Energy consumed since the driver loaded",
                Kind::Counter,
                gpu(),
                e,
            );
        }
        for (reason, active) in &r.throttle {
            let labels = vec![("gpu", i.to_string()), ("reason", reason.to_string())];
            let help = "Whether this clock throttle reason is active";
            f.add(
                "aifb_gpu_clock_throttle_active",
                help,
                Kind::Gauge,
                labels,
                if *active { 1.0 } else { 0.0 },
            );
        }
        if let Some((tx, rx)) = r.pcie_bytes_per_second {
            for (dir, v) in [("tx", tx), ("rx", rx)] {
                let labels = vec![("gpu", i.to_string()), ("direction", dir.to_string())];
                let help = "PCIe throughput over NVML's 20 ms window";
                f.add(
                    "aifb_gpu_pcie_throughput_bytes_per_second",
                    help,
                    Kind::Gauge,
                    labels,
                    v,
                );
            }
        }
        if let Some((corrected, uncorrected)) = r.ecc_errors {
            for (kind, v) in [("corrected", corrected), ("uncorrected", uncorrected)] {
                let labels = vec![("gpu", i.to_string()), ("kind", kind.to_string())];
                f.add(
                    "aifb_gpu_ecc_errors",
                    "ECC errors since the driver loaded",
                    Kind::Counter,
                    labels,
                    v as f64,
                );
            }
        }
        if top_processes > 0 {
            let mut procs = r.processes.clone();
            procs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            for (pid, bytes) in procs.into_iter().take(top_processes) {
                let labels = vec![("gpu", i.to_string()), ("pid", pid.to_string())];
                let help = "GPU memory of the largest compute processes";
                f.add(
                    "aifb_gpu_process_memory_used_bytes",
                    help,
                    Kind::Gauge,
                    labels,
                    bytes as f64,
                );
            }
        }
        let help = "Whether GPM profiling metrics (SM, tensor, DRAM activity) are available";
        f.add(
            "aifb_gpu_profiling_available",
            help,
            Kind::Gauge,
            gpu(),
            if r.profiling_available { 1.0 } else { 0.0 },
        );
        if let Some(a) = r.activity {
            f.gauge(
                "aifb_gpu_sm_active_ratio",
                "Fraction of SMs busy (GPM)",
                i,
                a.sm_active,
            );
            f.gauge(
                "aifb_gpu_sm_occupancy_ratio",
                "Resident warps over the maximum (GPM)",
                i,
                a.sm_occupancy,
            );
            f.gauge(
                "aifb_gpu_tensor_active_ratio",
                "Fraction of time tensor pipes were busy (GPM)",
                i,
                a.tensor_active,
            );
            f.gauge(
                "aifb_gpu_dram_active_ratio",
                "DRAM bandwidth used over the peak (GPM)",
                i,
                a.dram_active,
            );
        }
    }
    let mut xid_family = Family::new(
        "aifb_gpu_xid_errors",
        "Critical XID errors reported by the driver",
        Kind::Counter,
    );
    for ((gpu, code), n) in xid {
        xid_family.push(
            vec![("gpu", gpu.to_string()), ("xid", code.to_string())],
            *n as f64,
        );
    }
    let mut out = vec![info];
    out.extend(f.0.into_values());
    out.push(xid_family);
    out
}

impl Collector for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn may_block(&self) -> bool {
        true
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
        let readings = match self.backend.read() {
            Ok(r) => {
                self.logged = false;
                r
            }
            Err(e) => {
                if !self.logged {
                    tracing::warn!("gpu collector: {e}");
                    self.logged = true;
                }
                return Err(e);
            }
        };
        let chosen: Vec<GpuReading> = match &self.visible {
            Some(v) => readings
                .into_iter()
                .filter(|r| v.contains(&r.index.to_string()) || v.contains(&r.uuid))
                .collect(),
            None => readings,
        };
        let keep: HashSet<u32> = chosen.iter().map(|r| r.index).collect();
        let xid = self
            .backend
            .xid_errors()
            .into_iter()
            .filter(|((g, _), _)| keep.contains(g))
            .collect();
        out.extend(families(&chosen, &xid, self.top_processes));
        Ok(())
    }
}

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::GpmSample;

const THROTTLE: [(ThrottleReasons, &str); 9] = [
    (ThrottleReasons::GPU_IDLE, "gpu_idle"),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
    ),
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
    ),
];

struct Live {
    nvml: &'static Nvml,
    gpm: HashMap<u32, GpmSample<'static>>,
}

/// NVML, initialised lazily and again after a lost GPU or a driver reload, with
/// exponential backoff (1 s doubling to 5 min). A dedicated thread counts XID errors.
pub struct NvmlBackend {
    live: Option<Live>,
    next_try: Instant,
    backoff: Duration,
    last_error: String,
    xid: Arc<Mutex<BTreeMap<(u32, u64), u64>>>,
}

impl NvmlBackend {
    /// A backend that loads NVML on first use.
    pub fn new() -> Self {
        Self {
            live: None,
            next_try: Instant::now(),
            backoff: Duration::from_secs(1),
            last_error: String::new(),
            xid: Arc::default(),
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        if self.live.is_some() {
            return Ok(());
        }
        if Instant::now() < self.next_try {
            return Err(self.last_error.clone());
        }
        match Nvml::init() {
            Ok(nvml) => {
                // NVML stays loaded for the life of the process (GPM samples and the XID
                // event set borrow it); a re-initialisation after a driver reload leaks the
                // old handle, which is rare and small.
                let nvml: &'static Nvml = Box::leak(Box::new(nvml));
                spawn_xid_thread(nvml, self.xid.clone());
                self.live = Some(Live {
                    nvml,
                    gpm: HashMap::new(),
                });
                self.backoff = Duration::from_secs(1);
                Ok(())
            }
            Err(e) => {
                self.last_error = format!("NVML not available: {e}");
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(300));
                Err(self.last_error.clone())
            }
        }
    }
}

impl Default for NvmlBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn lost(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::GpuLost | NvmlError::Uninitialized | NvmlError::DriverNotLoaded
    )
}

fn spawn_xid_thread(nvml: &'static Nvml, counts: Arc<Mutex<BTreeMap<(u32, u64), u64>>>) {
    let spawned = std::thread::Builder::new()
        .name("gpu-xid".into())
        .spawn(move || {
            // One event set per GPU: a GPU that does not support XID events costs only its own.
            let count = nvml.device_count().unwrap_or(0);
            let mut sets = Vec::new();
            for i in 0..count {
                let (Ok(d), Ok(set)) = (nvml.device_by_index(i), nvml.create_event_set()) else {
                    continue;
                };
                if let Ok(set) = d.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                    sets.push(set);
                }
            }
            if sets.is_empty() {
                return;
            }
            let slice = (1000 / sets.len() as u32).max(10);
            loop {
                for set in &sets {
                    match set.wait(slice) {
                        Ok(ev) => {
                            if let (Ok(index), Some(XidError::Value(xid))) =
                                (ev.device.index(), ev.event_data)
                                && let Ok(mut m) = counts.lock()
                            {
                                *m.entry((index, xid)).or_insert(0) += 1;
                            }
                        }
                        Err(NvmlError::Timeout) => {}
                        Err(_) => std::thread::sleep(Duration::from_secs(5)),
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the XID event thread: {e}");
    }
}

impl GpuBackend for NvmlBackend {
    fn read(&mut self) -> Result<Vec<GpuReading>, String> {
        self.connect()?;
        let Some(live) = self.live.as_mut() else {
            return Err(self.last_error.clone());
        };
        let nvml = live.nvml;
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                if lost(&e) {
                    self.live = None;
                    self.last_error = format!("NVML lost its GPUs ({e}); re-initialising");
                }
                return Err(format!("NVML device count: {e}"));
            }
        };
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for i in 0..count {
            let d = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(format!("GPU {i}: {e}"));
                    continue;
                }
            };
            let mut r = GpuReading {
                index: i,
                uuid: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                driver: driver.clone(),
                ..GpuReading::default()
            };
            r.utilization = d.utilization_rates().ok().map(|u| f64::from(u.gpu) / 100.0);
            if let Ok(m) = d.memory_info() {
                r.memory_used = Some(m.used);
                r.memory_total = Some(m.total);
            }
            r.power_watts = d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0);
            r.power_limit_watts = d
                .enforced_power_limit()
                .ok()
                .map(|mw| f64::from(mw) / 1000.0);
            r.energy_joules = d
                .total_energy_consumption()
                .ok()
                .map(|mj| mj as f64 / 1000.0);
            r.temperature_celsius = d.temperature(TemperatureSensor::Gpu).ok().map(f64::from);
            r.sm_clock_hertz = d.clock_info(Clock::SM).ok().map(|mhz| f64::from(mhz) * 1e6);
            r.memory_clock_hertz = d
                .clock_info(Clock::Memory)
                .ok()
                .map(|mhz| f64::from(mhz) * 1e6);
            if let Ok(reasons) = d.current_throttle_reasons() {
                r.throttle = THROTTLE
                    .iter()
                    .map(|(bit, name)| (*name, reasons.contains(*bit)))
                    .collect();
            }
            if let (Ok(tx), Ok(rx)) = (
                d.pcie_throughput(PcieUtilCounter::Send),
                d.pcie_throughput(PcieUtilCounter::Receive),
            ) {
                r.pcie_bytes_per_second = Some((f64::from(tx) * 1024.0, f64::from(rx) * 1024.0));
            }
            if let (Ok(c), Ok(u)) = (
                d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
                d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
            ) {
                r.ecc_errors = Some((c, u));
            }
            if let Ok(procs) = d.running_compute_processes() {
                r.processes = procs
                    .into_iter()
                    .filter_map(|p| match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some((p.pid, b)),
                        UsedGpuMemory::Unavailable => None,
                    })
                    .collect();
            }
            r.profiling_available = d.gpm_support().unwrap_or(false);
            if r.profiling_available
                && let Ok(now) = d.gpm_sample()
            {
                if let Some(prev) = live.gpm.remove(&i) {
                    let ids = [
                        GpmMetricId::SmUtil,
                        GpmMetricId::SmOccupancy,
                        GpmMetricId::AnyTensorUtil,
                        GpmMetricId::DramBwUtil,
                    ];
                    if let Ok(values) = nvml_wrapper::gpm::gpm_metrics_get(nvml, &prev, &now, &ids)
                    {
                        let v = |k: usize| {
                            values
                                .get(k)
                                .and_then(|r| r.as_ref().ok())
                                .map(|m| m.value / 100.0)
                        };
                        r.activity = Some(Activity {
                            sm_active: v(0),
                            sm_occupancy: v(1),
                            tensor_active: v(2),
                            dram_active: v(3),
                        });
                    }
                }
                live.gpm.insert(i, now);
            }
            out.push(r);
        }
        if out.is_empty() && !errors.is_empty() {
            Err(errors.join("; "))
        } else {
            Ok(out)
        }
    }

    fn xid_errors(&self) -> BTreeMap<(u32, u64), u64> {
        self.xid.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Result<Vec<GpuReading>, String>, BTreeMap<(u32, u64), u64>);
    impl GpuBackend for Fake {
        fn read(&mut self) -> Result<Vec<GpuReading>, String> {
            self.0.clone()
        }
        fn xid_errors(&self) -> BTreeMap<(u32, u64), u64> {
            self.1.clone()
        }
    }

    fn h100(index: u32) -> GpuReading {
        GpuReading {
            index,
            uuid: format!("GPU-{index}"),
            name: "NVIDIA H100 80GB HBM3".into(),
            driver: "550.54.15".into(),
            utilization: Some(0.97),
            memory_used: Some(70 << 30),
            memory_total: Some(80 << 30),
            power_watts: Some(612.5),
            power_limit_watts: Some(700.0),
            energy_joules: Some(123_456.0),
            temperature_celsius: Some(61.0),
            sm_clock_hertz: Some(1.98e9),
            memory_clock_hertz: Some(2.619e9),
            throttle: vec![("sw_power_cap", true), ("hw_slowdown", false)],
            pcie_bytes_per_second: Some((1024.0, 2048.0)),
            ecc_errors: Some((3, 0)),
            processes: vec![(10, 5), (11, 50), (12, 20)],
            profiling_available: true,
            activity: Some(Activity {
                sm_active: Some(0.8),
                sm_occupancy: Some(0.4),
                tensor_active: Some(0.55),
                dram_active: Some(0.7),
            }),
        }
    }

    fn value(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        fams.iter()
            .find(|f| f.name == name)?
            .samples
            .iter()
            .find_map(|(l, v)| {
                labels
                    .iter()
                    .all(|(k, want)| l.iter().any(|(lk, lv)| lk == k && lv == want))
                    .then_some(*v)
            })
    }

    #[test]
    fn readings_become_families() {
        let xid = BTreeMap::from([((1, 79), 2)]);
        let f = families(&[h100(0), h100(1)], &xid, 2);
        assert_eq!(
            value(&f, "aifb_gpu", &[("gpu", "1"), ("uuid", "GPU-1")]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "aifb_gpu_utilization_ratio", &[("gpu", "0")]),
            Some(0.97)
        );
        assert_eq!(
            value(&f, "aifb_gpu_energy_joules", &[("gpu", "0")]),
            Some(123_456.0)
        );
        assert_eq!(
            value(
                &f,
                "aifb_gpu_clock_throttle_active",
                &[("gpu", "0"), ("reason", "sw_power_cap")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &f,
                "aifb_gpu_pcie_throughput_bytes_per_second",
                &[("direction", "rx")]
            ),
            Some(2048.0)
        );
        assert_eq!(
            value(&f, "aifb_gpu_ecc_errors", &[("kind", "corrected")]),
            Some(3.0)
        );
        assert_eq!(
            value(&f, "aifb_gpu_tensor_active_ratio", &[("gpu", "1")]),
            Some(0.55)
        );
        assert_eq!(
            value(&f, "aifb_gpu_xid_errors", &[("gpu", "1"), ("xid", "79")]),
            Some(2.0)
        );
        // Top 2 processes by memory: pids 11 and 12, not 10.
        assert_eq!(
            value(&f, "aifb_gpu_process_memory_used_bytes", &[("pid", "11")]),
            Some(50.0)
        );
        assert_eq!(
            value(&f, "aifb_gpu_process_memory_used_bytes", &[("pid", "10")]),
            None
        );
        assert_eq!(
            families(&[h100(0)], &BTreeMap::new(), 0)
                .iter()
                .filter(|f| f.name == "aifb_gpu_process_memory_used_bytes")
                .count(),
            0
        );
    }

    #[test]
    fn no_profiling_means_no_activity_series() {
        let mut r = h100(0);
        r.profiling_available = false;
        r.activity = None;
        let f = families(&[r], &BTreeMap::new(), 0);
        assert_eq!(
            value(&f, "aifb_gpu_profiling_available", &[("gpu", "0")]),
            Some(0.0)
        );
        assert!(f.iter().all(|f| f.name != "aifb_gpu_sm_active_ratio"));
    }

    #[test]
    fn restricted_to_the_jobs_gpus() {
        assert_eq!(
            visible_from_env(Some(""), Some("2,3")),
            Some(HashSet::from(["2".to_string(), "3".to_string()]))
        );
        assert_eq!(
            visible_from_env(Some("GPU-1"), Some("0")),
            Some(HashSet::from(["GPU-1".to_string()]))
        );
        assert_eq!(visible_from_env(None, None), None);
        let backend = Fake(
            Ok(vec![h100(0), h100(1), h100(2)]),
            BTreeMap::from([((0, 13), 1), ((2, 48), 1)]),
        );
        let mut c = Gpu::new(
            Box::new(backend),
            visible_from_env(Some("0,GPU-2"), None),
            0,
        );
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        let info = out.iter().find(|f| f.name == "aifb_gpu").unwrap();
        assert_eq!(info.samples.len(), 2);
        assert_eq!(
            out.iter()
                .find(|f| f.name == "aifb_gpu_xid_errors")
                .unwrap()
                .samples
                .len(),
            2
        );
    }

    #[test]
    fn backend_failure_fails_the_collector() {
        let mut c = Gpu::new(
            Box::new(Fake(Err("NVML not available".into()), BTreeMap::new())),
            None,
            0,
        );
        assert!(c.collect(&mut Vec::new()).is_err());
        // Without NVML on this machine the real backend fails the same way, without panicking.
        let mut real = NvmlBackend::new();
        if let Err(e) = real.read() {
            assert!(e.contains("NVML"), "{e}");
        }
    }
}
