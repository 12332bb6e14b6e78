//! Job collector: the SLURM job this exporter runs in. Identity from the environment
//! (`SLURM_JOB_ID`, `SLURM_STEP_ID`, `SLURM_JOB_PARTITION`) and the job's cgroup, found
//! through `/proc/<pid>/cgroup` (the unified v2 hierarchy, or v1 memory and cpuacct
//! controllers): CPU usage and throttling, memory current, peak and limit, OOM kills, and
//! the cgroup's pressure stall.
//!
//! Outside a SLURM job the collector exports nothing and succeeds: there is nothing to
//! watch. A job whose cgroup files cannot be read fails the collector.

use std::path::PathBuf;

use super::cgroup::{JobCgroup, job_cgroup, keyed, parse_pressure, read, read_number};
use super::{Collector, Family, Kind};

/// SLURM identity from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobEnv {
    /// `SLURM_JOB_ID`.
    pub job_id: Option<String>,
    /// `SLURM_STEP_ID`.
    pub step: Option<String>,
    /// `SLURM_JOB_PARTITION`.
    pub partition: Option<String>,
}

impl JobEnv {
    /// From the process environment.
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            job_id: get("SLURM_JOB_ID"),
            step: get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID")),
            partition: get("SLURM_JOB_PARTITION"),
        }
    }
}

/// The job collector.
pub struct Job {
    procfs: PathBuf,
    cgroupfs: PathBuf,
    pid: String,
    env: JobEnv,
    /// A process does not change jobs: its cgroup is looked up once.
    resolved: Option<Option<JobCgroup>>,
}

impl Job {
    /// Watches the job of process `pid` (`self` for the exporter's own).
    pub fn new(
        procfs: impl Into<PathBuf>,
        cgroupfs: impl Into<PathBuf>,
        pid: &str,
        env: JobEnv,
    ) -> Self {
        Self {
            procfs: procfs.into(),
            cgroupfs: cgroupfs.into(),
            pid: pid.to_string(),
            env,
            resolved: None,
        }
    }
}

const LARGE_LIMIT: f64 = 4.0e18; // v1 reports "no limit" as a huge number

