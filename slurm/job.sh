# ---------------------------------------------------------------------------------------
# The body of every aifb batch script. `aifb run` writes the #SBATCH header and the
# settings above; this part is the same for every recipe and layout.
#
# Roles: this script is the batch step (the orchestrator) and, run again through `srun`
# with a role argument, the service and client steps.
#
#   batch:   LAUNCHING → service + exporter → readiness → READY → monitor → loadgen
#            (RUNNING) → merge shards → stop everything → DONE / FAILED / CANCELLED
#   signals: USR1 (sent by SLURM `--signal=B:USR1@margin` before the time limit, or by
#            `aifb cancel`), TERM and INT drain the loadgen, which writes every finished
#            request, then stop the services. The trap runs once.
# ---------------------------------------------------------------------------------------
set -uo pipefail

aifb_job() { "$AIFB_BIN/aifb" job "$@"; }
log() { printf '%s aifb-job: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The command of a role, with {port}, {bind}, {addr}, {data_dir} and {recipe_dir} filled in.
expand_command() {
    local a
    EXPANDED=()
    for a in "$@"; do
        a=${a//\{port\}/${SERVICE_PORT:-}}
        a=${a//\{addr\}/${SERVICE_ADDR:-}}
        a=${a//\{bind\}/0.0.0.0}
        a=${a//\{data_dir\}/$SCRATCH/data}
        a=${a//\{recipe_dir\}/$RECIPE_DIR}
        EXPANDED+=("$a")
    done
}

# ---- step roles -------------------------------------------------------------------------
case "${1:-batch}" in
service)
    # The service step: record our PID (the exporter watches it), then become the service.
    mkdir -p "$SCRATCH/data"
    echo $$ >"$SCRATCH/service.pid"
    expand_command "${SERVICE_CMD[@]}"
    if [ -n "$SERVICE_IMAGE" ]; then
        exec "$APPTAINER" exec "${APPTAINER_ARGS[@]}" --bind "$SCRATCH" "$SERVICE_IMAGE" "${EXPANDED[@]}"
    fi
    exec "${EXPANDED[@]}"
    ;;
client)
    # One loadgen per task: SLURM_PROCID is its shard; shard 0 also scrapes the exporter
    # and the service into metrics.parquet.
    scrape=()
    if [ "${SLURM_PROCID:-0}" = 0 ]; then
        for url in $SCRAPE_URLS; do
            scrape+=(--scrape "$url")
        done
    fi
    out=$RUN_DIR
    manifest=()
    if [ "$CLIENTS" -gt 1 ]; then
        out="$RUN_DIR/shards/shard-{shard}"
        manifest=(--manifest "$RUN_DIR/run.json")
    fi
    exec "$AIFB_BIN/loadgen" run --recipe "$RUN_DIR/recipe.lock.yaml" --target "$TARGET" \
        --out "$out" "${manifest[@]}" --shard slurm --start-at "$START_AT" \
        --listen 0.0.0.0:0 --log-file "$RUN_DIR/logs/loadgen-${SLURM_PROCID:-0}.log" \
        --discovery.dir "$STATE_DIR" --discovery.file-sd "$RUN_DIR/prometheus/targets" \
        --discovery.run-id "$RUN_ID" "${scrape[@]}" "${LOADGEN_ARGS[@]}"
    ;;
batch) ;;
*)
    echo "aifb-job: unknown role $1" >&2
    exit 2
    ;;
esac

# ---- the batch step ---------------------------------------------------------------------
JOB=${SLURM_JOB_ID:?not inside a SLURM job}
export SCRATCH
mkdir -p "$SCRATCH" "$RUN_DIR/logs" "$RUN_DIR/prometheus/targets"

SERVICE_SRUN='' EXPORTER_SRUN='' MONITOR_SRUN='' LOADGEN_SRUN=''
STOPPING=0 FINISHED=0 OUTCOME=DONE REASON=''

# The job ids of every component (one for an ordinary job).
component_ids() {
    local ids=$JOB i=0 v
    while v="SLURM_JOB_ID_HET_GROUP_$i" && [ -n "${!v:-}" ]; do
        [ "${!v}" = "$JOB" ] || ids="$ids,${!v}"
        i=$((i + 1))
    done
    echo "$ids"
}

# Sends a signal to the tasks of the step named NAME (srun --job-name); the srun client
# itself would abort the step instead of forwarding it.
signal_step() {
    local sig=$1 name=$2 step
    for step in $(squeue -h -s -j "$(component_ids)" -o '%i %j' 2>/dev/null | awk -v n="$name" '$2 == n { print $1 }'); do
        scancel --signal="$sig" "$step" 2>/dev/null || true
    done
}

# Waits for the srun client PID to end, at most SECONDS; true when it did.
wait_pid() {
    local pid=$1 deadline=$((SECONDS + $2))
    [ -n "$pid" ] || return 0
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
    wait "$pid" 2>/dev/null
    return 0
}

stop_step() {
    local name=$1 pid=$2
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    signal_step TERM "$name"
    if ! wait_pid "$pid" 20; then
        log "$name did not stop within 20 s: killing it"
        signal_step KILL "$name"
        wait_pid "$pid" 10 || kill -KILL "$pid" 2>/dev/null
    fi
}

# Ends the run once: drains the loadgen (it writes every finished request), merges the
# shards, stops the services and Prometheus (which leaves its snapshot), writes the final
# state, analyses. Safe to call again from a second signal.
finish() {
    [ "$FINISHED" = 0 ] || return 0
    FINISHED=1
    trap '' USR1 TERM INT
    if [ -n "$LOADGEN_SRUN" ] && kill -0 "$LOADGEN_SRUN" 2>/dev/null; then
        log "draining the loadgen"
        signal_step TERM aifb-loadgen
        wait_pid "$LOADGEN_SRUN" 60 || {
            log "the loadgen did not drain within 60 s"
            signal_step KILL aifb-loadgen
        }
    fi
    # A loadgen killed before it closed its files left checkpoints: keep those requests.
    for d in "$RUN_DIR" "$RUN_DIR"/shards/shard-*; do
        if [ -d "$d/partial" ]; then
            "$AIFB_BIN/loadgen" recover --out "$d" >>"$RUN_DIR/logs/recover.log" 2>&1 ||
                log "recovering the checkpoints of $d failed; see logs/recover.log"
        fi
    done
    if [ "$CLIENTS" -gt 1 ] && [ -d "$RUN_DIR/shards" ]; then
        "$AIFB_BIN/loadgen" merge --out "$RUN_DIR" --recipe "$RUN_DIR/recipe.lock.yaml" \
            "$RUN_DIR"/shards/shard-* >>"$RUN_DIR/logs/merge.log" 2>&1 ||
            log "merging the shards failed; see logs/merge.log"
    fi
    if [ -n "$MONITOR_SRUN" ]; then
        # A signal to the step would reach Prometheus too: ask the monitor through a file
        # instead, so it snapshots the TSDB before stopping Prometheus.
        touch "$RUN_DIR/slurm/stop-monitor"
        wait_pid "$MONITOR_SRUN" 120 || log "the monitor did not stop within 120 s"
        stop_step aifb-monitor "$MONITOR_SRUN"
    fi
    stop_step aifb-exporter "$EXPORTER_SRUN"
    stop_step aifb-service "$SERVICE_SRUN"
    if [ -n "$SERVICE_ADDR" ]; then
        aifb_job discover "$RUN_DIR" --role service --service "$SERVICE_KIND" \
            --addr "$SERVICE_ADDR" --node "$SERVICE_NODE" --state stopped || true
    fi
    rm -rf "$SCRATCH"
    aifb_job finish "$RUN_DIR" "$OUTCOME" ${REASON:+--error "$REASON"}
}

on_signal() {
    [ "$STOPPING" = 0 ] || return 0
    STOPPING=1
    if [ -e "$RUN_DIR/.cancel" ]; then
        OUTCOME=CANCELLED REASON="cancelled by aifb cancel: the requests finished so far are kept"
    else
        OUTCOME=CANCELLED REASON="stopped by $1 (SLURM time limit or scancel): the requests finished so far are kept"
    fi
    log "$1: $REASON"
    finish
    exit 0
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

fail() {
    OUTCOME=FAILED REASON=$1
    log "failed: $1"
    finish
    exit 1
}

# Address of a node as the other nodes reach it (its NodeAddr).
node_addr() {
    scontrol show node "$1" 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1
}
first_node() { scontrol show hostnames "$1" | head -n 1; }

aifb_job state "$RUN_DIR" LAUNCHING --job-id "$JOB"
for m in "${MODULES[@]}"; do
    module load "$m" || fail "module load $m failed"
done

# ---- what ran where: for the record -----------------------------------------------------
{
    env | grep -E '^(SLURM|SBATCH|CUDA_VISIBLE|ROCR_VISIBLE|GPU_DEVICE)' | sort
} >"$RUN_DIR/logs/slurm-env.txt"
scontrol show job "$JOB" >"$RUN_DIR/logs/scontrol-job.txt" 2>&1 || true
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total --format=csv \
        >"$RUN_DIR/logs/gpu-inventory.csv" 2>&1 || true
fi
if [ -n "$SERVICE_IMAGE" ]; then
    if [ -f "$SERVICE_IMAGE" ]; then
        sha256sum "$SERVICE_IMAGE" >"$RUN_DIR/logs/image-digest.txt" 2>&1 || true
    else
        echo "$SERVICE_IMAGE (not a local file: pin it by digest in the recipe)" \
            >"$RUN_DIR/logs/image-digest.txt"
    fi
fi

# ---- service and exporter (service group) -----------------------------------------------
SERVICE_NODE=$(first_node "${SERVICE_NODELIST}")
SERVICE_HOST=$(node_addr "$SERVICE_NODE")
SERVICE_HOST=${SERVICE_HOST:-$SERVICE_NODE}
SERVICE_ADDR=''
if [ -n "$ENDPOINT" ]; then
    TARGET=$ENDPOINT
else
    SERVICE_PORT=${SERVICE_PORT:-$(aifb_job port)}
    SERVICE_ADDR=$SERVICE_HOST:$SERVICE_PORT
    TARGET=$SCHEME://$SERVICE_ADDR
    export SERVICE_PORT SERVICE_ADDR
    service_started=$SECONDS service_t0=$EPOCHREALTIME
    "${SRUN_SERVICE[@]}" --job-name=aifb-service --output="$RUN_DIR/logs/service.log" \
        bash "$RUN_DIR/slurm/job.sbatch" service &
    SERVICE_SRUN=$!
    aifb_job discover "$RUN_DIR" --role service --service "$SERVICE_KIND" \
        --addr "$SERVICE_ADDR" --node "$SERVICE_NODE" --state starting
    # The exporter watches the service's PID: wait until the step has written it.
    deadline=$((SECONDS + 60))
    until [ -s "$SCRATCH/service.pid" ]; do
        kill -0 "$SERVICE_SRUN" 2>/dev/null ||
            fail "the service step ended before it started; see logs/service.log: $(tail -n 1 "$RUN_DIR/logs/service.log" 2>/dev/null)"
        [ "$SECONDS" -lt "$deadline" ] || fail "the service step did not start within 60 s"
        sleep 0.2
    done
fi
SCRAPE_URLS=''
if [ -n "$SERVICE_METRICS_PATH" ]; then
    SCRAPE_URLS="service=$TARGET$SERVICE_METRICS_PATH"
fi

if [ "$EXPORTER" = 1 ]; then
    EXPORTER_PORT=$(aifb_job port)
    process=()
    if [ -n "$SERVICE_SRUN" ]; then
        process=(--process.pid-file "$SCRATCH/service.pid" --process.service "$SERVICE_KIND")
    fi
    expand_command "${EXPORTER_ARGS[@]}"
    "${SRUN_SERVICE[@]}" --job-name=aifb-exporter --output="$RUN_DIR/logs/exporter.log" \
        "$AIFB_BIN/exporter" --web.listen-address "0.0.0.0:$EXPORTER_PORT" \
        "${EXPANDED[@]}" "${process[@]}" \
        --discovery.dir "$STATE_DIR" --discovery.file-sd "$RUN_DIR/prometheus/targets" \
        --discovery.run-id "$RUN_ID" &
    EXPORTER_SRUN=$!
    SCRAPE_URLS="$SCRAPE_URLS exporter=http://$SERVICE_HOST:$EXPORTER_PORT/metrics"
fi

# ---- readiness: the kind's own health check, then the driver's ----------------------------
check_ready() {
    local host=$SERVICE_HOST port=${SERVICE_PORT:-}
    case "$HEALTH" in
    http:*) curl -fsS -o /dev/null --max-time 5 "$TARGET${HEALTH#http:}" 2>/dev/null ;;
    redis) if command -v redis-cli >/dev/null; then
        redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG
    else true; fi ;;
    postgres) if command -v pg_isready >/dev/null; then
        pg_isready -q -h "$host" -p "$port"
    else true; fi ;;
    *) true ;;
    esac
}
if [ -n "$SERVICE_SRUN" ]; then
    deadline=$((SECONDS + HEALTH_TIMEOUT))
    until check_ready; do
        kill -0 "$SERVICE_SRUN" 2>/dev/null ||
            fail "the service exited before it was ready; see logs/service.log: $(tail -n 1 "$RUN_DIR/logs/service.log" 2>/dev/null)"
        [ "$SECONDS" -lt "$deadline" ] ||
            fail "the service was not ready within ${HEALTH_TIMEOUT}s (service.health.timeout); see logs/service.log"
        sleep 0.5
    done
