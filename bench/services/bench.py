"""Runs the loadgen and redis-benchmark / pgbench against the same servers; prints a table.

usage: bench.py SECONDS LOADGEN
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pinned import CLIENT_CPU, SERVER_CPU, cpu_model, free_port, run_client, wait_port  # noqa: E402

SECS = float(sys.argv[1])
LOADGEN = os.path.abspath(sys.argv[2])
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def loadgen(tmp, name, kind, target, users, section):
    recipe = os.path.join(tmp, f"{name}.yaml")
    with open(recipe, "w") as f:
        f.write(f"""name: {name}
service:
  kind: {kind}
  endpoint: {target}
workload:
  pattern: closed
  levels: [{users}]
  warmup: 1s
  measure: {SECS}s
  cooldown: 0s
  timeout: 10s
{section}""")
    out = os.path.join(tmp, f"out-{name}")
    _, cpu = run_client([LOADGEN, "run", "--recipe", recipe, "--target", target, "--out", out,
                         "--log-file", os.path.join(tmp, f"{name}.log")])
    stage = json.load(open(os.path.join(out, "summary.json")))["stages"][0]
    return stage["throughput_rps"], cpu / stage["requests"], stage["latency_s"]["p99"]


def redis(tmp, users, size, keys):
    port = free_port()
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, "redis-server", "--port", str(port),
                               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)
    rows = []
    try:
        wait_port(port)
        for op in ["get", "set"]:
            section = (f"  redis:\n    mix: {{{op}: 1}}\n    value_size: {size}\n    keys: {keys}\n"
                       f"    key_prefix: \"key:\"\n")
            lg = loadgen(tmp, f"redis-{op}", "redis", f"redis://127.0.0.1:{port}", users, section)
            # redis-benchmark: as many requests as the loadgen's measured window would hold.
            n = max(int(lg[0] * SECS), 10000)
            out, cpu = run_client(["redis-benchmark", "-p", str(port), "-c", str(users), "-n", str(n),
                                   "-d", str(size), "-r", str(keys), "-t", op, "--csv"])
            line = [l for l in out.splitlines() if l.startswith(f'"{op.upper()}"')][0]
            fields = [x.strip('"') for x in line.split(",")]
            rps, p99 = float(fields[1]), float(fields[6]) / 1000
            rows.append((f"Redis {op.upper()}, {users} connections, {size} B values", lg, (rps, cpu / n, p99)))
    finally:
        server.terminate()
        server.wait()
    return rows


def postgres(tmp, users):
    data = os.path.join(tmp, "pg")
    os.makedirs(data)
    port = free_port()
    script = os.path.join(ROOT, "recipes", "services", "postgres.sh")
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, script, data, str(port), "-c", "fsync=off",
                               "-c", f"max_connections={users + 20}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres", PGDATABASE="postgres")
    try:
        wait_port(port)
        subprocess.run(["pgbench", "-i", "-q", "-s", "1"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        section = ("  postgres:\n    mix: {tpcb: 1}\n    scale: 1\n    schema: existing\n")
        lg = loadgen(tmp, "pg", "postgres", f"postgres://postgres@127.0.0.1:{port}/postgres", users, section)
        out, cpu = run_client(["pgbench", "-n", "-M", "prepared", "-c", str(users), "-j", "1",
                               "-T", str(int(SECS)), "-r"], env=env)
        tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
        txns = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
        lat = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1)) / 1000
        return [(f"PostgreSQL TPC-B-like, {users} clients, scale 1", lg, (tps, cpu / txns, None), lat)]
    finally:
        server.terminate()
        server.wait()


def main():
    tmp = tempfile.mkdtemp(prefix="aifb-bench-services-")
    os.chmod(tmp, 0o755)  # the PostgreSQL server runs as its own user
    try:
        rows = redis(tmp, 50, 100, 10000)
        pg = postgres(tmp, 8)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = cpu_model()
    print(f"machine: {os.cpu_count()} CPUs, {cpu}; server on CPU {SERVER_CPU}, clients on CPU {CLIENT_CPU}; "
          f"{SECS:.0f} s per measurement")
    print()
    print("| workload | loadgen req/s | native req/s | throughput ratio | loadgen CPU µs/req | native CPU µs/req | CPU ratio | loadgen p99 ms | native p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, lg, nat in rows:
        print(f"| {name} (redis-benchmark) | {lg[0]:,.0f} | {nat[0]:,.0f} | {lg[0] / nat[0]:.2f} | "
              f"{lg[1] * 1e6:.1f} | {nat[1] * 1e6:.1f} | {lg[1] / nat[1]:.2f} | {lg[2] * 1e3:.2f} | {nat[2] * 1e3:.2f} |")
    for name, lg, nat, avg in pg:
        print(f"| {name} (pgbench -M prepared) | {lg[0]:,.0f} | {nat[0]:,.0f} | {lg[0] / nat[0]:.2f} | "
              f"{lg[1] * 1e6:.1f} | {nat[1] * 1e6:.1f} | {lg[1] / nat[1]:.2f} | {lg[2] * 1e3:.2f} | avg {avg * 1e3:.2f} |")


main()
