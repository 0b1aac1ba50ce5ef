#!/bin/sh
# Entrypoint of the `replica` service (any number of them: `--scale replica=N`).
#
# First start (empty data directory): waits for the primary, clones it with pg_basebackup -R
# into a replication slot of its own, named after the container's hostname. Every start: runs
# the command (postgres ...) as a hot standby streaming from the primary.
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PRIMARY_HOST="${PRIMARY_HOST:-primary}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
export PGDATA

if [ -z "${REPLICATION_PASSWORD:-}" ]; then
  echo "replica-entrypoint: REPLICATION_PASSWORD must be set" >&2
  exit 1
fi

if [ "$(id -u)" = 0 ]; then
  # The server refuses to run as root: own the data directory, then start over as postgres
  # (gosu on the Debian-based images, su-exec on the Alpine ones).
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  if command -v gosu >/dev/null 2>&1; then
    exec gosu postgres sh "$0" "$@"
  fi
  exec su-exec postgres sh "$0" "$@"
fi

auto_conf="$PGDATA/postgresql.auto.conf"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # Slot names allow [a-z0-9_] only, 63 characters at most. The hostname is the container id
  # unless set: unique per replica, and kept across restarts of the container.
  host="${HOSTNAME:-$(cat /etc/hostname)}"
  slot="${REPLICA_SLOT_NAME:-replica_$(printf '%s' "$host" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_' '_')}"
  slot="$(printf '%s' "$slot" | cut -c 1-63)"

  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER"; do
    echo "replica-entrypoint: waiting for the primary at $PRIMARY_HOST:$PRIMARY_PORT"
    sleep 1
  done

  # What an interrupted earlier attempt left behind: files here, a slot on the primary.
  if [ -d "$PGDATA" ]; then find "$PGDATA" -mindepth 1 -delete; fi
  export PGPASSWORD="$REPLICATION_PASSWORD"
  pg_receivewal -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" --no-password \
    --slot="$slot" --drop-slot >/dev/null 2>&1 || true

  echo "replica-entrypoint: cloning $PRIMARY_HOST:$PRIMARY_PORT into slot $slot"
  # -R: standby.signal plus primary_conninfo / primary_slot_name in postgresql.auto.conf.
  # -C -S: the slot keeps the primary's WAL until this standby has it.
  pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" --no-password \
    -D "$PGDATA" -X stream --checkpoint=fast -R -C -S "$slot"
  unset PGPASSWORD
  echo "replica-entrypoint: clone done"
fi

# Name the standby after its slot: the WAL receiver then reports it as its application_name
# (pg_stat_replication, synchronous_standby_names).
slot="$(sed -n "s/^primary_slot_name = '\(.*\)'\$/\1/p" "$auto_conf" 2>/dev/null | tail -n 1)"
if [ -n "$slot" ]; then
  set -- "$@" -c "cluster_name=$slot"
fi

exec "$@"
