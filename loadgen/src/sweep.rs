//! The sweep: one stage per load level, each with warmup, measure and cooldown, driven as
//! a closed loop (users with think time) or an open loop (Poisson or constant arrivals).
//!
//! Every request carries `t_intended`: for a closed-loop user, the moment it became ready
//! (previous end plus think time); for the open loop, its slot in the arrival schedule.
//! Response time is measured from there, so a slow server cannot hide its queue
//! (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aifb_core::clock::RunClock;
use aifb_core::recipe::Workload;
use aifb_core::requests::{RequestRecord, error_class};
use aifb_core::run::StageWindow;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::driver::{Call, Driver, Exchange};
use crate::search::{Level, Outcome, Planner, Step};
use crate::telemetry::Telemetry;

/// Everything a request task needs.
pub struct Context<D> {
    /// The service's driver.
    pub driver: D,
    /// The workload.
    pub workload: Workload,
    /// The run's clock.
    pub clock: RunClock,
    /// Own metrics.
    pub telemetry: Arc<Telemetry>,
    /// Where finished requests go.
    pub records: mpsc::UnboundedSender<RequestRecord>,
    /// Name of this client in requests.parquet.
    pub client_name: String,
    /// Prefix of request ids.
    pub id_prefix: String,
    /// Request counter.
    pub sequence: AtomicU64,
    /// This generator's shard: `(index, count)`; `(0, 1)` when alone.
    pub shard: (u32, u32),
    /// The running stage's measured p99s, for `workload.stop_at_slo_miss`.
    pub slo: crate::slo::SloWatch,
    /// The recipe's SLOs.
    pub objectives: aifb_core::recipe::Slo,
    /// Where each stage's measured window is published for the sink.
    pub plans: crate::sink::Plans,
    /// The replayed trace's send offsets, seconds (`arrival: trace`).
    pub trace: Option<Arc<Vec<f64>>>,
    /// Where each request's streamed chunks go (`monitoring.chunks`).
    pub chunks: Option<mpsc::UnboundedSender<Vec<aifb_core::chunks::ChunkRecord>>>,
}

impl<D> Context<D> {
    /// True when user or arrival `n` belongs to this shard.
    fn owns(&self, n: u64) -> bool {
        let (index, count) = self.shard;
        count <= 1 || n % u64::from(count) == u64::from(index)
    }
}

/// Phase boundaries of one stage, in monotonic time.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Stage start (warmup begins).
    pub start: Instant,
    /// Measure begins.
    pub measure_start: Instant,
    /// Measure ends.
    pub measure_end: Instant,
    /// Cooldown ends: no new request after this.
    pub end: Instant,
}

impl Windows {
    fn phase(&self, t: Instant) -> &'static str {
        if t < self.measure_start {
            "warmup"
        } else if t < self.measure_end {
            "measure"
        } else {
            "cooldown"
        }
    }
}

/// Identity of the running stage.
#[derive(Debug, Clone, Copy)]
pub struct StageInfo {
    /// Index.
    pub index: u32,
    /// Users (closed loop).
    pub concurrency: Option<u32>,
    /// Rate (open loop).
    pub rate: Option<f64>,
}

/// Pause of a closed-loop user after its request failed to connect or lost its
/// connection: a server that is down answers such errors in microseconds, and users that
/// retried at once would fill requests.parquet with millions of identical failures.
pub const CONNECTION_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a closed-loop user does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Think, then send the next request.
    Go,
    /// The connection failed: wait [`CONNECTION_ERROR_BACKOFF`] as well.
    Backoff,
    /// The stage or run is over.
    Stop,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs one request and records it.
