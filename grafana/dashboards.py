#!/usr/bin/env python3
"""Writes aifb's Grafana dashboards (grafana/dashboards/*.json) from the panel lists below.

The JSON files are checked in (Grafana provisioning reads them as they are); this script is
their source. `python3 grafana/dashboards.py --check` fails when a file differs from what
the script writes, which the test suite runs, so the two never drift apart.

Every query selects `run_id="$run_id"`; node-level panels also select `node=~"$node"`.
Stage changes of the loadgen are annotations on every dashboard.
"""
import json
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "aifb-prometheus"}
RUN = 'run_id="$run_id"'
NODE = 'run_id="$run_id",node=~"$node"'


def q(expr, legend="__auto"):
    return (expr, legend)


def panel(title, unit, queries, kind="timeseries", desc="", w=12, h=8):
    return {"title": title, "unit": unit, "queries": queries, "kind": kind, "desc": desc, "w": w, "h": h}


def quantiles(metric, by="op", extra=RUN):
    return [
        q(f"histogram_quantile({p}, sum by ({by}, le) (rate({metric}_bucket{{{extra}}}[$__rate_interval])))", f"p{int(p * 100)} {{{{{by}}}}}")
        for p in (0.5, 0.9, 0.99)
    ]


OVERVIEW = [
    panel("Stage", "none", [q(f"max(aifb_loadgen_stage{{{RUN}}})", "stage")], "stat", "Index of the load level being run.", 4, 4),
    panel("Offered rate", "reqps", [q(f"sum(aifb_loadgen_offered_rate{{{RUN}}})", "offered")], "stat", "Open loop: requests per second the schedule asks for.", 4, 4),
    panel("Users", "none", [q(f"sum(aifb_loadgen_target_concurrency{{{RUN}}})", "users")], "stat", "Closed loop: users of the stage.", 4, 4),
    panel("In flight", "none", [q(f"sum(aifb_loadgen_in_flight{{{RUN}}})", "in flight")], "stat", "Requests sent and not yet answered.", 4, 4),
    panel("Error ratio", "percentunit", [q(f'(sum(rate(aifb_loadgen_requests_total{{{RUN},outcome!="ok"}}[$__rate_interval])) or vector(0)) / sum(rate(aifb_loadgen_requests_total{{{RUN}}}[$__rate_interval]))', "errors")], "stat", "Failed requests over all requests.", 4, 4),
    panel("Client queue", "none", [q(f"sum(aifb_loadgen_client_queue{{{RUN}}})", "queued")], "stat", "Arrivals waiting for a free connection in the generator (max_in_flight).", 4, 4),
    panel("Offered vs achieved rate", "reqps", [
        q(f"sum(aifb_loadgen_offered_rate{{{RUN}}})", "offered"),
        q(f"sum(rate(aifb_loadgen_requests_total{{{RUN}}}[$__rate_interval]))", "achieved"),
        q(f'sum(rate(aifb_loadgen_requests_total{{{RUN},outcome="ok"}}[$__rate_interval]))', "achieved ok"),
    ], desc="When achieved stays below offered, the service (or the generator: check schedule lag) saturates."),
    panel("Requests by outcome", "reqps", [q(f"sum by (outcome) (rate(aifb_loadgen_requests_total{{{RUN}}}[$__rate_interval]))", "{{outcome}}")]),
    panel("Service latency (from send)", "s", quantiles("aifb_loadgen_request_duration_seconds")),
    panel("Response time (from intended start)", "s", quantiles("aifb_loadgen_response_time_seconds"), desc="Includes queueing before the send: free of coordinated omission."),
    panel("Schedule lag", "s", quantiles("aifb_loadgen_schedule_lag_seconds", by="job"), desc="How late the generator sent requests; large values make a stage invalid."),
]

