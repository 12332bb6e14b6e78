#!/bin/sh
# Starts a throwaway PostgreSQL server in the foreground, for recipes and tests:
#   postgres.sh DATA_DIR PORT [postgres options...]
# Creates a cluster in DATA_DIR/pg on first use (user postgres, trust authentication,
# loopback only) and then execs the server, so the caller's signals reach it directly.
# As root, initdb and the server run as the postgres user (PostgreSQL refuses root).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DATA_DIR PORT [postgres options...]" >&2; exit 2; }
data=$1 port=$2
shift 2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || bin=$(dirname "$(command -v postgres)")
as_pg=""
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$data"
  as_pg="setpriv --reuid=postgres --regid=postgres --init-groups --"
fi
if [ ! -f "$data/pg/PG_VERSION" ]; then
  $as_pg "$bin/initdb" -D "$data/pg" -A trust -U postgres --no-sync >"$data/initdb.log" 2>&1 ||
    { cat "$data/initdb.log" >&2; exit 1; }
fi
exec $as_pg "$bin/postgres" -D "$data/pg" -p "$port" -c listen_addresses=127.0.0.1 \
  -c "unix_socket_directories=$data" "$@"