async fn one<D: Driver>(
    ctx: Arc<Context<D>>,
    stage: StageInfo,
    w: Windows,
    worker: u32,
    intended: Instant,
    mut stop: watch::Receiver<bool>,
) -> (Next, Instant) {
    let t = &ctx.telemetry;
    let n = ctx.sequence.fetch_add(1, Ordering::Relaxed);
    let op = ctx.driver.op(n);
    let request_id = format!("{}-{n}", ctx.id_prefix);
    t.in_flight.inc();
    let call = Call {
        seq: n,
        worker,
        entry: ctx.trace.as_ref().map(|_| u64::from(worker)),
        request_id: &request_id,
        timeout: ctx.workload.timeout.get(),
    };
    let x = tokio::select! {
        x = ctx.driver.call(call) => x,
        _ = stopped(&mut stop) => {
            let mut x = Exchange::start(op, 0);
            x.sent = x.sent.max(intended);
            x.finish(Some(error_class::CANCELLED))
        }
    };
    let op = x.op;
    let series = t.op(op);
    t.in_flight.dec();
    let ok = x.error.is_none();
    let outcome = x.error.unwrap_or("ok");
    series.finished(t, outcome);
    let lag = x.sent.saturating_duration_since(intended);
    series.schedule_lag(t).observe(lag.as_secs_f64());
    if ok {
        series.duration(t).observe((x.end - x.sent).as_secs_f64());
        series
            .response_time(t)
            .observe(x.end.saturating_duration_since(intended).as_secs_f64());
        if let Some(ft) = x.first_token {
            series.ttft(t).observe((ft - x.sent).as_secs_f64());
            if let Some(n) = x.output_tokens.filter(|&n| n > 1) {
                series
                    .tpot(t)
                    .observe((x.end - ft).as_secs_f64() / f64::from(n - 1));
            }
        }
        let itl = series.itl(t);
        for g in &x.token_gaps {
            itl.observe(g.as_secs_f64());
        }
        let icl = series.icl(t);
        for g in &x.chunk_gaps {
            icl.observe(g.as_secs_f64());
        }
        for &(phase, d) in &x.server_reported {
            t.server_reported
                .get_or_create(&vec![("op", op), ("phase", phase)])
                .observe(d.as_secs_f64());
        }
    }
    if let Some(n) = x.output_tokens {
        series.output_tokens(t).inc_by(u64::from(n));
    }
    if let Some(n) = x.prompt_tokens {
        series.prompt_tokens(t).inc_by(u64::from(n));
    }
    if w.phase(intended) == "measure" && x.error != Some(error_class::CANCELLED) {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        ctx.slo
            .add(ok.then(|| (x.first_token.map(|f| ns(f - x.sent)), ns(x.end - x.sent))));
    }
    let c = &ctx.clock;
    if let Some(tx) = &ctx.chunks
        && !x.chunk_log.is_empty()
    {
        let rows = x
            .chunk_log
            .iter()
            .map(|&(t, tokens, answer)| aifb_core::chunks::ChunkRecord {
                request_id: request_id.clone(),
                t: c.unix_ns(t),
                tokens,
                answer,
            })
            .collect();
        let _ = tx.send(rows);
    }
    let record = RequestRecord {
        stage: stage.index,
        concurrency: stage.concurrency,
        rate: stage.rate,
        phase: w.phase(intended),
        client: ctx.client_name.clone(),
        worker,
        op,
        t_intended: c.unix_ns(intended),
        t_sent: c.unix_ns(x.sent),
        t_first_byte: x.first_byte.map(|i| c.unix_ns(i)),
        t_first_token: x.first_token.map(|i| c.unix_ns(i)),
        t_end: c.unix_ns(x.end),
        ok,
        status: x.status,
        error: x.error,
        bytes_sent: x.bytes_sent,
        bytes_received: x.bytes_received,
        prompt_tokens: x.prompt_tokens,
        output_tokens: x.output_tokens,
        chunks: x.chunks,
        request_id,
    };
    let _ = ctx.records.send(record);
    let next = match x.error {
        Some(error_class::CANCELLED) => Next::Stop,
        Some(error_class::CONNECT | error_class::RESET) => Next::Backoff,
        _ => Next::Go,
    };
    (next, x.end)
}

