#!/usr/bin/env bash
# Prints the PostgreSQL image the docker tests use, after making sure the engine has it:
#
# 1. $PGSPLIT_DOCKER_IMAGE when set (present, or pulled);
# 2. else the official postgres:16-alpine, when present or pullable (a registry answers);
# 3. else pgsplit-test/postgres:15, built from test/docker/postgres on Debian's postgresql-15
#    package, FROM debian:bookworm-slim, which (when it cannot be pulled either) is made with
#    debootstrap from the Debian mirror apt uses here. Built once per machine: the tag carries
#    a hash of the build files, and a later run finds it.
#
#   image="$(bash scripts/docker-images.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "docker-images: $*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }
# A registry that cannot be reached fails fast ("no such host"); one that hangs is cut off.
pull() { timeout "${PGSPLIT_DOCKER_PULL_TIMEOUT_S:-120}" docker pull -q "$1" >/dev/null 2>&1; }

if [ -n "${PGSPLIT_DOCKER_IMAGE:-}" ]; then
  if have "$PGSPLIT_DOCKER_IMAGE" || pull "$PGSPLIT_DOCKER_IMAGE"; then
    echo "$PGSPLIT_DOCKER_IMAGE"
    exit 0
  fi
  log "PGSPLIT_DOCKER_IMAGE=$PGSPLIT_DOCKER_IMAGE is neither on this engine nor pullable"
  exit 1
fi

official="postgres:16-alpine"
if have "$official"; then
  echo "$official"
  exit 0
fi
t0=$SECONDS
if pull "$official"; then
  log "pulled $official in $((SECONDS - t0)) s"
  echo "$official"
  exit 0
fi
build_dir="test/docker/postgres"
hash="$(cat "$build_dir"/* | sha256sum | cut -c 1-12)"
image="pgsplit-test/postgres:15-$hash"
if have "$image"; then
  log "$official cannot be pulled here: using $image, built earlier from $build_dir"
  echo "$image"
  exit 0
fi
log "$official cannot be pulled here ($((SECONDS - t0)) s): building $image from $build_dir"

base="debian:bookworm-slim"
if ! have "$base" && ! pull "$base"; then
  command -v debootstrap >/dev/null 2>&1 || {
    log "$base cannot be pulled and debootstrap is missing (apt-get install debootstrap)"
    exit 1
  }
  # The Debian mirror apt is configured with (deb822 .sources or one-line sources.list).
  mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *\([^ ]*\).*/\1/p' | grep -v security | head -n 1 || true)"
  [ -n "$mirror" ] || mirror="$(sed -n 's/^deb  *\(\[[^]]*\] *\)\?\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 || true)"
  [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
  root="$(mktemp -d "${TMPDIR:-/tmp}/pgsplit-debootstrap.XXXXXX")"
  trap 'rm -rf "$root" "$root.log"' EXIT
  t1=$SECONDS
  log "debootstrap --variant=minbase bookworm from $mirror"
  if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
    log "debootstrap failed; last lines:"
    tail -n 20 "$root.log" >&2
    exit 1
  fi
  rm -f "$root.log"
  # What the official slim image leaves out too: apt's lists and caches.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | docker import - "$base" >/dev/null
  log "made $base with debootstrap in $((SECONDS - t1)) s"
fi

t2=$SECONDS
build_log="${TMPDIR:-/tmp}/pgsplit-docker-build.log"
if ! docker build -t "$image" --label "org.pgsplit.build-hash=$hash" "$build_dir" >"$build_log" 2>&1; then
  log "docker build of $image failed; last lines:"
  tail -n 30 "$build_log" >&2
  exit 1
fi
log "built $image in $((SECONDS - t2)) s"
# Builds of earlier versions of test/docker/postgres are of no more use.
for old in $(docker images --format '{{.Repository}}:{{.Tag}}' pgsplit-test/postgres); do
  [ "$old" = "$image" ] || docker rmi "$old" >/dev/null 2>&1 || true
done
echo "$image"
