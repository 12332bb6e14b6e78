#!/usr/bin/env bash
# Load generator benchmarks, side by side in one run on this machine: the simulator's
# /health endpoint serves on CPU 0, each client runs on CPU 1.
#   1. Raw HTTP: loadgen (http driver, 50 users, every request recorded to Parquet) against
#      wrk and oha with 50 connections: requests/s and client CPU per request.
#   2. Open-loop precision: 5,000 requests/s Poisson for SECONDS: achieved/offered ratio
#      and schedule-lag p99 from summary.json.
#   3. Memory: RSS of the loadgen every second over 1,000,000 open-loop requests.
# Usage: bench/loadgen/run.sh [SECONDS]   (default 10). oha is taken from PATH or the
# cache (cargo install oha --root ~/.cache/aifb/bench-tools); it is skipped when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
command -v wrk >/dev/null || { echo "wrk missing (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p aifb-loadgen --bin loadgen
cache="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}"
export PATH="$PATH:$cache/bench-tools/bin"
python3 bench/loadgen/bench.py "$secs" target/release/loadgen
