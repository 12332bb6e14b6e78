#!/bin/sh
# Starts a single-node Garage S3 store (https://garagehq.deuxfleurs.fr) in DATA_DIR with
# its S3 API on 127.0.0.1:PORT, for recipes and tests:
#   garage.sh DATA_DIR PORT [ACCESS_KEY_ID SECRET_KEY]
# It applies a one-node layout and imports the given key (default: the test key below)
# with the right to create buckets, then waits on the server; SIGTERM stops it.
# The garage binary is taken from $GARAGE, else PATH, else the aifb cache.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DATA_DIR PORT [ACCESS_KEY_ID SECRET_KEY]" >&2; exit 2; }
data=$1 port=$2
key_id=${3:-GK0123456789abcdef01234567}
secret=${4:-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}
cache=${AIFB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifb}
garage=${GARAGE:-$(command -v garage || echo "$cache/garage/bin/garage")}
[ -x "$garage" ] || { echo "garage not found (scripts/install-garage.sh builds it)" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rpc=$(free_port) admin=$(free_port) setup_port=$(free_port)
secret_rpc=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$data/meta" "$data/data"
# config S3_PORT: writes garage.toml with the S3 API on S3_PORT.
config() {
  cat >"$data/garage.toml" <<TOML
metadata_dir = "$data/meta"
data_dir = "$data/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret_rpc"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$1"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
}
export GARAGE_CONFIG_FILE="$data/garage.toml"
# Provision (layout, key, rights) with the S3 API on a private port, then restart the
# server on the real one: clients that see PORT open see a store ready to use.
config "$setup_port"
"$garage" server >"$data/garage-setup.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid; exit 0' TERM INT
node=""
for _ in $(seq 1 300); do
  node=$("$garage" node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
  kill -0 $pid 2>/dev/null || { cat "$data/garage-setup.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$node" ] || { echo "garage did not start" >&2; kill $pid; exit 1; }
"$garage" layout assign -z dc1 -c 1G "$node" >/dev/null
"$garage" layout apply --version 1 >/dev/null
"$garage" key import --yes -n aifb "$key_id" "$secret" >/dev/null
"$garage" key allow --create-bucket "$key_id" >/dev/null
kill $pid; wait $pid || true
config "$port"
"$garage" server >"$data/garage.log" 2>&1 &
pid=$!
echo "garage S3 API on 127.0.0.1:$port (region garage, key $key_id)"
wait $pid
