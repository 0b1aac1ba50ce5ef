#!/usr/bin/env bash
# `npm run demo`: installs what it needs, then runs the example app's story on a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx tsx examples/fastify-app/demo.ts "$@"
