#!/usr/bin/env bash
# Stops the Docker engine scripts/docker-setup.sh started (by its PID, from ENV_FILE), after
# removing what the tests may have left behind on it: containers, networks and volumes of
# pgsplit's docker backend (testcontainers labels) or of a Compose project of the tests
# (pgsplit-test-*). Images stay, so the next run reuses them. An engine this machine already
# had is left alone, and so is everything on it (the tests remove their own).
#
#   bash scripts/docker-stop.sh ENV_FILE
set -uo pipefail

env_file="${1:?usage: docker-stop.sh ENV_FILE}"
[ -f "$env_file" ] || exit 0
log() { echo "docker-stop: $*" >&2; }
pid="$(sed -n 's/^PGSPLIT_DOCKERD_PID=//p' "$env_file" | tail -n 1)"

[ -n "$pid" ] || exit 0
if timeout 5 docker version >/dev/null 2>&1; then
  leftovers() {
    {
      docker ps -aq --filter label=org.pgsplit.cluster
      docker ps -a --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | awk '$2 ~ /^pgsplit-test-/ {print $1}'
    } | sort -u
  }
  ids="$(leftovers)"
  if [ -n "$ids" ]; then
    log "removing containers the tests left: $(echo "$ids" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    timeout 60 docker rm -fv $ids >/dev/null 2>&1 || true
  fi
  for kind in network volume; do
    ids="$(docker $kind ls -q --filter label=org.testcontainers=true 2>/dev/null
      docker $kind ls --format '{{.Name}} {{.Label "com.docker.compose.project"}}' 2>/dev/null | awk '$2 ~ /^pgsplit-test-/ {print $1}')"
    if [ -n "$ids" ]; then
      log "removing ${kind}s the tests left: $(echo "$ids" | tr '\n' ' ')"
      # shellcheck disable=SC2086
      timeout 60 docker $kind rm $ids >/dev/null 2>&1 || true
    fi
  done
fi

if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  # dockerd stops its containers (none should be left) and containerd; bounded.
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "dockerd (PID $pid) still running after 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "dockerd (PID $pid) stopped"
fi