fi
left=$((HEALTH_TIMEOUT - (SECONDS - ${service_started:-$SECONDS})))
[ "$left" -gt 0 ] || left=1
"$AIFB_BIN/loadgen" ready --recipe "$RUN_DIR/recipe.lock.yaml" --target "$TARGET" \
    --timeout "$left" >>"$RUN_DIR/logs/ready.log" 2>&1 ||
    fail "the service did not pass its readiness check: $(tail -n 1 "$RUN_DIR/logs/ready.log")"
ready_args=()
if [ -n "$SERVICE_SRUN" ]; then
    ready_args=(--time-to-ready "$(awk -v a="$service_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')")
    metrics=()
    [ -z "$SERVICE_METRICS_PATH" ] || metrics=(--metrics-path "$SERVICE_METRICS_PATH")
    aifb_job discover "$RUN_DIR" --role service --service "$SERVICE_KIND" \
        --addr "$SERVICE_ADDR" --node "$SERVICE_NODE" --state ready \
        --pid "$(cat "$SCRATCH/service.pid" 2>/dev/null || echo 0)" "${metrics[@]}"
fi
aifb_job state "$RUN_DIR" READY --node "$SERVICE_NODE" "${ready_args[@]}"
log "service ready at $TARGET"

# ---- monitor group: Prometheus (and Grafana) --------------------------------------------
if [ "$MONITOR" = 1 ]; then
    "${SRUN_MONITOR[@]}" --job-name=aifb-monitor --output="$RUN_DIR/logs/monitor.log" \
        "$AIFB_BIN/aifb" job monitor "$RUN_DIR" --state-dir "$STATE_DIR" \
        --scratch "$SCRATCH_BASE" &
    MONITOR_SRUN=$!
fi

# ---- client group: the loadgen shards ---------------------------------------------------
START_AT=$(($(date +%s) + START_DELAY))
export TARGET START_AT SCRAPE_URLS
aifb_job state "$RUN_DIR" RUNNING
"${SRUN_CLIENT[@]}" --job-name=aifb-loadgen --output="$RUN_DIR/logs/loadgen-%t.out" \
    bash "$RUN_DIR/slurm/job.sbatch" client &
LOADGEN_SRUN=$!
# `wait` returns early when a trapped signal arrives; the trap then finishes the run.
wait "$LOADGEN_SRUN"
status=$?
LOADGEN_SRUN=''
if [ "$STOPPING" = 1 ]; then
    exit 0
fi
case "$status" in
0) ;;
1) OUTCOME=FAILED REASON="the loadgen judged a stage invalid (--ci); see summary.json" ;;
*) OUTCOME=FAILED REASON="the loadgen failed (exit $status); see logs/loadgen-0.log" ;;
esac
finish
[ "$OUTCOME" = DONE ]
