#!/usr/bin/env bash
# Analyzer benchmark: per-stage counts, throughput and p50/p90/p99/p99.9 over a synthetic
# requests.parquet of ROWS rows (default 10 M), by aifb's analyzer, DuckDB and Polars side by
# side in one run on this machine; then `analyzer regress` on two such files.
# Reports wall time and peak RSS of each. Usage: bench/analyzer/run.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rows="${1:-10000000}"
venv="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}/bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check pyarrow numpy duckdb polars
cargo build --release -q -p aifb-analyzer
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
py="$venv/bin/python"
"$py" bench/analyzer/gen.py "$rows" "$work/a.parquet" 1 >/dev/null
"$py" bench/analyzer/gen.py "$rows" "$work/b.parquet" 2 >/dev/null
echo "machine: $(nproc) CPUs; $(du -h "$work/a.parquet" | cut -f1) per file, $rows rows; duckdb $("$py" -c 'import duckdb; print(duckdb.__version__)'), polars $("$py" -c 'import polars; print(polars.__version__)')"
{
  "$py" bench/analyzer/measure.py "aifb analyzer summary" -- target/release/analyzer summary "$work/a.parquet"
  "$py" bench/analyzer/measure.py "DuckDB" -- "$py" bench/analyzer/peers.py duckdb "$work/a.parquet"
  "$py" bench/analyzer/measure.py "Polars" -- "$py" bench/analyzer/peers.py polars "$work/a.parquet"
  "$py" bench/analyzer/measure.py "aifb analyzer regress (2 files)" -- target/release/analyzer regress "$work/a.parquet" "$work/b.parquet"
} 2>"$work/outputs.txt" | "$py" -c '
import sys
rows = [l.rstrip("\n").split("\t") for l in sys.stdin if l.strip()]
base = float(rows[0][1])
print("| tool | wall s | peak RSS MB | wall / aifb summary |")
print("|---|---:|---:|---:|")
for name, wall, rss in rows:
    print(f"| {name} | {float(wall):.2f} | {rss} | {float(wall) / base:.2f} |")
'
echo; echo "outputs (stage, requests, measured, failed, throughput, latency ms):"; cat "$work/outputs.txt"