LLM = [
    panel("Time to first token", "s", quantiles("aifb_loadgen_ttft_seconds")),
    panel("Inter-token latency", "s", quantiles("aifb_loadgen_inter_token_latency_seconds"), desc="Per token: a chunk's gap split over the tokens the server counted in it (vLLM continuous_usage_stats), else the chunk gap."),
    panel("Inter-chunk latency", "s", quantiles("aifb_loadgen_inter_chunk_latency_seconds"), desc="Gap between streamed content chunks, as the client sees them."),
    panel("Time per output token", "s", quantiles("aifb_loadgen_tpot_seconds")),
    panel("Tokens per second", "none", [
        q(f"sum(rate(aifb_loadgen_output_tokens_total{{{RUN}}}[$__rate_interval]))", "output tokens/s"),
        q(f"sum(rate(aifb_loadgen_prompt_tokens_total{{{RUN}}}[$__rate_interval]))", "prompt tokens/s"),
    ]),
    panel("vLLM queue", "none", [
        q(f"sum(vllm:num_requests_running{{{RUN}}})", "running"),
        q(f"sum(vllm:num_requests_waiting{{{RUN}}})", "waiting"),
    ], desc="The server's own view: requests in the batch and waiting for it."),
    panel("vLLM KV cache usage", "percentunit", [q(f"max(vllm:kv_cache_usage_perc{{{RUN}}})", "KV cache")], desc="Fraction of KV-cache blocks in use; near 1, requests queue or get preempted."),
    panel("Server-side TTFT p99", "s", [q(f"histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{RUN}}}[$__rate_interval])))", "server p99")]),
    panel("Server token throughput", "none", [
        q(f"sum(rate(vllm:generation_tokens_total{{{RUN}}}[$__rate_interval]))", "generated/s"),
        q(f"sum(rate(vllm:prompt_tokens_total{{{RUN}}}[$__rate_interval]))", "prompt/s"),
    ]),
]

GPU = [
    panel("GPU utilization", "percentunit", [q(f"aifb_gpu_utilization_ratio{{{NODE}}}", "{{node}} gpu{{gpu}}")]),
    panel("SM active", "percentunit", [q(f"aifb_gpu_sm_active_ratio{{{NODE}}}", "{{node}} gpu{{gpu}}")], desc="Hopper and later, through GPM (aifb_gpu_profiling_available)."),
    panel("Tensor core active", "percentunit", [q(f"aifb_gpu_tensor_active_ratio{{{NODE}}}", "{{node}} gpu{{gpu}}")]),
    panel("DRAM active", "percentunit", [q(f"aifb_gpu_dram_active_ratio{{{NODE}}}", "{{node}} gpu{{gpu}}")]),
    panel("Memory used", "bytes", [
        q(f"aifb_gpu_memory_used_bytes{{{NODE}}}", "{{node}} gpu{{gpu}} used"),
        q(f"aifb_gpu_memory_total_bytes{{{NODE}}}", "{{node}} gpu{{gpu}} total"),
    ]),
    panel("Power", "watt", [
        q(f"aifb_gpu_power_watts{{{NODE}}}", "{{node}} gpu{{gpu}}"),
        q(f"aifb_gpu_power_limit_watts{{{NODE}}}", "{{node}} gpu{{gpu}} limit"),
    ]),
    panel("Energy per second", "watt", [q(f"rate(aifb_gpu_energy_joules_total{{{NODE}}}[$__rate_interval])", "{{node}} gpu{{gpu}}")]),
    panel("SM clock", "hertz", [q(f"aifb_gpu_sm_clock_hertz{{{NODE}}}", "{{node}} gpu{{gpu}}")]),
    panel("Temperature", "celsius", [q(f"aifb_gpu_temperature_celsius{{{NODE}}}", "{{node}} gpu{{gpu}}")]),
    panel("Throttle reasons active", "none", [q(f"aifb_gpu_clock_throttle_active{{{NODE}}} == 1", "{{node}} gpu{{gpu}} {{reason}}")], desc="Thermal or power-brake throttling makes results understate the hardware."),
    panel("XID errors", "none", [q(f"increase(aifb_gpu_xid_errors_total{{{NODE}}}[$__rate_interval])", "{{node}} gpu{{gpu}} xid {{xid}}")]),
]

