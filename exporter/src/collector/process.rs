//! Process collector: the service's processes, chosen by PID, name or cgroup, with all
//! their descendants, summed per `service` label: CPU seconds, resident memory, threads,
//! open file descriptors and the number of processes. Per-process series are opt-in
//! (`per_pid`), since their cardinality follows the service's process count.
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
    /// Cgroup directories whose member processes (`cgroup.procs`) are roots too.
    pub cgroups: Vec<PathBuf>,
    /// Also export one series per process.
    pub per_pid: bool,
}

/// Reads processes from a proc root.
pub struct Processes {
    root: PathBuf,
    selection: Selection,
    ticks_per_second: f64,
    page_size: f64,
}

struct ProcInfo {
    fds: Option<u64>,
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
                    fds: std::fs::read_dir(entry.path().join("fd"))
                        .ok()
                        .map(|d| d.count() as u64),
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

/// PIDs in a cgroup and its sub-cgroups (in cgroup v2 a job's processes live in leaves
/// such as `step_0/user/task_0`, not in the job directory itself).
fn cgroup_members(dir: &std::path::Path) -> Result<Vec<i32>, String> {
    let procs = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(|e| format!("{}: {e}", procs.display()))?;
    let mut out: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let mut stack: Vec<(std::path::PathBuf, u32)> = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if depth < 8 && p.is_dir() {
                if let Ok(t) = std::fs::read_to_string(p.join("cgroup.procs")) {
                    out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
                stack.push((p, depth + 1));
            }
        }
    }
    Ok(out)
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
        let mut sel = self.selection.clone();
        for dir in &self.selection.cgroups {
            sel.pids.extend(cgroup_members(dir)?);
        }
        let chosen = select(&view, &sel);
        let (mut ticks, mut rss, mut threads, mut fds) = (0u64, 0u64, 0i64, 0u64);
        let mut per_pid = [
            Family::new(
                "aifb_process_pid_cpu_seconds",
                "CPU time of one process of the service",
                Kind::Counter,
            ),
            Family::new(
                "aifb_process_pid_resident_memory_bytes",
                "Resident memory of one process of the service",
                Kind::Gauge,
            ),
        ];
        let mut sorted: Vec<&i32> = chosen.iter().collect();
        sorted.sort();
        for pid in sorted {
            if let Some(i) = procs.get(pid) {
                ticks += i.cpu_ticks;
                rss += i.rss_pages;
                threads += i.threads;
                fds += i.fds.unwrap_or(0);
                if self.selection.per_pid {
                    let labels = || {
                        vec![
                            ("service", self.selection.service.clone()),
                            ("pid", pid.to_string()),
                            ("name", i.comm.clone()),
                        ]
                    };
                    per_pid[0].push(labels(), i.cpu_ticks as f64 / self.ticks_per_second);
                    per_pid[1].push(labels(), i.rss_pages as f64 * self.page_size);
                }
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
            "aifb_process_open_fds",
            "Open file descriptors of the service's processes (those readable)",
            Kind::Gauge,
        );
        f.push(label(), fds as f64);
        out.push(f);
        out.extend(per_pid);
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
        if pid == 10 {
            std::fs::create_dir_all(d.join("fd")).unwrap();
            for fd in ["0", "1"] {
                std::fs::write(d.join("fd").join(fd), "").unwrap();
            }
        }
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
            cgroups: vec![],
            per_pid: true,
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
        let get = |name: &str| out.iter().find(|f| f.name == name).unwrap().samples.clone();
        assert_eq!(
            get("aifb_process_resident_memory_bytes")[0].1,
            60.0 * 4096.0
        );
        assert_eq!(get("aifb_process_threads")[0].1, 9.0);
        assert_eq!(get("aifb_process_processes")[0].1, 3.0);
        assert_eq!(get("aifb_process_open_fds")[0].1, 2.0);
        let per_pid = get("aifb_process_pid_cpu_seconds");
        assert_eq!(per_pid.len(), 3);
        assert_eq!(
            per_pid[1].0,
            vec![
                ("service", "svc".to_string()),
                ("pid", "11".to_string()),
                ("name", "worker".to_string())
            ]
        );
        assert_eq!(per_pid[1].1, 2.05);
    }

    #[test]
    fn selects_a_cgroups_members() {
        let dir = tempfile::tempdir().unwrap();
        write_proc(dir.path(), 40, 1, "a", 10, 1);
        write_proc(dir.path(), 41, 1, "b", 10, 1);
        write_proc(dir.path(), 42, 41, "c", 10, 1);
        let cg = dir.path().join("cg");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cgroup.procs"), "").unwrap();
        std::fs::create_dir_all(cg.join("step_0/task_0")).unwrap();
        std::fs::write(cg.join("step_0/task_0/cgroup.procs"), "41\n").unwrap();

        let sel = Selection {
            service: "job".into(),
            cgroups: vec![cg.clone()],
            ..Selection::default()
        };
        let mut c = Processes::new(dir.path(), sel);
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert_eq!(
            out.iter()
                .find(|f| f.name == "aifb_process_processes")
                .unwrap()
                .samples[0]
                .1,
            2.0
        );
        std::fs::remove_file(cg.join("cgroup.procs")).unwrap();
        assert!(
            c.collect(&mut Vec::new())
                .unwrap_err()
                .contains("cgroup.procs")
        );
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
            cgroups: vec![],
            per_pid: false,
        };
        let mut c = Processes::new(dir.path(), sel);
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert_eq!(
            out.iter()
                .find(|f| f.name == "aifb_process_processes")
                .unwrap()
                .samples[0]
                .1,
            1.0
        );
    }
}