async fn closed_user<D: Driver>(
    ctx: Arc<Context<D>>,
    stage: StageInfo,
    w: Windows,
    worker: u32,
    first: Instant,
    think: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = first;
    let mut sent = 0u64;
    if first > w.start {
        tokio::select! {
            _ = tokio::time::sleep_until(first.into()) => {}
            _ = stopped(&mut stop) => return,
        }
    }
    let quota = ctx.workload.requests_per_user;
    // Without think time the user is ready again when the answer has ended: that instant
    // is already known, so the loop reads no clock of its own.
    loop {
        if *stop.borrow() || ready >= w.end || quota.is_some_and(|q| sent >= q) {
            return;
        }
        let (next, end) = one(ctx.clone(), stage, w, worker, ready, stop.clone()).await;
        if next == Next::Stop {
            return;
        }
        let pause = crate::schedule::think(
            ctx.workload.think_distribution.unwrap_or_default(),
            think,
            ctx.workload.seed,
            (u64::from(worker) << 32) | sent,
        );
        sent += 1;
        ready = end + pause;
        if next == Next::Backoff {
            ready += CONNECTION_ERROR_BACKOFF;
        }
        if ready > end && ready > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(ready.into()) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}

/// Sends every arrival of the stage's timeline at its time. With `max_in_flight`, an
/// arrival that finds every slot busy waits in the client queue (counted by
/// `aifb_loadgen_client_queue`); its `t_intended` stays its slot, so the wait shows as
/// schedule lag and in the response time.
///
/// The timeline is paced by its own OS thread: tokio's timer wheel ticks in milliseconds,
/// while a thread's sleep ends within tens of microseconds of its deadline. The thread
/// hands each due arrival to the runtime, which sends it.
async fn open_dispatcher<D: Driver>(
    ctx: Arc<Context<D>>,
    stage: StageInfo,
    w: Windows,
    timeline: Vec<(usize, Duration)>,
    slots: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<bool>,
) {
    let (due_tx, mut due) = mpsc::unbounded_channel::<(usize, Instant)>();
    let halt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pacer = {
        let halt = halt.clone();
        let start = w.start;
        std::thread::Builder::new()
            .name("aifb-pacer".into())
            .spawn(move || pace(start, &timeline, &halt, &due_tx))
    };
    if let Err(e) = pacer {
        tracing::error!("cannot start the pacing thread: {e}");
        return;
    }
    // Stops the pacer whichever way this function ends.
    struct Halt(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Halt {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _halt = Halt(halt);
    loop {
        let (n, at) = tokio::select! {
            next = due.recv() => match next {
                Some(x) => x,
                None => return,
            },
            _ = stopped(&mut stop) => return,
        };
        let worker = u32::try_from(n).unwrap_or(u32::MAX);
        let ctx = ctx.clone();
        let slots = slots.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let _permit = match slots {
                Some(s) => {
                    ctx.telemetry.client_queue.inc();
                    let p = s.acquire_owned().await;
                    ctx.telemetry.client_queue.dec();
                    p.ok()
                }
                None => None,
            };
            one(ctx, stage, w, worker, at, stop).await.0 != Next::Stop
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
}

/// Sleeps until each arrival of `timeline` (offsets from `start`) and sends it on `due`;
/// ends at the timeline's end or when `halt` is set (checked at least every 5 ms).
fn pace(
    start: Instant,
    timeline: &[(usize, Duration)],
    halt: &std::sync::atomic::AtomicBool,
    due: &mpsc::UnboundedSender<(usize, Instant)>,
) {
    const CHECK: Duration = Duration::from_millis(5);
    // Linux lets a sleep end up to the thread's timer slack (50 µs by default) late, to
    // batch wake-ups; the pacer wants its deadlines.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    for &(n, offset) in timeline {
        let at = start + offset;
        loop {
            if halt.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(CHECK));
        }
        if due.send((n, at)).is_err() {
            return;
        }
    }
}

/// What one stage did, beyond its window: what the analysis and the validity gate need.
#[derive(Debug, Clone)]
pub struct StageRun {
    /// Phase boundaries.
    pub window: StageWindow,
    /// Open loop: arrivals scheduled with an intended start in the measured window.
    pub scheduled: Option<u64>,
    /// CPU seconds the generator used during the measured window.
    pub generator_cpu_s: Option<f64>,
    /// The SLO objectives the stage missed (checked with `workload.stop_at_slo_miss`).
    pub slo_missed: Vec<String>,
    /// The stage was ended early because its backlog kept growing
    /// (`workload.stop_when_oversaturated`).
    pub oversaturated: bool,
}

/// Samples the backlog (in flight plus client queue) once a second from the start of the
/// measured window; returns once the stage is over-saturated.
async fn oversaturation(telemetry: Arc<crate::telemetry::Telemetry>, from: Instant, rate: f64) {
    tokio::time::sleep_until(from.into()).await;
    let mut backlog = crate::saturation::Backlog::new(rate);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let n = telemetry.in_flight.get().max(0) + telemetry.client_queue.get().max(0);
        if backlog.observe(u64::try_from(n).unwrap_or(0)) {
            return;
        }
    }
}

/// CPU seconds (user + system) this process has used.
fn process_cpu_seconds() -> Option<f64> {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so the struct is initialised.
    let u = unsafe { u.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(u.ru_utime) + secs(u.ru_stime))
}

/// CPU seconds used between `from` and `to` (monotonic instants in the future).
async fn cpu_between(from: Instant, to: Instant) -> Option<f64> {
    tokio::time::sleep_until(from.into()).await;
    let a = process_cpu_seconds()?;
    tokio::time::sleep_until(to.into()).await;
    Some(process_cpu_seconds()? - a)
}

/// Progress reporting hook: called when a stage starts, with its index, step and length.
pub type OnStage<'a> = &'a (dyn Fn(u32, Step, Duration) + Sync);

/// What the sweep did.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Every stage that ran (a cancelled run ends with a shortened last stage).
    pub stages: Vec<StageRun>,
    /// What a rate search found (`workload.search`).
    pub search: Option<aifb_core::run::SearchResult>,
}

