#!/usr/bin/env bash
# A throwaway PostgreSQL primary and its streaming replica, for the scale-out tests.
#
#   scripts/pg_replica.sh start DIR PRIMARY_PORT REPLICA_PORT
#   scripts/pg_replica.sh stop DIR
#
# Both listen on 127.0.0.1 with trust auth, keep their data under DIR and run as `postgres`
# when started by root (initdb refuses root). Durability is off: they live for one test run.
# Installs PostgreSQL with apt-get when it is missing and we are root.
set -euo pipefail

cmd=${1:?start or stop}
dir=${2:?data directory}

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
    if [ "$(id -u)" = 0 ] && ! command -v initdb >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    else
      found=$(dirname "$(command -v initdb)")
    fi
  fi
  echo "$found"
}

case "$cmd" in
start)
  primary_port=${3:?primary port}
  replica_port=${4:?replica port}
  bin=$(bindir)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  as_postgres "$bin/initdb" -D "$dir/primary" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  cat >>"$dir/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $primary_port
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 60
CONF
  as_postgres "$bin/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w -t 30 start >/dev/null
  as_postgres "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
    -D "$dir/replica" -R -X stream --no-sync
  echo "port = $replica_port" >>"$dir/replica/postgresql.conf"
  as_postgres "$bin/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w -t 30 start >/dev/null
  echo "primary 127.0.0.1:$primary_port, replica 127.0.0.1:$replica_port"
  ;;
stop)
  bin=$(bindir)
  for node in replica primary; do
    if [ -f "$dir/$node/postmaster.pid" ]; then
      as_postgres "$bin/pg_ctl" -D "$dir/$node" -m immediate -w stop >/dev/null || true
    fi
  done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start DIR PRIMARY_PORT REPLICA_PORT | stop DIR" >&2
  exit 2
  ;;
esac
