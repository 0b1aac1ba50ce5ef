#!/bin/sh
# /docker-entrypoint-initdb.d script of the `primary` service. The image runs it once, when it
# initializes an empty data directory, against a temporary server. It may be sourced by the
# image's entrypoint (when not executable): no `exit`, no `set -u` here.
set -e

REPLICATION_USER="${REPLICATION_USER:-replicator}"
if [ -z "${REPLICATION_PASSWORD:-}" ]; then
  echo "primary-init: REPLICATION_PASSWORD must be set" >&2
  false
fi

if [ "$REPLICATION_USER" != "$POSTGRES_USER" ]; then
  # psql variables quote the name and the password: any characters are safe.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=repl_user="$REPLICATION_USER" --set=repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE :"repl_user" WITH LOGIN REPLICATION PASSWORD :'repl_password';
SQL
fi

# The replicas' port claims (replica-entrypoint.sh), in the `postgres` database: not the app's.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  --set=repl_user="$REPLICATION_USER" <<'SQL'
CREATE TABLE pgsplit_replica_claims (port int PRIMARY KEY, claimed_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE pgsplit_replica_claims OWNER TO :"repl_user";
SQL

# "host all all all" (added by the image) does not cover replication connections.
{
  echo ''
  echo '# pgsplit: standbys stream from anywhere on the Docker network, with a password'
  echo "host replication \"$REPLICATION_USER\" all scram-sha-256"
} >> "$PGDATA/pg_hba.conf"
echo "primary-init: role \"$REPLICATION_USER\" may stream WAL to standbys"
