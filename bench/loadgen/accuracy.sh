#!/usr/bin/env bash
# Measurement error of the loadgen against the simulator's known truth (see accuracy.py).
# Usage: bench/loadgen/accuracy.sh [SECONDS]   (default 20). Needs the pyarrow venv that
# scripts/test.sh creates (~/.cache/aifb/venv) or AIFB_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-20}"
cache="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}"
python="${AIFB_PYTHON:-$cache/venv/bin/python}"
"$python" -c 'import pyarrow' 2>/dev/null || { echo "$python lacks pyarrow: run scripts/test.sh once" >&2; exit 2; }
cargo build --release -q -p aifb-loadgen --bin loadgen
python3 bench/loadgen/accuracy.py "$secs" target/release/loadgen "$python"
