#!/usr/bin/env bash
# Highest sustained streamed LLM request rate against the simulator: loadgen versus
# GuideLLM (pip) on the same single client core (see guidellm.py).
# Usage: bench/loadgen/guidellm.sh [SECONDS]   (default 10). GuideLLM is installed once into
# ~/.cache/aifb/guidellm-venv (GUIDELLM_VERSION, default 0.8.1).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
cache="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}"
venv="$cache/guidellm-venv"
version="${GUIDELLM_VERSION:-0.8.1}"
if ! "$venv/bin/guidellm" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "guidellm==$version"
fi
cargo build --release -q -p aifb-loadgen --bin loadgen
python3 bench/loadgen/guidellm.py "$secs" target/release/loadgen "$venv/bin/guidellm"
