"""Scrapes several exporters alternately over keep-alive HTTP and reports, per exporter:
scrape latency p50/p99, CPU seconds per scrape (from /proc/<pid>/stat) and RSS.

usage: scrape_bench.py SCRAPES NAME=PID=URL [NAME=PID=URL ...]
"""
import http.client
import json
import os
import sys
import time
import urllib.parse

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    n = int(sys.argv[1])
    targets = []
    for spec in sys.argv[2:]:
        name, pid, url = spec.split("=", 2)
        u = urllib.parse.urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        targets.append({"name": name, "pid": int(pid), "conn": conn, "path": u.path, "lat": [], "bytes": 0})
    headers = {"Accept": "text/plain; version=0.0.4", "X-Prometheus-Scrape-Timeout-Seconds": "10"}
    for t in targets:  # warm up: first scrapes load code and caches
        for _ in range(20):
            t["conn"].request("GET", t["path"], headers=headers)
            t["conn"].getresponse().read()
        t["cpu0"] = cpu_seconds(t["pid"])
    for _ in range(n):
        for t in targets:
            start = time.perf_counter()
            t["conn"].request("GET", t["path"], headers=headers)
            body = t["conn"].getresponse().read()
            t["lat"].append(time.perf_counter() - start)
            t["bytes"] = len(body)
    out = {}
    for t in targets:
        lat = sorted(t["lat"])
        out[t["name"]] = {
            "scrapes": n,
            "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "cpu_ms_per_scrape": (cpu_seconds(t["pid"]) - t["cpu0"]) / n * 1e3,
            "rss_mb": rss_bytes(t["pid"]) / 1e6,
            "body_bytes": t["bytes"],
        }
    print(json.dumps(out, indent=1))


main()
