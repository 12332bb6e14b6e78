//! Process collector: the service's processes, chosen by PID or by name, with all their
//! descendants, summed per `service` label: CPU seconds, resident memory, threads and the
//! number of processes.
//!
//! A process that exits between listing and reading is skipped, not an error. When a child
//! exits its CPU time leaves the sum, which `rate()` treats as a counter reset.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::{Collector, Family, Kind};

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Root PIDs.
    pub pids: Vec<i32>,
    /// Process names (`comm`) to match.
    pub names: Vec<String>,
    /// Value of the `service` label.
    pub service: String,
}

/// Reads processes from a proc root.
pub struct Processes {
    root: PathBuf,
    selection: Selection,
    ticks_per_second: f64,
    page_size: f64,
}

struct ProcInfo {
    ppid: i32,
    comm: String,
    cpu_ticks: u64,
    rss_pages: u64,
    threads: i64,
}

impl Processes {
    /// A collector reading `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>, selection: Selection) -> Self {
        let ticks = procfs::ticks_per_second();
        Self {
            root: root.into(),
            selection,
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: procfs::page_size() as f64,
        }
    }

    fn scan(&self) -> Result<HashMap<i32, ProcInfo>, String> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| format!("{}: {e}", self.root.display()))?;
        let mut out = HashMap::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(p) = procfs::process::Process::new_with_root(entry.path()) else {
                continue;
            };
            let Ok(stat) = p.stat() else { continue };
            out.insert(
                pid,
                ProcInfo {
                    ppid: stat.ppid,
                    comm: stat.comm,
                    cpu_ticks: stat.utime + stat.stime,
                    rss_pages: stat.rss,
                    threads: stat.num_threads,
                },
            );
        }
        Ok(out)
    }
}

/// The selected PIDs: roots by PID or name, then every descendant.
fn select(all: &HashMap<i32, (i32, &str)>, sel: &Selection) -> HashSet<i32> {
    let mut chosen: HashSet<i32> = sel
        .pids
        .iter()
        .copied()
        .filter(|p| all.contains_key(p))
        .collect();
    chosen.extend(
        all.iter()
            .filter(|(_, (_, comm))| sel.names.iter().any(|n| n == comm))
            .map(|(p, _)| *p),
    );
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, (ppid, _)) in all {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut stack: Vec<i32> = chosen.iter().copied().collect();
    while let Some(p) = stack.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if chosen.insert(*c) {
                stack.push(*c);
            }
        }
    }
    chosen
}

impl Collector for Processes {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
        let procs = self.scan()?;
        let view: HashMap<i32, (i32, &str)> = procs
            .iter()
            .map(|(p, i)| (*p, (i.ppid, i.comm.as_str())))
            .collect();
        let chosen = select(&view, &self.selection);
        let (mut ticks, mut rss, mut threads) = (0u64, 0u64, 0i64);
        for pid in &chosen {
            if let Some(i) = procs.get(pid) {
                ticks += i.cpu_ticks;
                rss += i.rss_pages;
                threads += i.threads;
            }
        }
        let label = || vec![("service", self.selection.service.clone())];
        let mut f = Family::new(
            "aifb_process_cpu_seconds",
            "CPU time of the service's processes (user + system)",
            Kind::Counter,
        );
        f.push(label(), ticks as f64 / self.ticks_per_second);
        out.push(f);
        let mut f = Family::new(
            "aifb_process_resident_memory_bytes",
            "Resident memory of the service's processes",
            Kind::Gauge,
        );
        f.push(label(), rss as f64 * self.page_size);
        out.push(f);
        let mut f = Family::new(
            "aifb_process_threads",
            "Threads of the service's processes",
            Kind::Gauge,
        );
        f.push(label(), threads as f64);
        out.push(f);
        let mut f = Family::new(
            "aifb_process_processes",
            "Processes of the service that are alive",
            Kind::Gauge,
        );
        f.push(label(), chosen.len() as f64);
        out.push(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_proc(root: &std::path::Path, pid: i32, ppid: i32, comm: &str, utime: u64, rss: u64) {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let stat = format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 0 0 0 0 {utime} 5 0 0 20 0 3 0 100 1000000 {rss} 18446744073709551615 \
             1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        );
        std::fs::write(d.join("stat"), stat).unwrap();
    }

    #[test]
    fn sums_a_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), 10, 1, "server", 100, 10);
        write_proc(dir.path(), 11, 10, "worker", 200, 20);
        write_proc(dir.path(), 12, 11, "helper", 300, 30);
        write_proc(dir.path(), 20, 1, "other", 999, 99);
        let sel = Selection {
            pids: vec![10],
            names: vec![],
            service: "svc".into(),
        };
        let mut c = Processes {
            root: dir.path().into(),
            selection: sel,
            ticks_per_second: 100.0,
            page_size: 4096.0,
        };
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        // utime + stime(5) per process: (105 + 205 + 305) ticks.
        assert_eq!(
            out[0].samples[0],
            (vec![("service", "svc".to_string())], 6.15)
        );
        assert_eq!(out[1].samples[0].1, 60.0 * 4096.0);
        assert_eq!(out[2].samples[0].1, 9.0);
        assert_eq!(out[3].samples[0].1, 3.0);
    }

    #[test]
    fn selects_by_name_and_tolerates_vanished_pids() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), 30, 1, "redis-server", 10, 1);
        std::fs::create_dir_all(dir.path().join("31")).unwrap(); // exited: no stat
        let sel = Selection {
            pids: vec![31, 999],
            names: vec!["redis-server".into()],
            service: "redis".into(),
        };
        let mut c = Processes::new(dir.path(), sel);
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert_eq!(out[3].samples[0].1, 1.0);
    }
}
