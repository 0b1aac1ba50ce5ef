#!/bin/sh
# Entrypoint of the `primary` service: adds the settings that depend on the environment to the
# postgres command line, then hands over to the image's own entrypoint (initdb on first start,
# /docker-entrypoint-initdb.d, then postgres). Runs at every start, so a changed
# SYNCHRONOUS_REPLICAS applies on the next `docker compose up` / restart.
set -eu

n="${SYNCHRONOUS_REPLICAS:-0}"
case "$n" in
  '' | *[!0-9]*)
    echo "primary-entrypoint: SYNCHRONOUS_REPLICAS must be a whole number, got '$n'" >&2
    exit 1
    ;;
esac

if [ "$n" -gt 0 ]; then
  # Quorum commit: any n of the connected standbys, whatever their names.
  set -- "$@" -c "synchronous_standby_names=ANY $n (*)"
  if [ ! -s "${PGDATA:-/var/lib/postgresql/data}/PG_VERSION" ]; then
    # First start: the image's init steps commit (CREATE DATABASE, our role) before any standby
    # can exist, and would wait for them forever. Only their psql sessions read PGOPTIONS.
    export PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=local"
  fi
fi

exec docker-entrypoint.sh "$@"