HOST = [
    panel("CPU busy", "percentunit", [q(f'1 - avg by (node) (rate(aifb_node_cpu_seconds_total{{{NODE},mode="idle"}}[$__rate_interval]))', "{{node}}")]),
    panel("Service CPU cores", "none", [q(f"sum by (node, service) (rate(aifb_process_cpu_seconds_total{{{NODE}}}[$__rate_interval]))", "{{node}} {{service}}")]),
    panel("Memory available", "bytes", [
        q(f"aifb_node_memory_available_bytes{{{NODE}}}", "{{node}} available"),
        q(f"aifb_node_memory_total_bytes{{{NODE}}}", "{{node}} total"),
    ]),
    panel("Service resident memory", "bytes", [q(f"aifb_process_resident_memory_bytes{{{NODE}}}", "{{node}} {{service}}")]),
    panel("Pressure stall", "percentunit", [q(f"rate(aifb_node_pressure_stall_seconds_total{{{NODE}}}[$__rate_interval])", "{{node}} {{resource}} {{kind}}")], desc="Share of time tasks waited on CPU, memory or I/O (PSI)."),
    panel("Service threads", "none", [q(f"aifb_process_threads{{{NODE}}}", "{{node}} {{service}}")]),
    panel("Job memory", "bytes", [
        q(f"aifb_job_memory_current_bytes{{{NODE}}}", "{{node}} current"),
        q(f"aifb_job_memory_max_bytes{{{NODE}}}", "{{node}} limit"),
    ], desc="The SLURM job's cgroup."),
    panel("Job OOM kills", "none", [q(f"increase(aifb_job_oom_kills_total{{{NODE}}}[$__rate_interval])", "{{node}}")]),
    panel("Collector health", "none", [q(f"min by (node, collector) (aifb_scrape_collector_success{{{NODE}}})", "{{node}} {{collector}}")], desc="1 when the exporter's collector succeeded on its last scrape."),
    panel("Targets up", "none", [q(f"up{{{RUN}}}", "{{role}} {{node}}")]),
]

DATA = [
    panel("Service up", "none", [q(f"aifb_service_up{{{RUN}}}", "{{service}} {{kind}}")]),
    panel("Probe duration", "s", [q(f"aifb_service_probe_duration_seconds{{{RUN}}}", "{{service}}")]),
    panel("Redis commands", "ops", [q(f"rate(aifb_redis_commands_processed_total{{{RUN}}}[$__rate_interval])", "{{service}}")]),
    panel("Redis hit ratio", "percentunit", [q(f"rate(aifb_redis_keyspace_hits_total{{{RUN}}}[$__rate_interval]) / (rate(aifb_redis_keyspace_hits_total{{{RUN}}}[$__rate_interval]) + rate(aifb_redis_keyspace_misses_total{{{RUN}}}[$__rate_interval]))", "{{service}}")]),
    panel("Redis memory and clients", "bytes", [
        q(f"aifb_redis_memory_used_bytes{{{RUN}}}", "memory"),
    ]),
    panel("PostgreSQL transactions", "ops", [
        q(f"rate(aifb_postgres_commits_total{{{RUN}}}[$__rate_interval])", "commits"),
        q(f"rate(aifb_postgres_rollbacks_total{{{RUN}}}[$__rate_interval])", "rollbacks"),
    ]),
    panel("PostgreSQL cache hit ratio", "percentunit", [q(f"rate(aifb_postgres_blocks_hit_total{{{RUN}}}[$__rate_interval]) / (rate(aifb_postgres_blocks_hit_total{{{RUN}}}[$__rate_interval]) + rate(aifb_postgres_blocks_read_total{{{RUN}}}[$__rate_interval]))", "hit ratio")]),
    panel("PostgreSQL backends", "none", [q(f"aifb_postgres_backends{{{RUN}}}", "backends")]),
    panel("Operations by type", "ops", [q(f"sum by (op) (rate(aifb_loadgen_requests_total{{{RUN}}}[$__rate_interval]))", "{{op}}")]),
    panel("Latency by operation", "s", quantiles("aifb_loadgen_request_duration_seconds")),
]

