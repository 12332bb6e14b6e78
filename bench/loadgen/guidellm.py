"""Loadgen against GuideLLM: the highest streamed request rate each sustains on one client
core against a simulator fast enough not to be the limit; prints a markdown table.

Both drive the same simulator (CPU 0: 8 streamed tokens per request, 2 ms per step, no
batch limit) as hard as they can from CPU 1: the loadgen as a closed loop of USERS users,
GuideLLM with its `throughput` profile at the same concurrency. Both send the same prompt
shape (32 words, 8 output tokens) and record every request.

usage: guidellm.py SECONDS LOADGEN GUIDELLM
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pinned import CLIENT_CPU, SERVER_CPU, cpu_model, stop, free_port, run_client, wait_port  # noqa: E402

SECS = float(sys.argv[1])
LOADGEN = os.path.abspath(sys.argv[2])
GUIDELLM = sys.argv[3]
USERS = 256
SIM = """name: fast-sim
service:
  kind: simulator
  model: sim-llm
  simulator:
    max_num_seqs: 4096
    kv_cache_tokens: 100000000
    prefill_per_token: 0us
    decode_step_base: 2ms
    decode_step_per_seq: 0us
    scheduler_per_waiting: 0us
workload: {pattern: closed, levels: [1]}
"""


def prompt(i):
    return " ".join(f"word{(i + j) % 97}" for j in range(32))


def main():
    tmp = tempfile.mkdtemp(prefix="aifb-bench-guidellm-")
    port = free_port()
    target = f"http://127.0.0.1:{port}"
    with open(os.path.join(tmp, "sim.yaml"), "w") as f:
        f.write(SIM)
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, LOADGEN, "sim", "--listen", f"127.0.0.1:{port}",
                               "--recipe", os.path.join(tmp, "sim.yaml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_port(port)
        recipe = os.path.join(tmp, "loadgen.yaml")
        with open(recipe, "w") as f:
            f.write(f"""name: llm-rate
service: {{kind: openai, model: sim-llm, endpoint: {target}}}
workload:
  pattern: closed
  levels: [{USERS}]
  warmup: 1s
  measure: {SECS}s
  cooldown: 0s
  request: {{prompt_tokens: 32, max_tokens: 8, stream: true}}
""")
        out = os.path.join(tmp, "out")
        _, cpu = run_client([LOADGEN, "run", "--recipe", recipe, "--target", target, "--out", out,
                             "--log-file", os.path.join(tmp, "loadgen.log")])
        stage = json.load(open(os.path.join(out, "summary.json")))["stages"][0]
        rows.append(("loadgen (closed loop, every request to Parquet)", stage["throughput_rps"],
                     stage["ttft_s"]["p50"], cpu / max(stage["requests"], 1)))
        data = os.path.join(tmp, "prompts.jsonl")
        with open(data, "w") as f:
            for i in range(200_000):
                f.write(json.dumps({"prompt": prompt(i), "output_tokens_count": 8}) + "\n")
        report = os.path.join(tmp, "guidellm.json")
        _, cpu = run_client([GUIDELLM, "run", "--backend", f"kind=openai_http,target={target}",
                             "--profile", f"kind=throughput,max_concurrency={USERS}",
                             "--constraint", f"kind=max_duration,seconds={SECS:g}",
                             "--data", f"kind=json_file,path={data}",
                             "--output", f"kind=json,path={report}",
                             "--disable-console-interactive"])
        bench = json.load(open(report))["benchmarks"][0]
        ok = bench["metrics"]["requests_per_second"]["successful"]["count"]
        ttft = bench["metrics"]["time_to_first_token_ms"]["successful"]["median"] / 1e3
        rows.append(("GuideLLM 0.8.1 (throughput profile)", ok / bench["duration"], ttft, cpu / max(ok, 1)))
    finally:
        stop(server, tmp)
    cpu = cpu_model()
    print(f"machine: {os.cpu_count()} CPUs, {cpu}; simulator on CPU {SERVER_CPU}, clients on CPU "
          f"{CLIENT_CPU}; {USERS} concurrent streams, {SECS:.0f} s each")
    print()
    print("| client | completed req/s | TTFT p50 ms | CPU ms/req | loadgen req/s ÷ its req/s |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0][1]
    for name, rps, ttft, c in rows:
        print(f"| {name} | {rps:,.0f} | {ttft * 1e3:.1f} | {c * 1e3:.3f} | {base / rps:.1f} |")


main()
