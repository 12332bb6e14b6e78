#!/usr/bin/env bash
# Exporter benchmark: aifb's exporter and Debian's prometheus-node-exporter side by side in
# one run on this machine, scraped alternately; reports scrape latency, CPU per scrape and
# RSS, and their ratios. Usage: bench/exporter/run.sh [SCRAPES]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-2000}"
command -v prometheus-node-exporter >/dev/null || {
  sudo_cmd=""; [ "$(id -u)" != 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null
}
cargo build --release -q -p aifb-exporter
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1=$(free_port); p2=$(free_port); p3=$(free_port)
target/release/exporter --web.listen-address "127.0.0.1:$p1" >/dev/null 2>&1 & aifb=$!
prometheus-node-exporter --web.listen-address="127.0.0.1:$p2" >/dev/null 2>&1 & ne=$!
# The same ground as aifb's node collector: CPU, memory, load, pressure.
prometheus-node-exporter --web.listen-address="127.0.0.1:$p3" --collector.disable-defaults \
  --collector.cpu --collector.meminfo --collector.loadavg --collector.pressure >/dev/null 2>&1 & ne_same=$!
trap 'kill $aifb $ne $ne_same 2>/dev/null' EXIT
for p in $p1 $p2 $p3; do

  for _ in $(seq 100); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$p/metrics')" 2>/dev/null && break; sleep 0.1; done
done
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); node_exporter $(prometheus-node-exporter --version 2>&1 | head -1 | awk '{print $3}'), default collectors each"
out=$(mktemp)
python3 bench/exporter/scrape_bench.py "$n" "aifb=$aifb=http://127.0.0.1:$p1/metrics" \
  "node_exporter=$ne=http://127.0.0.1:$p2/metrics" "node_exporter_same=$ne_same=http://127.0.0.1:$p3/metrics" > "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = r["aifb"]
rows = [("p50_ms", "scrape p50 (ms)"), ("p99_ms", "scrape p99 (ms)"), ("cpu_ms_per_scrape", "CPU per scrape (ms)"),
        ("rss_mb", "RSS (MB)"), ("body_bytes", "response size (bytes)")]
print("\n| metric | aifb exporter | node_exporter (defaults) | ratio | node_exporter (cpu, meminfo, loadavg, pressure) | ratio |")
print("|---|---:|---:|---:|---:|---:|")
for k, label in rows:
    n, s = r["node_exporter"][k], r["node_exporter_same"][k]
    print(f"| {label} | {a[k]:.3f} | {n:.3f} | {a[k] / n:.2f} | {s:.3f} | {a[k] / s:.2f} |")
PY

