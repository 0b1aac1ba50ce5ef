/**
 * What the docker test files share: whether they may skip (never on CI), the image they use,
 * and bounded runs of the docker / compose command-line tools.
 */
import { execFile } from 'node:child_process'
import { dockerImage } from '../../src/testing/docker-backend.js'

/**
 * The image the docker tests use: `PGSPLIT_TEST_DOCKER_IMAGE` (what scripts/docker-setup.sh
 * found or built), else the docker backend's own choice (`PGSPLIT_DOCKER_IMAGE`, else
 * postgres:16-alpine).
 */
export const testImage = (): string => process.env.PGSPLIT_TEST_DOCKER_IMAGE?.trim() || dockerImage()

/**
 * The `skip` of a docker test block: `reason` elsewhere (printed), but on CI (`CI=true`) a
 * missing engine fails the file instead: the docker tests must run there.
 */
export function skipUnlessCi(file: string, reason: string | undefined): string | undefined {
  if (reason === undefined) return undefined
  if (process.env.CI === 'true') {
    throw new Error(
      `${file}: CI=true and the docker tests cannot run: ${reason.replace(/\.$/, '')}. ` +
        'scripts/docker-setup.sh installs and starts an engine and builds the image; see its output.',
    )
  }
  console.log(`${file}: skipped: ${reason}`)
  return reason
}

export interface RunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs `cmd args`, bounded by `timeoutMs` (killed after it); never throws on a non-zero exit. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      {
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        timeout: opts.timeoutMs ?? 60_000,
        killSignal: 'SIGKILL',
        maxBuffer: 16 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0
        resolve({
          code,
          stdout: String(stdout),
          stderr: String(stderr) + (err && code === -1 ? err.message : ''),
        })
      },
    )
  })
}

/** `run`, but a non-zero exit throws with the command and the end of its output. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<string> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) {
    const tail = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-25).join('\n')
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code}:\n${tail}`)
  }
  return r.stdout
}
