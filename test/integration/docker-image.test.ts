import { randomBytes } from 'node:crypto'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dockerUnavailableReason } from '../../src/testing/docker-backend.js'
import { run, runOk, skipUnlessCi, testImage } from '../support/docker.js'
import { eventually } from '../support/reliability.js'

// The image the docker tests run (the stand-in from test/docker/postgres where no registry
// answers, else the official one) keeps the official image's documented contract, which
// docker/compose.yml and the docker backend rely on.

const image = testImage()
const skip = skipUnlessCi('docker-image.test.ts', await dockerUnavailableReason(undefined, image))

describe.skipIf(skip !== undefined)(
  skip ? `the postgres image (skipped: ${skip})` : `the postgres image ${image}`,
  () => {
    const name = `pgsplit-test-image-${randomBytes(4).toString('hex')}`
    const initDir = mkdtempSync(join(tmpdir(), 'pgsplit-initdb-'))
    let port = 0

    beforeAll(async () => {
      // Scripts of /docker-entrypoint-initdb.d, in name order: SQL, an executable script, a sourced one.
      writeFileSync(join(initDir, '10-table.sql'), 'CREATE TABLE seeded (v text);\n')
      writeFileSync(
        join(initDir, '20-run.sh'),
        '#!/bin/sh\nset -e\npsql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "INSERT INTO seeded VALUES (\'run as \' || current_user)"\n',
      )
      chmodSync(join(initDir, '20-run.sh'), 0o755)
      writeFileSync(
        join(initDir, '30-sourced.sh'),
        'psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "INSERT INTO seeded VALUES (\'sourced\')"\n',
      )
      chmodSync(join(initDir, '30-sourced.sh'), 0o644)
      chmodSync(initDir, 0o755)
      await runOk(
        'docker',
        [
          'run',
          '-d',
          '--name',
          name,
          '--label',
          'org.pgsplit.cluster=image-test',
          '-e',
          'POSTGRES_USER=owner',
          '-e',
          'POSTGRES_PASSWORD=s3cret',
          '-e',
          'POSTGRES_DB=shop',
          '-e',
          'POSTGRES_INITDB_ARGS=--data-checksums',
          '-v',
          `${initDir}:/docker-entrypoint-initdb.d:ro`,
          '-p',
          '127.0.0.1::5432',
          image,
          'postgres',
          '-c',
          'max_connections=42',
        ],
        { timeoutMs: 120_000 },
      )
      const mapped = await runOk('docker', ['port', name, '5432/tcp'])
      port = Number(mapped.trim().split('\n')[0]!.split(':').at(-1))
    }, 180_000)

    afterAll(async () => {
      await run('docker', ['rm', '-fv', name], { timeoutMs: 60_000 })
      rmSync(initDir, { recursive: true, force: true })
    }, 90_000)

    const sql = async <R extends pg.QueryResultRow>(
      text: string,
      user = 'owner',
      password = 's3cret',
    ): Promise<R[]> => {
      const client = new pg.Client({
        host: '127.0.0.1',
        port,
        user,
        password,
        database: 'shop',
        connectionTimeoutMillis: 5_000,
      })
      await client.connect()
      try {
        return (await client.query<R>(text)).rows
      } finally {
        await client.end()
      }
    }

    it('initializes PGDATA with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, runs the init scripts in order, then postgres -c ...', async () => {
      const [settings] = await eventually(
        () =>
          sql<{ db: string; su: boolean; max: string; checksums: string; data: string }>(
            `SELECT current_database() AS db, rolsuper AS su, current_setting('max_connections') AS max,
                  current_setting('data_checksums') AS checksums, current_setting('data_directory') AS data
             FROM pg_roles WHERE rolname = current_user`,
          ),
        120_000,
        500,
      )
      expect(settings).toEqual({
        db: 'shop',
        su: true,
        max: '42',
        checksums: 'on',
        data: '/var/lib/postgresql/data',
      })
      expect((await sql<{ v: string }>('SELECT v FROM seeded ORDER BY v')).map((r) => r.v)).toEqual([
        'run as owner',
        'sourced',
      ])
    })

    it('asks for the password over TCP and runs the server as the postgres user', async () => {
      await expect(sql('SELECT 1', 'owner', 'wrong')).rejects.toMatchObject({ code: '28P01' })
      const ps = await runOk('docker', [
        'exec',
        name,
        'sh',
        '-c',
        'id -un $(cat /proc/1/status | sed -n "s/^Uid:\\s*\\([0-9]*\\).*/\\1/p")',
      ])
      expect(ps.trim()).toBe('postgres')
      expect((await runOk('docker', ['exec', name, 'id', '-u', 'postgres'])).trim()).toBe('999')
    })

    it('refuses to initialize without POSTGRES_PASSWORD, saying so', async () => {
      const r = await run('docker', ['run', '--rm', '--label', 'org.pgsplit.cluster=image-test', image], {
        timeoutMs: 120_000,
      })
      expect(r.code).not.toBe(0)
      expect(r.stderr + r.stdout).toMatch(/POSTGRES_PASSWORD/)
    }, 150_000)
  },
)
