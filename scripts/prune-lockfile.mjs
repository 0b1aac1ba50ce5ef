// The npm registry mirror of these machines lacks the prebuilt binaries of other platforms
// (@biomejs/cli-*, @rollup/rollup-*), so `npm install` writes a lock file whose optional
// dependencies point at packages it could not resolve, and `npm ci` then refuses it. This
// drops those unresolvable optional edges; run it after changing dependencies.
import { readFileSync, writeFileSync } from 'node:fs'

const path = new URL('../package-lock.json', import.meta.url)
const lock = JSON.parse(readFileSync(path, 'utf8'))
const paths = Object.keys(lock.packages)
let removed = 0
for (const entry of Object.values(lock.packages)) {
  const optional = entry.optionalDependencies
  if (optional === undefined) continue
  for (const dep of Object.keys(optional)) {
    if (!paths.some((p) => p === `node_modules/${dep}` || p.endsWith(`/node_modules/${dep}`))) {
      delete optional[dep]
      removed++
    }
  }
  if (Object.keys(optional).length === 0) delete entry.optionalDependencies
}
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`)
console.log(`prune-lockfile: removed ${removed} unresolvable optional dependencies`)
