//! The SLURM executor: renders the batch script from the recipe, submits it, and follows
//! the run until the job has written its final state.
//!
//! The script is `slurm/job.sh` (the same for every recipe) under a header rendered here:
//! the `#SBATCH` lines of the chosen layout and the recipe's settings as shell variables.
//! Rendering is pure ([`render`]) and covered by golden files; everything else talks to
//! `sbatch`, `squeue` and `scancel`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aifb_core::exit::Failure;
use aifb_core::recipe::{Layout, Recipe, Resources, ServiceKind};
use aifb_core::run::{Manifest, RunDir, RunStatus};

/// The body shared by every batch script.
const BODY: &str = include_str!("../../slurm/job.sh");

/// Seconds the loadgen shards wait after their start so that they begin together.
const START_DELAY_S: u32 = 5;

/// Where the run lives; everything here must be on the shared filesystem.
#[derive(Debug, Clone)]
pub struct JobPaths {
    /// The run id.
    pub run_id: String,
    /// The run directory (absolute).
    pub run_dir: PathBuf,
    /// Directory of the aifb binaries (`aifb`, `loadgen`, `exporter`, `analyzer`).
    pub bin_dir: PathBuf,
    /// State directory of discovery records.
    pub state_dir: PathBuf,
    /// The recipe's directory (`{recipe_dir}`).
    pub recipe_dir: PathBuf,
}

/// Quotes one word for bash.
fn q(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| "''".to_string(), |c| c.into_owned())
}

fn q_path(p: &Path) -> String {
    q(&p.display().to_string())
}

fn array(name: &str, words: &[String]) -> String {
    let body: Vec<String> = words.iter().map(|w| q(w)).collect();
    format!("{name}=({})\n", body.join(" "))
}

/// Megabytes of a SLURM memory size (`512M`, `16G`; plain numbers are megabytes).
pub fn memory_mb(s: &str) -> u64 {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().unwrap_or(0);
    match unit.to_ascii_uppercase().as_str() {
        "K" => n.div_ceil(1024),
        "G" => n * 1024,
        "T" => n * 1024 * 1024,
        _ => n,
    }
}

