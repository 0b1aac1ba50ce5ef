#!/usr/bin/env bash
# The test command: installs what it needs, then lint, types, build, and every test on real clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# --- Docker: an engine and a PostgreSQL image for the docker tests (scripts/docker-setup.sh).
# On CI (CI=true) it installs and starts what is missing, and the docker tests must run; elsewhere
# it uses an engine that already answers, else those tests skip and say why. What it started is
# stopped on exit (scripts/docker-stop.sh).
docker_env="$(mktemp)"
trap 'bash scripts/docker-stop.sh "$docker_env"; rm -f "$docker_env"' EXIT
if ! bash scripts/docker-setup.sh "$docker_env"; then
  [ "${CI:-}" != true ] || exit 1
  echo "test.sh: the Docker setup failed; the docker tests will skip" >&2
fi
set -a
. "$docker_env"
set +a
# --- end of Docker
npx biome check .
npx tsc --noEmit -p tsconfig.json
npm run --silent build -- --silent
npx vitest run "$@"
