"""Loadgen against wrk and oha, open-loop precision and memory; prints markdown tables.

usage: bench.py SECONDS LOADGEN
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pinned import CLIENT_CPU, SERVER_CPU, cpu_model, stop, children_cpu, free_port, run_client, wait_port  # noqa: E402

SECS = float(sys.argv[1])
LOADGEN = os.path.abspath(sys.argv[2])
USERS = 50
ROUNDS = 3


def recipe(tmp, name, workload):
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"""name: {name}
service:
  kind: http
  endpoint: http://127.0.0.1:1
workload:
{workload}  http:
    path: /health
""")
    return path


def loadgen_run(tmp, name, workload, target, monitor=None):
    out = os.path.join(tmp, f"out-{name}")
    cmd = [LOADGEN, "run", "--recipe", recipe(tmp, name, workload), "--target", target, "--out", out,
           "--log-file", os.path.join(tmp, f"{name}.log")]
    if monitor is None:
        _, cpu = run_client(cmd)
        rss = None
    else:
        before = children_cpu()
        p = subprocess.Popen(["taskset", "-c", CLIENT_CPU] + cmd)
        rss = []
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
                rss.append(kb / 1024)
            except (OSError, AttributeError):
                pass
            time.sleep(1)
        cpu = children_cpu() - before
        if p.returncode != 0:
            sys.exit(f"loadgen failed ({p.returncode})")
    stage = json.load(open(os.path.join(out, "summary.json")))["stages"][0]
    return stage, cpu, rss


def main():
    tmp = tempfile.mkdtemp(prefix="aifb-bench-loadgen-")
    port = free_port()
    target = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, LOADGEN, "sim", "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_port(port)
        closed = f"  pattern: closed\n  levels: [{USERS}]\n  warmup: 1s\n  measure: {SECS}s\n  cooldown: 0s\n  timeout: 5s\n"
        # The clients take turns, ROUNDS times: this VM's speed drifts by 10-20 % over a
        # minute, so each client's median over interleaved rounds is what gets compared.
        runs = {"loadgen (every request to Parquet)": [], "wrk 4.1 (-t1)": [], "oha": []}
        for _ in range(ROUNDS):
            stage, cpu, _ = loadgen_run(tmp, "closed", closed, target)
            runs["loadgen (every request to Parquet)"].append((stage["throughput_rps"], cpu / stage["requests"]))
            out, cpu = run_client(["wrk", "-t1", f"-c{USERS}", f"-d{int(SECS)}s", f"{target}/health"])
            rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
            total = int(re.search(r"(\d+) requests in", out).group(1))
            runs["wrk 4.1 (-t1)"].append((rps, cpu / total))
            if shutil.which("oha"):
                out, cpu = run_client(["oha", "-c", str(USERS), "-z", f"{int(SECS)}s", "--no-tui", "--output-format",
                                       "json", f"{target}/health"])
                j = json.loads(out)
                rps = j["summary"]["requestsPerSec"]
                total = sum(j.get("statusCodeDistribution", {}).values())
                runs["oha"].append((rps, cpu / max(total, 1)))
        for name, r in runs.items():
            if r:
                rows.append((name, statistics.median(x[0] for x in r), statistics.median(x[1] for x in r),
                             min(x[0] for x in r), max(x[0] for x in r)))
        open_wl = f"  pattern: open\n  arrival: poisson\n  levels: [5000]\n  warmup: 1s\n  measure: {SECS}s\n  cooldown: 0s\n  timeout: 5s\n"
        precision, _, _ = loadgen_run(tmp, "open", open_wl, target)
        n = 1_000_000
        rate = 5000
        mem_wl = f"  pattern: open\n  arrival: poisson\n  levels: [{rate}]\n  warmup: 0s\n  measure: {n // rate}s\n  cooldown: 0s\n  timeout: 5s\n"
        memory, _, rss = loadgen_run(tmp, "memory", mem_wl, target, monitor=True)
    finally:
        stop(server, tmp)
    cpu = cpu_model()
    print(f"machine: {os.cpu_count()} CPUs, {cpu}; server (loadgen sim /health) on CPU {SERVER_CPU}, "
          f"clients on CPU {CLIENT_CPU}; {SECS:.0f} s per measurement")
    print()
    print(f"| client, {USERS} connections (median of {ROUNDS}) | req/s | range | CPU µs/req | loadgen's req/s vs this "
          "| this CPU/req vs loadgen's |")
    print("|---|---:|---:|---:|---:|---:|")
    base = rows[0]
    for name, rps, c, lo, hi in rows:
        print(f"| {name} | {rps:,.0f} | {lo:,.0f}–{hi:,.0f} | {c * 1e6:.1f} | {base[1] / rps:.2f} | {c / base[2]:.2f} |")
    print()
    print("| open loop, Poisson | offered req/s | scheduled | achieved/offered | schedule lag p50 µs | p99 µs | valid |")
    print("|---|---:|---:|---:|---:|---:|---|")
    lag = precision["schedule_lag_s"]
    print(f"| 5,000 req/s | 5,000 | {precision['scheduled']:,} | {precision['achieved_ratio']:.4f} | "
          f"{lag['p50'] * 1e6:.0f} | {lag['p99'] * 1e6:.0f} | {precision['valid']} |")
    print()
    if rss:
        print(f"| memory over {memory['requests']:,} requests at {rate:,}/s | RSS first s MB | RSS at 10 % MB | RSS last s MB | peak MB |")
        print("|---|---:|---:|---:|---:|")
        rss = rss[1:]  # the first sample can precede the exec
        print(f"| loadgen | {rss[0]:.1f} | {rss[len(rss) // 10]:.1f} | {rss[-1]:.1f} | {max(rss):.1f} |")


main()
