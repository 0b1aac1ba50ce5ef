#!/usr/bin/env bash
# Makes the docker tests runnable here: a Docker engine that answers and a PostgreSQL image.
#
#   bash scripts/docker-setup.sh ENV_FILE     # then: set -a; . ENV_FILE; set +a
#   bash scripts/docker-stop.sh ENV_FILE      # at the end: stops what this script started
#
# 1. No engine answers GET /_ping: on CI (CI=true) or with PGSPLIT_DOCKER_INSTALL=1, installs
#    docker.io, docker-compose and debootstrap with apt-get when missing and starts dockerd in
#    the background (its PID goes into ENV_FILE). Elsewhere it leaves the machine alone: the
#    docker tests then skip and say why.
# 2. The image: scripts/docker-images.sh (the official one when it can be had, else one built
#    from test/docker once per machine).
# ENV_FILE receives PGSPLIT_TEST_DOCKER_IMAGE (the docker test files use it; not
# PGSPLIT_DOCKER_IMAGE, so that `backend: 'auto'` in the other tests still chooses as it would on
# this machine), TESTCONTAINERS_RYUK_DISABLED (no registry, no Ryuk)
# and, when this script started the engine, PGSPLIT_DOCKERD_PID. Exit status: 0 when the engine
# answers and the image exists, 0 with nothing written when Docker is not wanted here, 1 on
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."

env_file="${1:?usage: docker-setup.sh ENV_FILE}"
: >"$env_file"
log() { echo "docker-setup: $*" >&2; }
want_install() { [ "${CI:-}" = true ] || [ "${PGSPLIT_DOCKER_INSTALL:-}" = 1 ]; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# GET /_ping on the engine the docker CLI would use; bounded by `timeout`.
engine_answers() {
  timeout 5 docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

t0=$SECONDS
if ! engine_answers; then
  if ! want_install; then
    log "no Docker engine answers; the docker tests will skip (CI=true or PGSPLIT_DOCKER_INSTALL=1 installs and starts one)"
    exit 0
  fi
  missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "installed in $((SECONDS - t0)) s"
  fi
  # Without systemd nothing starts the daemon: start it here, stop it in docker-stop.sh.
  log_file="${TMPDIR:-/tmp}/pgsplit-dockerd.log"
  log "starting dockerd (log: $log_file)"
  # setsid: its own process group, so an interrupted test run's signals do not reach it first.
  $SUDO setsid dockerd >"$log_file" 2>&1 </dev/null &
  pid=$!
  echo "PGSPLIT_DOCKERD_PID=$pid" >>"$env_file"
  t1=$SECONDS
  for _ in $(seq 1 120); do
    engine_answers && break
    if ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited; last lines of $log_file:"
      tail -n 20 "$log_file" >&2
      exit 1
    fi
    sleep 0.5
  done
  if ! engine_answers; then
    log "dockerd (PID $pid) did not answer within 60 s; last lines of $log_file:"
    tail -n 20 "$log_file" >&2
    exit 1
  fi
  log "dockerd (PID $pid) answers after $((SECONDS - t1)) s"
fi

image="$(bash scripts/docker-images.sh)"
{
  echo "PGSPLIT_TEST_DOCKER_IMAGE=$image"
  # testcontainers pulls its Ryuk image first unless told not to; the backend removes its own
  # containers in destroy(), and the tests check that nothing is left.
  if ! docker image inspect "${RYUK_CONTAINER_IMAGE:-testcontainers/ryuk:0.14.0}" >/dev/null 2>&1; then
    echo "TESTCONTAINERS_RYUK_DISABLED=true"
  fi
} >>"$env_file"
log "ready in $((SECONDS - t0)) s: $(tr '\n' ' ' <"$env_file")"
