"""Measurement error of the loadgen against known truth: the simulator, pinned to its own
CPU, logs when it produced every token of every streamed request (`loadgen sim --truth`,
monotonic clock from the moment its handler had the request); the loadgen, pinned to the
other CPU, measures the same requests from the client side. Per request the client's
interval contains the server's; the difference is what the client adds: writing the
request, the loopback, reading and parsing the answer.

Reports, in microseconds: TTFT error (client TTFT − server TTFT), E2E error, and the
inter-token error (client gap between consecutive chunks − server gap between the same
tokens), p50 / p99 / max. Usage: accuracy.py SECONDS LOADGEN PYTHON_WITH_PYARROW"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pinned import SERVER_CPU, CLIENT_CPU, free_port, wait_port  # noqa: E402

secs, loadgen, python = sys.argv[1], sys.argv[2], sys.argv[3]
work = tempfile.mkdtemp(prefix="aifb-accuracy-")
port = free_port()
truth = os.path.join(work, "truth.jsonl")
sim = subprocess.Popen(
    ["taskset", "-c", SERVER_CPU, loadgen, "sim", "--listen", f"127.0.0.1:{port}",
     "--max-num-seqs", "16", "--truth", truth],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wait_port(port)
    recipe = os.path.join(work, "r.yaml")
    with open(recipe, "w") as f:
        f.write(f"""name: accuracy
service: {{kind: simulator}}
monitoring: {{chunks: true}}
workload:
  pattern: closed
  levels: [4]
  warmup: 1s
  measure: {secs}s
  cooldown: 0s
  request: {{op: chat, prompt_tokens: 64, max_tokens: 64, stream: true}}
""")
    out = os.path.join(work, "run")
    subprocess.run(["taskset", "-c", CLIENT_CPU, loadgen, "run", "--recipe", recipe,
                    "--target", f"http://127.0.0.1:{port}", "--out", out,
                    "--log-file", os.path.join(work, "loadgen.log")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
finally:
    sim.terminate()
    sim.wait()

script = r'''
import json, sys
import pyarrow.parquet as pq
out, truth = sys.argv[1], sys.argv[2]
t = {}
for line in open(truth):
    v = json.loads(line)
    t[v["request_id"]] = v
import pyarrow as pa
def ints(table):
    # Timestamps as integer nanoseconds (datetime objects would lose them).
    cols = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in table.columns]
    return pa.table(cols, names=table.column_names).to_pylist()
req = ints(pq.read_table(out + "/requests.parquet"))
chunks = {}
for c in ints(pq.read_table(out + "/chunks.parquet")):
    chunks.setdefault(c["request_id"], []).append(c["t"])
def ns(x):
    return x
ttft, e2e, itl = [], [], []
for r in req:
    if not r["ok"] or r["phase"] != "measure":
        continue
    v = t[r["request_id"]]
    sent = ns(r["t_sent"])
    ttft.append(ns(r["t_first_token"]) - sent - v["token_ns"][0])
    e2e.append(ns(r["t_end"]) - sent - v["end_ns"])
    cs = sorted(ns(c) for c in chunks.get(r["request_id"], []))
    for i in range(1, min(len(cs), len(v["token_ns"]))):
        itl.append((cs[i] - cs[i - 1]) - (v["token_ns"][i] - v["token_ns"][i - 1]))
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]
res = {"requests": len(ttft)}
for name, xs in (("ttft", ttft), ("e2e", e2e), ("itl", itl)):
    res[name + "_us"] = {"p50": q(xs, 0.5) / 1e3, "p99": q(xs, 0.99) / 1e3, "max": max(xs) / 1e3, "n": len(xs)}
print(json.dumps(res))
'''
res = subprocess.run([python, "-c", script, out, truth], capture_output=True, text=True)
if res.returncode != 0:
    sys.exit(res.stderr)
r = json.loads(res.stdout)
print(f"requests measured: {r['requests']}")
print(f"{'error (µs)':<26}{'p50':>10}{'p99':>10}{'max':>10}{'samples':>10}")
for name, label in (("ttft", "TTFT (client − server)"), ("e2e", "E2E (client − server)"),
                    ("itl", "inter-token (per gap)")):
    v = r[name + "_us"]
    print(f"{label:<26}{v['p50']:>10.1f}{v['p99']:>10.1f}{v['max']:>10.1f}{v['n']:>10}")