/// `D-HH:MM:SS` of a whole number of seconds.
fn slurm_time(secs: u64) -> String {
    let (d, rest) = (secs / 86_400, secs % 86_400);
    format!(
        "{d}-{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The job's time limit: the recipe's, else the planned workload plus the service's
/// readiness timeout, the signal margin and five minutes for start-up and analysis,
/// rounded up to whole minutes.
pub fn time_limit(recipe: &Recipe) -> Duration {
    recipe.executor.time.map(|t| t.get()).unwrap_or_else(|| {
        let secs = recipe.planned_duration().as_secs()
            + recipe.service.health.timeout.get().as_secs()
            + recipe.executor.signal_margin.get().as_secs()
            + 300;
        Duration::from_secs(secs.div_ceil(60) * 60)
    })
}

fn group_lines(out: &mut String, recipe: &Recipe, r: &Resources, ntasks_per_node: bool) {
    let ex = &recipe.executor;
    let _ = writeln!(
        out,
        "#SBATCH --partition={}",
        ex.partition.as_deref().unwrap_or("")
    );
    if let Some(a) = &ex.account {
        let _ = writeln!(out, "#SBATCH --account={a}");
    }
    if let Some(qos) = &ex.qos {
        let _ = writeln!(out, "#SBATCH --qos={qos}");
    }
    let _ = writeln!(
        out,
        "#SBATCH --time={}",
        slurm_time(time_limit(recipe).as_secs())
    );
    let _ = writeln!(out, "#SBATCH --nodes={}", r.nodes);
    if ntasks_per_node {
        let _ = writeln!(out, "#SBATCH --ntasks-per-node=1");
    } else {
        let _ = writeln!(out, "#SBATCH --ntasks=1");
    }
    let _ = writeln!(out, "#SBATCH --cpus-per-task={}", r.cpus);
    let _ = writeln!(out, "#SBATCH --mem={}", r.memory);
    if let Some(g) = r.gpus.filter(|g| *g > 0) {
        let _ = writeln!(out, "#SBATCH --gpus-per-node={g}");
    }
    if let Some(g) = &r.gres {
        let _ = writeln!(out, "#SBATCH --gres={g}");
    }
}

/// The service's command line, with `{port}` and friends left for the job to fill in.
fn service_command(recipe: &Recipe, paths: &JobPaths) -> Vec<String> {
    match recipe.service.kind {
        ServiceKind::Simulator => vec![
            paths.bin_dir.join("loadgen").display().to_string(),
            "sim".into(),
            "--listen".into(),
            "{bind}:{port}".into(),
            "--recipe".into(),
            paths.run_dir.join("recipe.lock.yaml").display().to_string(),
        ],
        _ => recipe.service.command.clone(),
    }
}

/// The readiness check the job runs before the driver's own: `http:PATH`, `redis`,
/// `postgres`, or `none` (the driver's check alone: S3's signed HeadBucket).
fn health(recipe: &Recipe) -> String {
    match recipe.service.kind {
        ServiceKind::Redis => "redis".into(),
        ServiceKind::Postgres => "postgres".into(),
        // A MinIO recipe sets `health.path: /minio/health/ready`; other stores have no
        // such path and rely on the driver's signed HeadBucket.
        ServiceKind::S3 => recipe
            .service
            .health
            .path
            .as_ref()
            .map_or_else(|| "none".into(), |p| format!("http:{p}")),
        _ => recipe
            .service
            .health_path()
            .map_or_else(|| "none".into(), |p| format!("http:{p}")),
    }
}

/// Renders the whole batch script of a run.
pub fn render(recipe: &Recipe, paths: &JobPaths, ci: bool) -> String {
    let ex = &recipe.executor;
    let mon = &recipe.monitoring;
    let svc = &recipe.service;
    let monitor = mon.prometheus.enabled || mon.grafana.enabled;
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# aifb {}: run {} of recipe {:?}, layout {}.",
        aifb_core::VERSION,
        paths.run_id,
        recipe.name,
        match ex.layout {
            Layout::Hetjob => "hetjob",
            Layout::Single => "single",
        }
    );
    let _ = writeln!(s, "#SBATCH --job-name=aifb-{}", recipe.name);
    let _ = writeln!(
        s,
        "#SBATCH --output={}",
        paths.run_dir.join("logs").join("slurm-%j.out").display()
    );
    let _ = writeln!(
        s,
        "#SBATCH --signal=B:USR1@{}",
        ex.signal_margin.get().as_secs().max(1)
    );
    for opt in &ex.sbatch {
        let _ = writeln!(s, "#SBATCH {opt}");
    }
    match ex.layout {
        Layout::Hetjob => {
            let _ = writeln!(s, "# service group: the service and its exporter");
            group_lines(&mut s, recipe, &ex.service, false);
            let _ = writeln!(s, "#SBATCH hetjob");
            let _ = writeln!(s, "# client group: one loadgen shard per node");
            group_lines(&mut s, recipe, &ex.clients, true);
            if monitor {
                let _ = writeln!(s, "#SBATCH hetjob");
                let _ = writeln!(s, "# monitor group: Prometheus and Grafana");
                group_lines(&mut s, recipe, &ex.monitor, false);
            }
        }
        Layout::Single => {
            let mut all = ex.service.clone();
            all.cpus += ex.clients.cpus + if monitor { ex.monitor.cpus } else { 0 };
            let mb = memory_mb(&ex.service.memory)
                + memory_mb(&ex.clients.memory)
                + if monitor {
                    memory_mb(&ex.monitor.memory)
                } else {
                    0
                };
            all.memory = format!("{mb}M");
            let _ = writeln!(s, "# every role in one allocation");
            group_lines(&mut s, recipe, &all, false);
        }
    }

    let _ = writeln!(s, "\n# ---- settings rendered from the recipe ----");
    let _ = writeln!(s, "RUN_ID={}", q(&paths.run_id));
    let _ = writeln!(s, "RUN_DIR={}", q_path(&paths.run_dir));
    let _ = writeln!(s, "AIFB_BIN={}", q_path(&paths.bin_dir));
    let _ = writeln!(s, "STATE_DIR={}", q_path(&paths.state_dir));
    let _ = writeln!(s, "RECIPE_DIR={}", q_path(&paths.recipe_dir));
    // The scratch base is shell text from the recipe, expanded on the node.
    let _ = writeln!(s, "SCRATCH_BASE=\"{}\"", ex.scratch.replace('"', "\\\""));
    let _ = writeln!(s, "SCRATCH=\"${{SCRATCH:-$SCRATCH_BASE/aifb-$RUN_ID}}\"");
    s.push_str(&array("MODULES", &ex.modules));
    let _ = writeln!(s, "SERVICE_KIND={}", q(svc.kind.name()));
    let _ = writeln!(s, "SCHEME={}", q(svc.kind.schemes()[0]));
    let _ = writeln!(s, "ENDPOINT={}", q(svc.endpoint.as_deref().unwrap_or("")));
    if svc.port != 0 {
        let _ = writeln!(s, "SERVICE_PORT={}", svc.port);
    }
    s.push_str(&array("SERVICE_CMD", &service_command(recipe, paths)));
    let _ = writeln!(s, "SERVICE_IMAGE={}", q(svc.image.as_deref().unwrap_or("")));
    let _ = writeln!(s, "APPTAINER={}", q(&ex.apptainer.binary));
    let mut apptainer = Vec::new();
    if ex.service.wants_gpus() {
        apptainer.push("--nv".to_string());
    }
    for b in &ex.apptainer.binds {
        apptainer.extend(["--bind".to_string(), b.clone()]);
    }
    apptainer.extend(ex.apptainer.args.iter().cloned());
    s.push_str(&array("APPTAINER_ARGS", &apptainer));
    let _ = writeln!(
        s,
        "SERVICE_METRICS_PATH={}",
        q(&svc
            .metrics()
            .filter(|_| svc.kind.schemes()[0].starts_with("http"))
            .unwrap_or_default())
    );
    let _ = writeln!(s, "HEALTH={}", q(&health(recipe)));
    let _ = writeln!(
        s,
        "HEALTH_TIMEOUT={}",
        svc.health.timeout.get().as_secs().max(1)
    );
    let _ = writeln!(s, "EXPORTER={}", u8::from(mon.exporter.enabled));
    let mut exporter = Vec::new();
    for c in [
        aifb_core::recipe::Collector::Node,
        aifb_core::recipe::Collector::Process,
        aifb_core::recipe::Collector::Gpu,
        aifb_core::recipe::Collector::Job,
    ] {
        if !mon.exporter.collectors.contains(&c) {
            exporter.push(format!("--no-collector.{}", c.name()));
        }
    }
    if let Some(url) =
        crate::local::probe_url(recipe, &format!("{}://{{addr}}", svc.kind.schemes()[0]))
    {
        exporter.extend(["--probe".to_string(), url]);
    }
    s.push_str(&array("EXPORTER_ARGS", &exporter));
    let _ = writeln!(s, "MONITOR={}", u8::from(monitor));
    let clients = match ex.layout {
        Layout::Hetjob => ex.clients.nodes,
        Layout::Single => 1,
    };
    let _ = writeln!(s, "CLIENTS={clients}");
    let _ = writeln!(s, "START_DELAY={START_DELAY_S}");
    let loadgen: Vec<String> = if ci { vec!["--ci".into()] } else { vec![] };
    s.push_str(&array("LOADGEN_ARGS", &loadgen));
    match ex.layout {
        Layout::Hetjob => {
            let _ = writeln!(s, "SERVICE_NODELIST=${{SLURM_JOB_NODELIST_HET_GROUP_0:-}}");
            let _ = writeln!(
                s,
                "SRUN_SERVICE=(srun --het-group=0 --overlap --nodes=1 --ntasks=1)"
            );
            let _ = writeln!(
                s,
                "SRUN_CLIENT=(srun --het-group=1 --nodes={clients} --ntasks-per-node=1)"
            );
            let _ = writeln!(
                s,
                "SRUN_MONITOR=(srun --het-group=2 --overlap --nodes=1 --ntasks=1)"
            );
        }
        Layout::Single => {
            let _ = writeln!(s, "SERVICE_NODELIST=${{SLURM_JOB_NODELIST:-}}");
            for name in ["SERVICE", "CLIENT", "MONITOR"] {
                let _ = writeln!(s, "SRUN_{name}=(srun --overlap --nodes=1 --ntasks=1)");
            }
        }
    }
    let _ = writeln!(s, "export RUN_ID RUN_DIR AIFB_BIN STATE_DIR");
    s.push('\n');
    s.push_str(BODY);
    s
}

/// What `sbatch --parsable` printed: the job id (`1234` or `1234;cluster`).
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let id = stdout.trim().split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// The job's state as `squeue` shows it (`PENDING`, `RUNNING`, ...), `None` once the job
/// has left the queue (or when `squeue` cannot be run).
pub fn queue_state(job: &str) -> Option<String> {
    aifb_core::discovery::slurm_job_state(job).ok().flatten()
}

/// Submits the rendered script of a run directory; returns the job id.
pub fn submit(script: &Path) -> Result<String, Failure> {
    let out = std::process::Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| {
            Failure::input(format!("cannot run sbatch: {e} (is SLURM installed here?)"))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Failure::input(format!(
            "sbatch refused {}: {}",
            script.display(),
            err.trim().lines().last().unwrap_or("no message")
        )));
    }
    parse_job_id(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        Failure::check(format!(
            "sbatch printed no job id: {:?}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Asks a run's job to stop the way SLURM does before its time limit: USR1 to the batch
/// shell, whose trap drains the loadgen and keeps every finished request.
pub fn cancel(dir: &RunDir, manifest: &Manifest) -> Result<(), Failure> {
    let job = run_job(dir, manifest).ok_or_else(|| {
        Failure::input(format!("{}: the run has no SLURM job", dir.root.display()))
    })?;
    let job = job.as_str();
    let _ = std::fs::write(dir.root.join(".cancel"), b"");
    if manifest.status == RunStatus::Pending {
        // Nothing started: cancel the job outright and say so.
        let _ = std::process::Command::new("scancel").arg(job).status();
        return Ok(());
    }
    let status = std::process::Command::new("scancel")
        .args(["--batch", "--signal=USR1", job])
        .status()
        .map_err(|e| Failure::check(format!("cannot run scancel: {e}")))?;
    if !status.success() {
        return Err(Failure::check(format!(
            "scancel --batch --signal=USR1 {job} failed"
        )));
    }
    Ok(())
}

/// How `aifb run` treats a SLURM run once submitted.
pub struct Follow {
    /// Return right after submitting; `aifb watch`/`status` follow the run.
    pub detach: bool,
}

fn job_of(dir: &RunDir) -> Option<String> {
    std::fs::read_to_string(dir.root.join("slurm").join("job_id"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The job id of a run: the manifest's, else the one `aifb run` wrote at submission.
pub fn run_job(dir: &RunDir, m: &Manifest) -> Option<String> {
    m.job_ids.first().cloned().or_else(|| job_of(dir))
}

/// `aifb run` with `executor.kind: slurm`: renders and submits the batch script, then
/// follows the run until the job has written its final state. Returns the final
/// manifest.
pub async fn run(
    recipe: &Recipe,
    recipe_dir: &Path,
    runs_root: &Path,
    ci: bool,
    follow: Follow,
) -> Result<(RunDir, Manifest), Failure> {
    let runs_root = absolute(runs_root)?;
    let (dir, lock, manifest, _) =
        crate::local::create_run(recipe, recipe_dir, &runs_root, "slurm")?;
    let paths = JobPaths {
        run_id: manifest.id.clone(),
        run_dir: dir.root.clone(),
        bin_dir: bin_dir(),
        state_dir: absolute(&crate::local::state_dir(&runs_root))?,
        recipe_dir: recipe_dir.to_path_buf(),
    };
    let script_dir = dir.root.join("slurm");
    let script = script_dir.join("job.sbatch");
    std::fs::create_dir_all(&script_dir)
        .and_then(|_| std::fs::create_dir_all(dir.logs()))
        .and_then(|_| std::fs::write(&script, render(&lock, &paths, ci)))
        .map_err(|e| Failure::input(format!("{}: {e}", script.display())))?;
    let job = match submit(&script) {
        Ok(j) => j,
        Err(f) => {
            let mut m = manifest;
            m.status = RunStatus::Failed;
            m.error = Some(f.message.clone());
            let _ = m.write(&dir.manifest());
            return Err(f);
        }
    };
    let _ = std::fs::write(script_dir.join("job_id"), format!("{job}\n"));
    eprintln!(
        "aifb: run {} submitted as SLURM job {job}; {}",
        manifest.id,
        dir.root.display()
    );
    if follow.detach {
        eprintln!("aifb: follow it with `aifb watch {}`", dir.root.display());
        return Ok((dir, manifest));
    }
    let m = wait(&dir, &job).await?;
    Ok((dir, m))
}

/// The batch script `aifb run` would submit, with the paths of a new run; nothing is
/// created or submitted.
pub fn dry_run(
    recipe: &Recipe,
    recipe_dir: &Path,
    runs_root: &Path,
    ci: bool,
) -> Result<String, Failure> {
    let root = if runs_root.is_absolute() {
        runs_root.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Failure::check(format!("current directory: {e}")))?
            .join(runs_root)
    };
    let id = aifb_core::run::new_run_id();
    let paths = JobPaths {
        run_dir: root.join(&id),
        run_id: id,
        bin_dir: bin_dir(),
        state_dir: crate::local::state_dir(&root),
        recipe_dir: recipe_dir.to_path_buf(),
    };
    Ok(render(&recipe.resolved(), &paths, ci))
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(p).map_err(|e| Failure::input(format!("{}: {e}", p.display())))?;
    p.canonicalize()
        .map_err(|e| Failure::input(format!("{}: {e}", p.display())))
}

/// The directory of this executable (the batch script calls its siblings there).
fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Follows a submitted run: prints its state changes, turns the first Ctrl-C or SIGTERM
/// into a draining cancel and a second into `scancel`, and returns once the job has left
/// the queue. A job that ended without writing its final state is marked FAILED (or
/// CANCELLED when it was cancelled).
pub async fn wait(dir: &RunDir, job: &str) -> Result<Manifest, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::check(format!("signal handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::check(format!("signal handler: {e}")))?;
    let mut last = None;
    let mut cancels = 0;
    loop {
        let m = Manifest::read(&dir.manifest()).map_err(Failure::input)?;
        if last != Some(m.status) {
            eprintln!("aifb: {}", format!("{:?}", m.status).to_uppercase());
            last = Some(m.status);
        }
        let queued = queue_state(job);
        if queued.is_none() {
            // The job is gone: its last write is final, else say what happened.
            let mut m = Manifest::read(&dir.manifest()).map_err(Failure::input)?;
            if !m.status.is_final() {
                let cancelled = dir.root.join(".cancel").exists() || cancels > 0;
                m.status = if cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                };
                m.error = Some(format!(
                    "SLURM job {job} ended without writing its final state; see {}",
                    dir.logs().join(format!("slurm-{job}.out")).display()
                ));
                m.finished_at = Some(aifb_core::clock::rfc3339(aifb_core::clock::wall_ns()));
                let _ = m.write(&dir.manifest());
            }
            return Ok(m);
        }
        let signalled = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => false,
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if signalled {
            cancels += 1;
            let m = Manifest::read(&dir.manifest()).map_err(Failure::input)?;
            if cancels == 1 {
                eprintln!(
                    "aifb: cancelling: the job drains its loadgen and keeps every finished request (again to kill it)"
                );
                let mut m = m;
                if m.job_ids.is_empty() {
                    m.job_ids.push(job.to_string());
                }
                if let Err(f) = cancel(dir, &m) {
                    eprintln!("aifb: warning: {}", f.message);
                }
            } else {
                eprintln!("aifb: killing job {job}");
                let _ = std::process::Command::new("scancel").arg(job).status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_paths() -> JobPaths {
        JobPaths {
            run_id: "BM-20260101-000000-abcd".into(),
            run_dir: "/lustre/project/runs/BM-20260101-000000-abcd".into(),
            bin_dir: "/lustre/project/aifb/bin".into(),
            state_dir: "/lustre/project/runs/.state".into(),
            recipe_dir: "/lustre/project/recipes".into(),
        }
    }

    fn golden_recipe(extra: &str) -> Recipe {
        let text = format!(
            "name: golden\n{extra}service:\n  kind: vllm\n  model: meta-llama/Llama-3.1-8B-Instruct\n  image: /lustre/images/vllm-0.11.sif\n  command: [vllm, serve, meta-llama/Llama-3.1-8B-Instruct, --host, '{{bind}}', --port, '{{port}}']\n  health: {{timeout: 15m}}\nworkload:\n  pattern: open\n  levels: [1, 2, 4]\n  measure: 60s\n  request: {{op: chat, prompt_tokens: 512, max_tokens: 128}}\n"
        );
        Recipe::parse(&text)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .resolved()
    }

    /// Compares with `slurm/golden/NAME` (`AIFB_UPDATE_GOLDEN=1` rewrites it), checks the
    /// syntax with `bash -n`, and runs shellcheck when it is installed.
    fn golden(name: &str, script: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../slurm/golden")
            .join(name);
        let script = script.replace(aifb_core::VERSION, "VERSION");
        if std::env::var_os("AIFB_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &script).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            want == script,
            "{} differs from the rendered script; rerun with AIFB_UPDATE_GOLDEN=1 after checking the change",
            path.display()
        );
        let syntax = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        if let Ok(out) = std::process::Command::new("shellcheck")
            .args(["-s", "bash", "-S", "warning"])
            .arg(&path)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    #[test]
    fn hetjob_script_matches_its_golden_file() {
        let recipe = golden_recipe(
            "executor:\n  kind: slurm\n  partition: gpu\n  account: p200001\n  qos: default\n  modules: [Apptainer/1.3]\n  sbatch: ['--constraint=h100']\n  service: {cpus: 16, memory: 64G, gpus: 1}\n  clients: {nodes: 2, cpus: 8, memory: 8G}\n",
        );
        let script = render(&recipe, &golden_paths(), true);
        assert!(script.contains("#SBATCH --gpus-per-node=1"));
        assert!(script.contains("APPTAINER_ARGS=(--nv)"));
        assert!(
            !script.contains("CUDA_VISIBLE_DEVICES="),
            "GPUs come from SLURM"
        );
        golden("hetjob.sbatch", &script);
    }

    #[test]
    fn single_job_script_matches_its_golden_file() {
        let recipe = golden_recipe(
            "executor:\n  kind: slurm\n  partition: gpu\n  layout: single\n  time: 1h\n  service: {cpus: 8, memory: 32G, gres: 'gpu:a100:1'}\nmonitoring:\n  grafana: {enabled: true, image: 'docker://grafana/grafana-oss:12.2.0'}\n",
        );
        let script = render(&recipe, &golden_paths(), false);
        // One allocation sized for every role: 8 + 2 + 1 CPUs, 32G + 2G + 1G.
        assert!(script.contains("#SBATCH --cpus-per-task=11"));
        assert!(script.contains("#SBATCH --mem=35840M"));
        assert!(script.contains("#SBATCH --time=0-01:00:00"));
        assert!(!script.contains("hetjob\n"));
        golden("single.sbatch", &script);
    }

    #[test]
    fn time_limit_covers_the_workload_and_the_signal_margin() {
        let r = golden_recipe("executor:\n  kind: slurm\n  partition: gpu\n");
        let t = time_limit(&r).as_secs();
        assert!(t >= r.planned_duration().as_secs() + 900 + 120 + 300);
        assert_eq!(t % 60, 0);
    }

    #[test]
    fn memory_and_time_notation() {
        assert_eq!(memory_mb("512M"), 512);
        assert_eq!(memory_mb("2G"), 2048);
        assert_eq!(memory_mb("1024"), 1024);
        assert_eq!(memory_mb("2048K"), 2);
        assert_eq!(slurm_time(90), "0-00:01:30");
        assert_eq!(slurm_time(86_400 + 3_661), "1-01:01:01");
    }

    #[test]
    fn job_id_from_sbatch() {
        assert_eq!(parse_job_id("1234\n").as_deref(), Some("1234"));
        assert_eq!(parse_job_id("77;meluxina\n").as_deref(), Some("77"));
        assert_eq!(parse_job_id("Submitted batch job 5"), None);
        assert_eq!(parse_job_id(""), None);
    }

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(q("a b"), "'a b'");
        assert_eq!(q("it's"), "\"it's\"");
        assert_eq!(array("X", &["--a".into(), "b c".into()]), "X=(--a 'b c')\n");
    }
}
