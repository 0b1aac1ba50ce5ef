#!/usr/bin/env bash
# The test command: installs what it needs, then lint, types, build, and every test on real clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx biome check .
npx tsc --noEmit -p tsconfig.json
npm run --silent build -- --silent
npx vitest run "$@"
