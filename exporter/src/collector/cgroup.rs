//! Shared readers for pressure-stall (PSI) files and cgroup paths, used by the node, job
//! and process collectors. Pure parsing functions are separated from file access so they
//! can be tested on text.

use std::path::{Path, PathBuf};

/// Parses a PSI file (`/proc/pressure/cpu`, a cgroup's `cpu.pressure`): returns
/// `(kind, total seconds)` for each of the `some` and `full` lines.
pub fn parse_pressure(text: &str) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = match words.next() {
            Some("some") => "some",
            Some("full") => "full",
            _ => continue,
        };
        if let Some(total) = words
            .find_map(|w| w.strip_prefix("total="))
            .and_then(|t| t.parse::<f64>().ok())
        {
            out.push((kind, total / 1e6));
        }
    }
    out
}

/// Reads `name` under `dir` as text; `None` when absent or unreadable.
pub fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// Reads a number file (`memory.current`); `None` for `max` or anything unparsable.
pub fn read_number(dir: &Path, name: &str) -> Option<f64> {
    read(dir, name)?.trim().parse().ok()
}

/// Value of `key` in a flat keyed file (`cpu.stat`, `memory.events`, `memory.oom_control`).
pub fn keyed(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(key))
            .then(|| w.next()?.parse().ok())
            .flatten()
    })
}

/// Where a process's SLURM job lives in the cgroup tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCgroup {
    /// Unified hierarchy: the job's directory.
    V2 {
        dir: PathBuf,
        job: String,
        step: Option<String>,
    },
    /// Legacy hierarchy: the job's directories in the memory and cpuacct controllers.
    V1 {
        memory: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        job: String,
        step: Option<String>,
    },
}

/// Splits a cgroup path at its `job_<id>` component: returns (path through the job, job
/// id, step). Works for numeric ids (`job_1234`) and string ids alike, whatever lies
/// before (`/slurm/uid_1000/`, `/system.slice/slurmstepd.scope/`).
pub fn split_job(path: &str) -> Option<(String, String, Option<String>)> {
    let parts: Vec<&str> = path.split('/').collect();
    let pos = parts
        .iter()
        .position(|p| p.starts_with("job_") && p.len() > 4)?;
    let job = parts[pos]["job_".len()..].to_string();
    let step = parts
        .get(pos + 1)
        .and_then(|p| p.strip_prefix("step_"))
        .map(str::to_string);
    Some((parts[..=pos].join("/"), job, step))
}

/// Finds the job cgroup of a process from its `/proc/<pid>/cgroup` text and the cgroup
/// mount point. Prefers the unified hierarchy when it holds the job.
pub fn job_cgroup(proc_cgroup: &str, cgroupfs: &Path) -> Option<JobCgroup> {
    let mut memory = None;
    let mut cpuacct = None;
    let mut v1_ids = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some((prefix, job, step)) = split_job(path) else {
            continue;
        };
        let rel = prefix.trim_start_matches('/');
        if controllers.is_empty() {
            let dir = cgroupfs.join(rel);
            if dir.join("cgroup.controllers").exists() || dir.join("memory.current").exists() {
                return Some(JobCgroup::V2 { dir, job, step });
            }
            let unified = cgroupfs.join("unified").join(rel);
            if unified.join("cgroup.controllers").exists() {
                return Some(JobCgroup::V2 {
                    dir: unified,
                    job,
                    step,
                });
            }
            continue;
        }
        for c in controllers.split(',') {
            match c {
                "memory" => memory = Some(cgroupfs.join(controllers).join(rel)),
                "cpuacct" => cpuacct = Some(cgroupfs.join(controllers).join(rel)),
                _ => {}
            }
        }
        v1_ids.get_or_insert((job, step));
    }
    let (job, step) = v1_ids?;
    Some(JobCgroup::V1 {
        memory,
        cpuacct,
        job,
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_totals_in_seconds() {
        let t = "some avg10=0.00 avg60=0.10 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=250\n";
        assert_eq!(parse_pressure(t), vec![("some", 1.5), ("full", 0.00025)]);
        assert!(parse_pressure("garbage").is_empty());
    }

    #[test]
    fn job_components() {
        assert_eq!(
            split_job("/system.slice/slurmstepd.scope/job_1234/step_0/user/task_0"),
            Some((
                "/system.slice/slurmstepd.scope/job_1234".into(),
                "1234".into(),
                Some("0".into())
            ))
        );
        assert_eq!(
            split_job("/slurm/uid_1000/job_77/step_batch/task_0").map(|s| s.2),
            Some(Some("batch".into()))
        );
        assert_eq!(
            split_job("/slurm/job_01JD3K9Z8XQ4A2/step_0").map(|s| s.1),
            Some("01JD3K9Z8XQ4A2".into())
        );
        assert_eq!(split_job("/user.slice/user-0.slice"), None);
        assert_eq!(
            keyed("usage_usec 10\nnr_throttled 2\n", "nr_throttled"),
            Some(2.0)
        );
    }
}
