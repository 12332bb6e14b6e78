//! Node collector: CPU seconds by mode from `/proc/stat`, memory from `/proc/meminfo`.

use std::path::PathBuf;

use super::{Collector, Family, Kind};

/// Reads a proc root (normally `/proc`; a fixture directory in tests).
pub struct Node {
    root: PathBuf,
    ticks_per_second: f64,
}

impl Node {
    /// A collector reading `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let ticks = procfs::ticks_per_second();
        Self {
            root: root.into(),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        }
    }
}

const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// MemTotal and MemAvailable (bytes) from `/proc/meminfo`; kernels older than 3.14 lack
/// MemAvailable, for which MemFree + Cached stands in. Only the lines needed are parsed:
/// this runs on every scrape.
pub fn parse_meminfo(text: &str) -> Option<(f64, f64)> {
    let (mut total, mut available, mut free, mut cached) = (None, None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "MemFree" => &mut free,
            "Cached" => &mut cached,
            _ => continue,
        };
        let mut words = rest.split_whitespace();
        let value: f64 = words.next()?.parse().ok()?;
        *slot = Some(if words.next() == Some("kB") {
            value * 1024.0
        } else {
            value
        });
    }
    let available = available.or_else(|| Some(free? + cached?))?;
    Some((total?, available))
}

/// Parses the aggregate `cpu` line of `/proc/stat` into seconds per mode.
pub fn parse_cpu_line(
    stat: &str,
    ticks_per_second: f64,
) -> Result<Vec<(&'static str, f64)>, String> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no aggregate cpu line")?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cpu line: {e}"))?;
    if values.len() < 4 {
        return Err(format!(
            "cpu line has {} fields, expected at least 4",
            values.len()
        ));
    }
    Ok(MODES
        .iter()
        .zip(values)
        .map(|(m, v)| (*m, v / ticks_per_second))
        .collect())
}

impl Collector for Node {
    fn name(&self) -> &'static str {
        "node"
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
        let stat_path = self.root.join("stat");
        let stat = std::fs::read_to_string(&stat_path)
            .map_err(|e| format!("{}: {e}", stat_path.display()))?;
        let mut cpu = Family::new(
            "aifb_node_cpu_seconds",
            "Seconds the CPUs spent in each mode",
            Kind::Counter,
        );
        for (mode, secs) in parse_cpu_line(&stat, self.ticks_per_second)? {
            cpu.push(vec![("mode", mode.to_string())], secs);
        }
        out.push(cpu);
        let meminfo_path = self.root.join("meminfo");
        let meminfo = std::fs::read_to_string(&meminfo_path)
            .map_err(|e| format!("{}: {e}", meminfo_path.display()))?;
        let (total, available) = parse_meminfo(&meminfo)
            .ok_or_else(|| format!("{}: no MemTotal and MemAvailable", meminfo_path.display()))?;
        out.push(Family::single(
            "aifb_node_memory_total_bytes",
            "Total usable memory",
            Kind::Gauge,
            total,
        ));
        if let Ok(load) = std::fs::read_to_string(self.root.join("loadavg")) {
            let v: Vec<f64> = load
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [l1, l5, l15] = v[..] {
                out.push(Family::single(
                    "aifb_node_load1",
                    "1-minute load average",
                    Kind::Gauge,
                    l1,
                ));
                out.push(Family::single(
                    "aifb_node_load5",
                    "5-minute load average",
                    Kind::Gauge,
                    l5,
                ));
                out.push(Family::single(
                    "aifb_node_load15",
                    "15-minute load average",
                    Kind::Gauge,
                    l15,
                ));
            }
        }
        // Pressure stall information; absent on kernels without PSI, which is not an error.
        let mut psi = Family::new(
            "aifb_node_pressure_stall_seconds",
            "Time tasks stalled on a resource (PSI)",
            Kind::Counter,
        );
        for resource in ["cpu", "memory", "io"] {
            let text =
                super::cgroup::read(&self.root.join("pressure"), resource).unwrap_or_default();
            for (kind, secs) in super::cgroup::parse_pressure(&text) {
                psi.push(
                    vec![
                        ("resource", resource.to_string()),
                        ("kind", kind.to_string()),
                    ],
                    secs,
                );
            }
        }
        out.push(psi);
        out.push(Family::single(
            "aifb_node_memory_available_bytes",
            "Memory available for new work without swapping",
            Kind::Gauge,
            available,
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 1 2 3 4\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nBuffers: 0 kB\nCached: 100 kB\n\
             SwapCached: 0 kB\nActive: 0 kB\nInactive: 0 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nDirty: 0 kB\nWriteback: 0 kB\n\
             Mapped: 0 kB\nShmem: 0 kB\nSlab: 0 kB\nPageTables: 0 kB\nCommitLimit: 0 kB\nCommitted_AS: 0 kB\n\
             VmallocTotal: 0 kB\nVmallocUsed: 0 kB\nVmallocChunk: 0 kB\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("loadavg"), "0.50 0.25 0.10 1/100 4242\n").unwrap();
        std::fs::create_dir_all(dir.path().join("pressure")).unwrap();
        std::fs::write(dir.path().join("pressure/io"), "some avg10=0 avg60=0 avg300=0 total=2000000\nfull avg10=0 avg60=0 avg300=0 total=1000000\n").unwrap();
        let mut n = Node {
            root: dir.path().into(),
            ticks_per_second: 100.0,
        };

        let mut out = Vec::new();
        n.collect(&mut out).unwrap();
        assert_eq!(out[0].samples[0], (vec![("mode", "user".to_string())], 1.0));
        assert_eq!(out[0].samples[3].1, 10.0);
        assert_eq!(out[1].samples[0].1, 1_024_000.0);
        let get = |name: &str| {
            out.iter()
                .find(|f| f.name == name)
                .map(|f| f.samples.clone())
        };
        assert_eq!(
            get("aifb_node_memory_available_bytes").unwrap()[0].1,
            614_400.0
        );
        assert_eq!(get("aifb_node_load5").unwrap()[0].1, 0.25);
        let psi = get("aifb_node_pressure_stall_seconds").unwrap();
        assert_eq!(
            psi,
            vec![
                (
                    vec![("resource", "io".to_string()), ("kind", "some".to_string())],
                    2.0
                ),
                (
                    vec![("resource", "io".to_string()), ("kind", "full".to_string())],
                    1.0
                ),
            ]
        );
    }

    #[test]
    fn meminfo_lines() {
        let old_kernel = "MemTotal: 100 kB\nMemFree: 10 kB\nCached: 5 kB\n";
        assert_eq!(parse_meminfo(old_kernel), Some((102_400.0, 15_360.0)));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn missing_files_fail_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node::new(dir.path());
        let err = n.collect(&mut Vec::new()).unwrap_err();
        assert!(err.contains("stat"), "{err}");
        assert!(parse_cpu_line("intr 1", 100.0).is_err());
    }
}
