#!/usr/bin/env bash
# `npm run bench [-- --quick] [-- --only=overhead,pgpool]`: the benchmarks on a local cluster.
# Installs what they need (npm deps, PostgreSQL, and pgpool-II for the proxy comparison),
# builds dist/, then runs bench/run.ts, which prints a table and writes bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# Installs Debian packages, updating the package lists first only when an install fails without.
apt_install() {
  $SUDO apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

have_pgpool() {
  command -v pgpool >/dev/null 2>&1 || [ -x /usr/sbin/pgpool ]
}
if ! have_pgpool; then
  echo "bench: pgpool-II not found, installing the pgpool2 package with apt-get" >&2
  if apt_install pgpool2; then
    # The package may start a pgpool service on 5433; the benchmark starts its own.
    $SUDO bash -c 'command -v service >/dev/null && service pgpool2 stop >/dev/null 2>&1' || true
  else
    echo "bench: NOTE: could not install pgpool2; the pgpool-II comparison will be skipped" >&2
  fi
fi

# valgrind counts the client's instructions per query (bench/instructions.ts); skipped without it.
if [ ! -x /usr/bin/valgrind ]; then
  echo "bench: valgrind not found, installing it with apt-get" >&2
  apt_install valgrind || echo "bench: NOTE: could not install valgrind; the instruction counts will be skipped" >&2
fi

# Benchmark the package as users get it (dist/); bench/lib/pgsplit.ts falls back to the sources
# through tsx (slower: esbuild's keepNames) when dist/ is missing or older than src/.
if ! npx tsup --silent; then
  echo "bench: NOTE: the build failed; benchmarking the TypeScript sources through tsx" >&2
fi

exec npx tsx bench/run.ts "$@"
