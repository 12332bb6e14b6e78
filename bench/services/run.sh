#!/usr/bin/env bash
# Service drivers against the native benchmark tools, side by side in one run on this
# machine: the loadgen's Redis driver against redis-benchmark (same command, value size,
# key space and connections) and its PostgreSQL driver against pgbench (same TPC-B-like
# transaction, prepared statements, clients, tables). The server runs on CPU 0, each client
# on CPU 1. Reports achieved throughput and client CPU per request, and their ratios; the
# loadgen also records every request to Parquet while the native tools do not.
# Usage: bench/services/run.sh [SECONDS]   (default 10 per measurement)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing (apt-get install redis-tools)" >&2; exit 2; }
cargo build --release -q -p aifb-loadgen --bin loadgen
python3 bench/services/bench.py "$secs" target/release/loadgen
