#!/bin/sh
# Entrypoint of the `replica` service (any number of them: `--scale replica=N`).
#
# All replicas share the network namespace of the `replica-ports` service, which publishes the
# ports of REPLICA_PORTS one to one. First start (empty data directory): claims the lowest
# port of the range no other replica has, as a replication slot on the primary named
# `replica_<port>` (created under an advisory lock: two replicas starting at once never get the
# same one), then clones the primary into that slot with pg_basebackup -R. Every start: runs
# the command (postgres ...) on the claimed port as a hot standby. The port is kept in the
# container's filesystem, so it stays put across restarts.
set -eu

PGDATA="${PGDATA:-/var/lib/pgsplit-replica/data}"
STATE_DIR="$(dirname "$PGDATA")"
PORT_FILE="$STATE_DIR/port"
PRIMARY_HOST="${PRIMARY_HOST:-primary}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
REPLICA_PORTS="${REPLICA_PORTS:-5433-5442}"
export PGDATA

say() { echo "replica-entrypoint: $*"; }
fail() {
  echo "replica-entrypoint: $*" >&2
  exit 1
}

[ -n "${REPLICATION_PASSWORD:-}" ] || fail "REPLICATION_PASSWORD must be set"
first="${REPLICA_PORTS%-*}"
last="${REPLICA_PORTS#*-}"
case "$first$last" in
  '' | *[!0-9]*) fail "REPLICA_PORTS must be a range like 5433-5442, got '$REPLICA_PORTS'" ;;
esac
[ "$first" -le "$last" ] || fail "REPLICA_PORTS must be a range like 5433-5442, got '$REPLICA_PORTS'"

if [ "$(id -u)" = 0 ]; then
  # The server refuses to run as root: own the state directory, then start over as postgres
  # (gosu on the Debian-based images, su-exec on the Alpine ones).
  mkdir -p "$PGDATA"
  chown postgres:postgres "$STATE_DIR" "$PGDATA"
  chmod 700 "$PGDATA"
  if command -v gosu >/dev/null 2>&1; then
    exec gosu postgres sh "$0" "$@"
  fi
  exec su-exec postgres sh "$0" "$@"
fi

# Whether a server of another replica listens on port $1 of the shared network namespace
# (pg_isready: 0 accepting, 1 rejecting, 2 no answer).
listening() {
  rc=0
  pg_isready -q -t 2 -h 127.0.0.1 -p "$1" >/dev/null 2>&1 || rc=$?
  [ "$rc" -ne 2 ]
}

primary_sql() {
  PGPASSWORD="$REPLICATION_PASSWORD" psql -XAtq -v ON_ERROR_STOP=1 --no-password \
    -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -d postgres "$@"
}

# The ports of the range no server listens on here, as a SQL array.
silent_ports() {
  list=""
  p="$first"
  while [ "$p" -le "$last" ]; do
    if ! listening "$p"; then list="$list${list:+,}$p"; fi
    p=$((p + 1))
  done
  echo "ARRAY[$list]::int[]"
}

# Claims a port, in one transaction under an advisory lock (two replicas starting at once never
# get the same one), and prints it (0: none left). A port is free when no server listens on it
# here and its slot replica_<port> on the primary is absent, or inactive and not claimed in the
# last CLAIM_LEASE_S seconds (the slot of a replica that was scaled down; a replica being set up
# has its slot active while it clones, and streams well within the lease after). Ports that never
# had a slot go first. The claim is a row of pgsplit_replica_claims in the primary's `postgres`
# database (primary-init.sh makes it). Nothing is attempted that could fail: no error lands in
# the primary's log.
CLAIM_LEASE_S="${CLAIM_LEASE_S:-20}"
claim_port() {
  out="$(primary_sql -1 -f - <<SQL
SET LOCAL synchronous_commit = local;
SELECT pg_advisory_xact_lock(hashtext('pgsplit replica ports'));
SELECT coalesce((
  SELECT port FROM unnest($(silent_ports)) AS port
  LEFT JOIN pg_replication_slots s ON s.slot_name = 'replica_' || port
  LEFT JOIN pgsplit_replica_claims c USING (port)
  WHERE s.slot_name IS NULL
     OR (NOT s.active AND (c.claimed_at IS NULL OR c.claimed_at < now() - interval '$CLAIM_LEASE_S seconds'))
  ORDER BY s.slot_name IS NOT NULL, port
  LIMIT 1), 0) AS port \gset
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'replica_' || :port;
SELECT slot_name FROM pg_create_physical_replication_slot('replica_' || :port, true) WHERE :port > 0;
INSERT INTO pgsplit_replica_claims (port) SELECT :port WHERE :port > 0
  ON CONFLICT (port) DO UPDATE SET claimed_at = now();
SELECT :port;
SQL
)" || return 1
  printf '%s\n' "$out" | sed -n '$p'
}

port="$(cat "$PORT_FILE" 2>/dev/null || true)"
if [ -s "$PGDATA/PG_VERSION" ] && [ -n "$port" ] && listening "$port"; then
  # Our port was taken over while this container was stopped (see claim_port): start afresh.
  say "port $port is in use by another replica now; cloning again on a new port"
  find "$PGDATA" -mindepth 1 -delete
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  tries=0
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER"; do
    tries=$((tries + 1))
    [ "$tries" -le 300 ] || fail "the primary at $PRIMARY_HOST:$PRIMARY_PORT did not answer within 5 min"
    say "waiting for the primary at $PRIMARY_HOST:$PRIMARY_PORT"
    sleep 1
  done

  # What an interrupted earlier attempt left behind here; its slot is reclaimed after the lease.
  find "$PGDATA" -mindepth 1 -delete
  # All taken: a removed replica's slot becomes free once its lease is over.
  tries=0
  while :; do
    port="$(claim_port || true)"
    case "$port" in '' | *[!0-9]*) port=0 ;; esac
    [ "$port" = 0 ] || break
    tries=$((tries + 1))
    [ "$tries" -le 30 ] || fail "every port of REPLICA_PORTS=$REPLICA_PORTS is taken by a replica: widen the range (and the published one)"
    [ "$tries" -gt 1 ] || say "every port of REPLICA_PORTS=$REPLICA_PORTS is taken; waiting for a removed replica's lease to end"
    sleep 2
  done
  echo "$port" >"$PORT_FILE"
  slot="replica_$port"

  say "cloning $PRIMARY_HOST:$PRIMARY_PORT into slot $slot (port $port)"
  # -R: standby.signal plus primary_conninfo / primary_slot_name in postgresql.auto.conf.
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" \
    -U "$REPLICATION_USER" --no-password -D "$PGDATA" -X stream --checkpoint=fast -R -S "$slot"
  say "clone done"
fi

# Name the standby after its slot: the WAL receiver reports it as its application_name
# (pg_stat_replication, synchronous_standby_names).
say "listening on port $port (published on the host as the same port)"
exec "$@" -c "port=$port" -c "cluster_name=replica_$port"
