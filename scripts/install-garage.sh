#!/usr/bin/env bash
# Builds Garage (a real S3 object store, https://garagehq.deuxfleurs.fr), the S3 server of
# the tests, once into the cache: $AIFB_CACHE/garage/bin/garage (default ~/.cache/aifb).
# Debian has no MinIO and no other real S3 server; Garage is on crates.io. A debug build
# takes ~12 minutes on 2 cores and is kept (stripped, ~80 MB); the build folder is removed.
# Prints the binary's path.
set -euo pipefail
version=2.5.0
cache="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}"
bin="$cache/garage/bin/garage"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi
build="$cache/garage-build"
echo "building garage $version into $cache/garage (about 12 minutes, once)" >&2
mkdir -p "$build" "$cache/garage/bin"
CARGO_TARGET_DIR="$build/target" cargo install garage --version "$version" --locked --debug \
  --root "$build/inst" -j "$(nproc)" >"$build/build.log" 2>&1 ||
  { tail -n 30 "$build/build.log" >&2; exit 1; }
strip -o "$bin.tmp" "$build/inst/bin/garage" 2>/dev/null || cp "$build/inst/bin/garage" "$bin.tmp"
mv "$bin.tmp" "$bin"
rm -rf "$build"
echo "$bin"
