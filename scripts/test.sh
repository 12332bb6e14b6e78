#!/usr/bin/env bash
# Runs every test of aifb, installing what the tests need first:
#   - promtool and prometheus (Debian package prometheus) for exposition checks and a
#     real Prometheus scraping the exporter,
#   - redis-server, redis-benchmark and PostgreSQL (with pgbench): probed by the exporter,
#     driven by the loadgen,
#   - ChromaDB (pip, in its own cached venv) and Garage, a real S3 store (built once with
#     cargo into the cache by scripts/install-garage.sh, ~12 minutes the first time),
#   - llama.cpp's llama-server and a small real model (built and fetched once into the
#     cache by scripts/install-llama-server.sh, ~15 minutes the first time),
#   - Chromium, which must render the HTML report,
#   - SLURM (slurmctld, slurmd, munge from Debian): the tests start a private four-node
#     cluster on this host with scripts/slurm-cluster.sh (needs root),
#   - shellcheck for the rendered batch scripts,
#   - Node.js with typescript and @grafana/schema (npm, cached) to type-check the
#     dashboards against Grafana's schema,
#   - a Python venv with pyarrow (cached) to open the Parquet files as users will,
#   - cargo-nextest when it is missing (falls back to cargo test).
# Then: cargo fmt --check, cargo clippy -D warnings, the build, all tests and doctests.
# Safe to run twice at once on one machine: tests use free ports and temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
cache="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}"
mkdir -p "$cache"

sudo_cmd=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo_cmd="sudo"; fi
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust 1.95 or newer (https://rustup.rs), then run this again" >&2
  exit 2
fi
command -v promtool >/dev/null || apt_install prometheus
command -v redis-server >/dev/null || apt_install redis-server
command -v redis-benchmark >/dev/null || apt_install redis-tools
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
command -v setpriv >/dev/null || apt_install util-linux
command -v chromium >/dev/null || apt_install chromium
command -v slurmctld >/dev/null || apt_install slurm-wlm
command -v munged >/dev/null || apt_install munge
command -v shellcheck >/dev/null || apt_install shellcheck
command -v npm >/dev/null || apt_install nodejs npm

grafana_schema="$cache/grafana-schema"
if [ ! -x "$grafana_schema/node_modules/.bin/tsc" ] || [ ! -d "$grafana_schema/node_modules/@grafana/schema" ]; then
  say "installing typescript and @grafana/schema into $grafana_schema"
  mkdir -p "$grafana_schema"
  echo '{"name": "aifb-grafana-schema", "private": true}' >"$grafana_schema/package.json"
  (cd "$grafana_schema" && npm install --no-audit --no-fund --silent @grafana/schema@13.2.3 typescript@5.9.3)
fi
export AIFB_GRAFANA_SCHEMA="$grafana_schema"

command -v python3 >/dev/null || apt_install python3 python3-venv

venv="$cache/venv"
if ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  say "creating $venv with pyarrow"
  python3 -m venv "$venv" || { apt_install python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check pyarrow
fi
export AIFB_PYTHON="$venv/bin/python"

chroma_venv="$cache/chroma-venv"
if ! "$chroma_venv/bin/chroma" --help >/dev/null 2>&1; then
  say "creating $chroma_venv with chromadb"
  python3 -m venv "$chroma_venv" || { apt_install python3-venv && python3 -m venv "$chroma_venv"; }
  "$chroma_venv/bin/python" -m pip install -q --disable-pip-version-check chromadb==1.5.9
fi
export AIFB_CHROMA="$chroma_venv/bin/chroma"

command -v strip >/dev/null || apt_install binutils
GARAGE="$(scripts/install-garage.sh)"
export GARAGE
AIFB_LLAMA="$(scripts/install-llama-server.sh)"
export AIFB_LLAMA

say "format"
cargo fmt --all -- --check
say "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "build"
cargo build --workspace --bins --locked
for pkg in aifb-core aifb-exporter aifb-loadgen aifb-analyzer aifb-cli; do
  cargo check -q -p "$pkg" --locked   # each crate builds with its own features
done

say "tests"
cargo test --workspace --doc --locked -q
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast -- --test-threads=1
fi