DASHBOARDS = {
    "aifb-run-overview": ("aifb: run overview", "Stage, offered and achieved rate, latency percentiles and errors of one run.", OVERVIEW),
    "aifb-llm-serving": ("aifb: LLM serving", "TTFT, inter-token latency, TPOT and tokens per second seen by the loadgen, and the server's queue and KV cache.", LLM),
    "aifb-gpu": ("aifb: GPU", "Utilization, SM, tensor and DRAM activity, memory, power, energy, clocks and throttling per GPU.", GPU),
    "aifb-host-job": ("aifb: host and job", "CPU, memory, pressure stall and OOM kills of the nodes, the service's processes and the SLURM job.", HOST),
    "aifb-data-services": ("aifb: data services", "Redis, PostgreSQL and the other data services: probes, throughput, hit ratios.", DATA),
}


def variables(node_var):
    out = [{
        "name": "run_id", "label": "run", "type": "query", "datasource": DS,
        "query": {"query": "label_values(aifb_loadgen_stage, run_id)", "refId": "run_id"},
        "refresh": 2, "sort": 2, "includeAll": False, "multi": False,
    }]
    if node_var:
        out.append({
            "name": "node", "label": "node", "type": "query", "datasource": DS,
            "query": {"query": f"label_values(up{{{RUN}}}, node)", "refId": "node"},
            "refresh": 2, "sort": 1, "includeAll": True, "multi": True, "allValue": ".*",
        })
    return out


def dashboard(uid, title, description, panels):
    out = []
    x = y = 0
    row_h = 0
    for i, p in enumerate(panels, start=1):
        if x + p["w"] > 24:
            x, y = 0, y + row_h
            row_h = 0
        targets = [
            {"refId": chr(ord("A") + j), "datasource": DS, "expr": expr, "legendFormat": legend}
            for j, (expr, legend) in enumerate(p["queries"])
        ]
        item = {
            "id": i, "type": p["kind"], "title": p["title"], "datasource": DS,
            "gridPos": {"h": p["h"], "w": p["w"], "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}} if p["kind"] == "timeseries"
            else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            "targets": targets,
        }
        if p["desc"]:
            item["description"] = p["desc"]
        out.append(item)
        x += p["w"]
        row_h = max(row_h, p["h"])
    node_var = any('node=~"$node"' in e for p in panels for e, _ in p["queries"])
    return {
        "uid": uid, "title": title, "description": description, "tags": ["aifb"],
        "editable": False, "graphTooltip": 1, "refresh": "5s", "schemaVersion": 41,
        "time": {"from": "now-30m", "to": "now"}, "timezone": "utc",
        "annotations": {"list": [{
            "name": "Stage changes", "datasource": DS, "enable": True, "iconColor": "orange",
            "target": {"refId": "stage", "expr": f"changes(aifb_loadgen_stage{{{RUN}}}[10s]) > 0"},
        }]},
        "templating": {"list": variables(node_var)},
        "panels": out,
    }


def render():
    return {f"{uid}.json": json.dumps(dashboard(uid, *spec), indent=2) + "\n" for uid, spec in DASHBOARDS.items()}


def main():
    folder = Path(__file__).resolve().parent / "dashboards"
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in render().items():
        path = folder / name
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            folder.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"grafana/dashboards: {', '.join(stale)} differ from grafana/dashboards.py; run python3 grafana/dashboards.py", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