/// Runs the stages the planner chooses, one after the other.
pub async fn run<D: Driver>(
    ctx: Arc<Context<D>>,
    mut cancel: watch::Receiver<bool>,
    on_stage: OnStage<'_>,
) -> Sweep {
    let wl = ctx.workload.clone();
    let mut planner = Planner::new(&wl);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut windows = Vec::new();
    let mut previous_rate = 0.0;
    // An SLO search reads a missed SLO or an over-saturated rate as a result, not as the
    // end of the sweep.
    let slo_search = wl
        .search
        .as_ref()
        .is_some_and(|s| s.mode == aifb_core::recipe::SearchMode::Slo);
    while let Some(step) = planner.next(&outcomes) {
        if *cancel.borrow() {
            break;
        }
        let i = windows.len();
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let (concurrency, rate) = match step.level {
            Level::Users(n) => (Some(n), None),
            Level::Rate(r) => (None, Some(r)),
        };
        let stage = StageInfo {
            index,
            concurrency,
            rate,
        };
        let t = &ctx.telemetry;
        t.stage.set(i64::from(index));
        t.target_concurrency
            .set(concurrency.map(i64::from).unwrap_or(0));
        t.offered_rate.set(rate.unwrap_or(0.0));
        let start = Instant::now();
        let measure_start = start + wl.warmup.get();
        let measure_end = measure_start + wl.measure.get();
        let w = Windows {
            start,
            measure_start,
            measure_end,
            end: measure_end + wl.cooldown.get(),
        };
        on_stage(index, step, w.end - w.start);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks: JoinSet<bool> = JoinSet::new();
        let mut cancelled = false;
        let mut oversaturated = false;
        let mut scheduled = None;
        ctx.slo.reset();
        if let Ok(mut plans) = ctx.plans.lock() {
            let nanos = |d: Option<aifb_core::duration::HumanDuration>| {
                d.map(|d| i64::try_from(d.get().as_nanos()).unwrap_or(i64::MAX))
            };
            plans.insert(
                index,
                crate::sink::Plan {
                    window: (
                        ctx.clock.unix_ns(w.measure_start),
                        ctx.clock.unix_ns(w.measure_end),
                    ),
                    ttft_limit: nanos(ctx.objectives.ttft_p99),
                    e2e_limit: nanos(ctx.objectives.e2e_p99),
                },
            );
        }
        let cpu = tokio::spawn(cpu_between(w.measure_start, w.measure_end));
        match step.level {
            Level::Users(users) => {
                // A search's calibration stages send back to back.
                let think = match step.calibration {
                    Some(_) => Duration::ZERO,
                    None => wl.think_time.unwrap_or_default().get(),
                };
                // Users start spread over the ramp-up (default: half the warmup, at most
                // 2 s), so that equal-length requests do not stay in lock-step.
                let spread = wl.ramp_up.map_or_else(
                    || (wl.warmup.get() / 2).min(Duration::from_secs(2)),
                    |r| r.get(),
                );
                for u in (0..users).filter(|u| ctx.owns(u64::from(*u))) {
                    let first = w.start + spread.mul_f64(f64::from(u) / f64::from(users.max(1)));
                    tasks.spawn({
                        let ctx = ctx.clone();
                        let stop = stop_rx.clone();
                        async move {
                            closed_user(ctx, stage, w, u, first, think, stop).await;
                            true
                        }
                    });
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(w.end.into()) => {}
                    _ = stopped(&mut cancel) => cancelled = true,
                }
            }
            Level::Rate(level) => {
                // The whole sweep's timeline, of which this shard sends its share.
                let length = w.end - w.start;
                let offsets = match &ctx.trace {
                    // A trace replays at `level` times its recorded speed.
                    Some(t) => t
                        .iter()
                        .filter_map(|s| Duration::try_from_secs_f64(s / level).ok())
                        .take_while(|d| *d < length)
                        .collect(),
                    // The rate ramps from the previous level to this one.
                    None if wl.ramp.is_some() => crate::schedule::ramped_arrivals(
                        wl.arrival.unwrap_or_default(),
                        crate::schedule::Ramp {
                            from: previous_rate,
                            to: level,
                            ramp: wl.ramp.map(|r| r.get()).unwrap_or_default(),
                        },
                        wl.burstiness.unwrap_or(1.0),
                        wl.seed,
                        index,
                        length,
                    ),
                    None => crate::schedule::arrivals(
                        wl.arrival.unwrap_or_default(),
                        level,
                        wl.burstiness.unwrap_or(1.0),
                        wl.seed,
                        index,
                        length,
                    ),
                };
                let timeline: Vec<(usize, Duration)> = offsets
                    .into_iter()
                    .enumerate()
                    .filter(|(n, _)| ctx.owns(*n as u64))
                    .collect();
                let (from, to) = (w.measure_start - w.start, w.measure_end - w.start);
                scheduled = Some(
                    timeline
                        .iter()
                        .filter(|(_, t)| *t >= from && *t < to)
                        .count() as u64,
                );
                let slots = wl
                    .max_in_flight
                    .map(|n| Arc::new(Semaphore::new(n as usize)));
                // Shards would each stop on their own: the early stop is for one generator.
                let watch = async {
                    if wl.stop_when_oversaturated && ctx.shard.1 == 1 {
                        oversaturation(ctx.telemetry.clone(), w.measure_start, level).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = open_dispatcher(ctx.clone(), stage, w, timeline, slots, stop_rx.clone(), &mut tasks) => {}
                    _ = watch => oversaturated = true,
                    _ = stopped(&mut cancel) => cancelled = true,
                }
            }
        }
        // Drain: let requests still running finish, up to the request timeout. An
        // over-saturated stage's backlog would only keep the queue long: it is cut.
        if cancelled || oversaturated {
            let _ = stop_tx.send(true);
        }
        if oversaturated {
            tracing::warn!(
                "stage {} is over-saturated (its backlog keeps growing): it ends here{}",
                index + 1,
                if slo_search {
                    ""
                } else {
                    ", and the sweep with it"
                }
            );
        }
        {
            let drain = async { while tasks.join_next().await.is_some() {} };
            let deadline = tokio::time::sleep(wl.timeout.get() + Duration::from_secs(1));
            tokio::select! {
                _ = drain => {}
                _ = deadline => {}
                _ = stopped(&mut cancel) => cancelled = true,
            }
        }
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        let now = Instant::now();
        let c = &ctx.clock;
        let window = StageWindow {
            stage: index,
            concurrency,
            rate,
            start_ns: c.unix_ns(w.start),
            measure_start_ns: c.unix_ns(w.measure_start.min(now)),
            measure_end_ns: c.unix_ns(w.measure_end.min(now)),
            end_ns: c.unix_ns(now),
            calibration: step.calibration,
        };
        let generator_cpu_s = if cpu.is_finished() {
            cpu.await.ok().flatten()
        } else {
            cpu.abort();
            None
        };
        let slo_missed = if wl.stop_at_slo_miss || wl.search.is_some() {
            ctx.slo.missed(&ctx.objectives)
        } else {
            Vec::new()
        };
        let measured = ctx.slo.measured();
        let kept_schedule = scheduled
            .is_none_or(|n| measured.0 as f64 >= n as f64 * wl.validity.min_achieved_ratio);
        let secs = window.measure_secs();
        outcomes.push(Outcome {
            step,
            throughput: if secs > 0.0 {
                (measured.0 - measured.1) as f64 / secs
            } else {
                0.0
            },
            met_slo: slo_missed.is_empty() && !oversaturated && kept_schedule,
        });
        if let Some(r) = rate {
            previous_rate = r;
        }
        // Calibration stages never stop the sweep.
        let stop = wl.stop_at_slo_miss && !slo_missed.is_empty() && step.calibration.is_none();
        if stop {
            tracing::warn!(
                "stage {} misses its SLOs ({}): the sweep stops here",
                index + 1,
                slo_missed.join(", ")
            );
        }
        windows.push(StageRun {
            window,
            scheduled,
            generator_cpu_s,
            slo_missed,
            oversaturated,
        });
        if cancelled || stop || (oversaturated && !slo_search) {
            break;
        }
    }
    ctx.telemetry.target_concurrency.set(0);
    ctx.telemetry.offered_rate.set(0.0);
    let search = planner.found(&outcomes);
    if let Some(f) = &search {
        tracing::info!("rate search ended: {}", f.ended);
    }
    Sweep {
        stages: windows,
        search,
    }
}