impl Collector for Job {
    fn name(&self) -> &'static str {
        "job"
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String> {
        let cgroup_file = self.procfs.join(&self.pid).join("cgroup");
        let found = match &self.resolved {
            Some(found) => found.clone(),
            None => {
                let text = std::fs::read_to_string(&cgroup_file)
                    .map_err(|e| format!("{}: {e}", cgroup_file.display()))?;
                let found = job_cgroup(&text, &self.cgroupfs);
                self.resolved = Some(found.clone());
                found
            }
        };
        let (job_from_cgroup, step_from_cgroup) = match &found {
            Some(JobCgroup::V2 { job, step, .. }) | Some(JobCgroup::V1 { job, step, .. }) => {
                (Some(job.clone()), step.clone())
            }
            None => (None, None),
        };
        let Some(job_id) = self.env.job_id.clone().or(job_from_cgroup) else {
            return Ok(());
        };
        let mut info = Family::new("aifb_job", "SLURM job identity", Kind::Info);
        info.push(
            vec![
                ("job_id", job_id),
                (
                    "step",
                    self.env
                        .step
                        .clone()
                        .or(step_from_cgroup)
                        .unwrap_or_default(),
                ),
                ("partition", self.env.partition.clone().unwrap_or_default()),
            ],
            1.0,
        );
        out.push(info);
        let Some(cg) = found else {
            return Err(format!(
                "SLURM job without a job cgroup in {}",
                cgroup_file.display()
            ));
        };
        let mut g = |name: &'static str, help: &'static str, kind: Kind, v: Option<f64>| {
            if let Some(v) = v {
                out.push(Family::single(name, help, kind, v));
            }
        };
        match &cg {
            JobCgroup::V2 { dir, .. } => {
                let cpu = read(dir, "cpu.stat")
                    .ok_or_else(|| format!("{}: cannot read cpu.stat", dir.display()))?;
                g(
                    "aifb_job_cpu_seconds",
                    "CPU time of the job",
                    Kind::Counter,
                    keyed(&cpu, "usage_usec").map(|v| v / 1e6),
                );
                g(
                    "aifb_job_cpu_throttled_seconds",
                    "Time the job was throttled by its CPU limit",
                    Kind::Counter,
                    keyed(&cpu, "throttled_usec").map(|v| v / 1e6),
                );
                g(
                    "aifb_job_cpu_throttled_periods",
                    "CPU periods in which the job was throttled",
                    Kind::Counter,
                    keyed(&cpu, "nr_throttled"),
                );
                g(
                    "aifb_job_memory_current_bytes",
                    "Memory charged to the job",
                    Kind::Gauge,
                    read_number(dir, "memory.current"),
                );
                g(
                    "aifb_job_memory_peak_bytes",
                    "Highest memory charged to the job",
                    Kind::Gauge,
                    read_number(dir, "memory.peak"),
                );
                g(
                    "aifb_job_memory_max_bytes",
                    "Memory limit of the job",
                    Kind::Gauge,
                    read_number(dir, "memory.max"),
                );
                g(
                    "aifb_job_oom_kills",
                    "Processes of the job killed by the OOM killer",
                    Kind::Counter,
                    read(dir, "memory.events").and_then(|t| keyed(&t, "oom_kill")),
                );
                let mut psi = Family::new(
                    "aifb_job_pressure_stall_seconds",
                    "Time tasks of the job stalled on a resource (PSI)",
                    Kind::Counter,
                );
                for resource in ["cpu", "memory", "io"] {
                    for (kind, secs) in read(dir, &format!("{resource}.pressure"))
                        .map(|t| parse_pressure(&t))
                        .unwrap_or_default()
                    {
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
            }
            JobCgroup::V1 {
                memory, cpuacct, ..
            } => {
                if let Some(dir) = cpuacct {
                    let usage = read_number(dir, "cpuacct.usage")
                        .ok_or_else(|| format!("{}: cannot read cpuacct.usage", dir.display()))?;
                    g(
                        "aifb_job_cpu_seconds",
                        "CPU time of the job",
                        Kind::Counter,
                        Some(usage / 1e9),
                    );
                    let stat = read(dir, "cpu.stat").unwrap_or_default();
                    g(
                        "aifb_job_cpu_throttled_seconds",
                        "Time the job was throttled by its CPU limit",
                        Kind::Counter,
                        keyed(&stat, "throttled_time").map(|v| v / 1e9),
                    );
                    g(
                        "aifb_job_cpu_throttled_periods",
                        "CPU periods in which the job was throttled",
                        Kind::Counter,
                        keyed(&stat, "nr_throttled"),
                    );
                }
                if let Some(dir) = memory {
                    let current = read_number(dir, "memory.usage_in_bytes").ok_or_else(|| {
                        format!("{}: cannot read memory.usage_in_bytes", dir.display())
                    })?;
                    g(
                        "aifb_job_memory_current_bytes",
                        "Memory charged to the job",
                        Kind::Gauge,
                        Some(current),
                    );
                    g(
                        "aifb_job_memory_peak_bytes",
                        "Highest memory charged to the job",
                        Kind::Gauge,
                        read_number(dir, "memory.max_usage_in_bytes"),
                    );
                    g(
                        "aifb_job_memory_max_bytes",
                        "Memory limit of the job",
                        Kind::Gauge,
                        read_number(dir, "memory.limit_in_bytes").filter(|v| *v < LARGE_LIMIT),
                    );
                    g(
                        "aifb_job_oom_kills",
                        "Processes of the job killed by the OOM killer",
                        Kind::Counter,
                        read(dir, "memory.oom_control").and_then(|t| keyed(&t, "oom_kill")),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn value(fams: &[Family], name: &str) -> Option<f64> {
        fams.iter()
            .find(|f| f.name == name)
            .and_then(|f| f.samples.first())
            .map(|s| s.1)
    }

    #[test]
    fn cgroup_v2_job_layout() {
        let t = tempfile::tempdir().unwrap();
        let (proc_root, cg) = (t.path().join("proc"), t.path().join("cgroup"));
        write(
            &proc_root.join("self/cgroup"),
            "0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0\n",
        );
        let job = cg.join("system.slice/slurmstepd.scope/job_4242");
        write(&job.join("cgroup.controllers"), "cpu memory io\n");
        write(
            &job.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 120000\n",
        );
        write(&job.join("memory.current"), "1048576\n");
        write(&job.join("memory.peak"), "2097152\n");
        write(&job.join("memory.max"), "max\n");
        write(
            &job.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        );
        write(
            &job.join("memory.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
        );
        let env = JobEnv {
            job_id: None,
            step: None,
            partition: Some("gpu".into()),
        };
        let mut c = Job::new(&proc_root, &cg, "self", env);
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        let info = &out.iter().find(|f| f.name == "aifb_job").unwrap().samples[0].0;
        assert!(
            info.contains(&("job_id", "4242".into()))
                && info.contains(&("step", "0".into()))
                && info.contains(&("partition", "gpu".into()))
        );
        assert_eq!(value(&out, "aifb_job_cpu_seconds"), Some(2.5));
        assert_eq!(value(&out, "aifb_job_cpu_throttled_seconds"), Some(0.12));
        assert_eq!(
            value(&out, "aifb_job_memory_current_bytes"),
            Some(1_048_576.0)
        );
        assert_eq!(value(&out, "aifb_job_memory_peak_bytes"), Some(2_097_152.0));
        assert_eq!(
            value(&out, "aifb_job_memory_max_bytes"),
            None,
            "max means no limit"
        );
        assert_eq!(value(&out, "aifb_job_oom_kills"), Some(1.0));
        let psi = out
            .iter()
            .find(|f| f.name == "aifb_job_pressure_stall_seconds")
            .unwrap();
        assert_eq!(psi.samples.len(), 2);
    }

    #[test]
    fn cgroup_v1_hybrid_layout_with_string_job_id() {
        let t = tempfile::tempdir().unwrap();
        let (proc_root, cg) = (t.path().join("proc"), t.path().join("cgroup"));
        write(
            &proc_root.join("77/cgroup"),
            "12:memory:/slurm/uid_1000/job_01JD3K9Z8XQ4A2/step_batch/task_0\n3:cpu,cpuacct:/slurm/uid_1000/job_01JD3K9Z8XQ4A2/step_batch/task_0\n0::/\n",
        );
        let mem = cg.join("memory/slurm/uid_1000/job_01JD3K9Z8XQ4A2");
        write(&mem.join("memory.usage_in_bytes"), "4096\n");
        write(&mem.join("memory.max_usage_in_bytes"), "8192\n");
        write(&mem.join("memory.limit_in_bytes"), "9223372036854771712\n");
        write(
            &mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        let cpu = cg.join("cpu,cpuacct/slurm/uid_1000/job_01JD3K9Z8XQ4A2");
        write(&cpu.join("cpuacct.usage"), "3000000000\n");
        write(
            &cpu.join("cpu.stat"),
            "nr_periods 5\nnr_throttled 1\nthrottled_time 500000000\n",
        );
        let env = JobEnv {
            job_id: Some("77".into()),
            step: None,
            partition: None,
        };
        let mut c = Job::new(&proc_root, &cg, "77", env);
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert_eq!(value(&out, "aifb_job_cpu_seconds"), Some(3.0));
        assert_eq!(value(&out, "aifb_job_cpu_throttled_seconds"), Some(0.5));
        assert_eq!(value(&out, "aifb_job_memory_current_bytes"), Some(4096.0));
        assert_eq!(
            value(&out, "aifb_job_memory_max_bytes"),
            None,
            "v1's huge number means no limit"
        );
        assert_eq!(value(&out, "aifb_job_oom_kills"), Some(2.0));
        let info = &out.iter().find(|f| f.name == "aifb_job").unwrap().samples[0].0;
        assert!(
            info.contains(&("job_id", "77".into())) && info.contains(&("step", "batch".into()))
        );
    }

    #[test]
    fn outside_a_job_exports_nothing_and_unreadable_files_fail() {
        let t = tempfile::tempdir().unwrap();
        let (proc_root, cg) = (t.path().join("proc"), t.path().join("cgroup"));
        write(&proc_root.join("self/cgroup"), "0::/user.slice\n");
        let mut c = Job::new(&proc_root, &cg, "self", JobEnv::default());
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert!(out.is_empty());
        // In a job whose cgroup directory lacks its files: the collector fails.
        write(
            &proc_root.join("self/cgroup"),
            "0::/system.slice/slurmstepd.scope/job_9/step_0\n",
        );
        write(
            &cg.join("system.slice/slurmstepd.scope/job_9/cgroup.controllers"),
            "",
        );
        // The first collector resolved "not in a job" once and keeps it.
        assert!(c.collect(&mut Vec::new()).is_ok());
        let mut c = Job::new(&proc_root, &cg, "self", JobEnv::default());
        assert!(c.collect(&mut Vec::new()).unwrap_err().contains("cpu.stat"));

        assert!(
            Job::new(t.path().join("none"), &cg, "self", JobEnv::default())
                .collect(&mut Vec::new())
                .is_err()
        );
    }
}
