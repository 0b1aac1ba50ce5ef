/**
 * The file part of a base backup without `pg_basebackup`: a copy of a running server's data
 * directory, taken between `pg_backup_start` and `pg_backup_stop`, leaving out what
 * pg_basebackup leaves out (the server's own runtime files, WAL, slots, temporary files). WAL
 * replay from the backup's start point, streamed from the source, makes the copy consistent.
 */
import type { Dirent } from 'node:fs'
import { chown, constants, copyFile, mkdir, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { TestClusterError } from './errors.js'
import type { OsUser } from './process-utils.js'

/** Files never copied, wherever they are (as pg_basebackup: `src/backend/backup/basebackup.c`). */
const SKIPPED_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'pg_internal.init',
  'backup_label',
  'tablespace_map',
  'standby.signal',
  'recovery.signal',
  'postgresql.auto.conf.tmp',
  'current_logfiles.tmp',
])

/** Top-level directories copied empty: runtime state of the source server, not data. */
const EMPTIED_DIRS = new Set([
  'pg_stat_tmp',
  'pg_replslot',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_subtrans',
])

/**
 * Copies data directory `from` to `to` (which must not exist), owned by `owner` when given (this
 * process is root, the servers run as `owner`). `pg_wal` keeps its subdirectories, empty: the
 * WAL comes by streaming. Files that vanish while copying (temporary files) are skipped, as
 * pg_basebackup does.
 */
export async function copyDataDir(from: string, to: string, owner: OsUser | undefined): Promise<void> {
  const tablespaces = await readdir(join(from, 'pg_tblspc')).catch(() => [])
  if (tablespaces.length > 0) {
    throw new TestClusterError(
      `pgsplit/testing: ${from} has tablespaces (pg_tblspc: ${tablespaces.join(', ')}); a copy without pg_basebackup cannot relocate them`,
    )
  }
  await copyDir(from, to, owner, 0o700, 'copy')
}

type Mode = 'copy' | 'dirs-only' | 'empty'

async function copyDir(
  from: string,
  to: string,
  owner: OsUser | undefined,
  dirMode: number,
  mode: Mode,
): Promise<void> {
  await mkdir(to, { mode: dirMode })
  if (owner) await chown(to, owner.uid, owner.gid)
  if (mode === 'empty') return
  let entries: Dirent[]
  try {
    entries = await readdir(from, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  // One directory's files at once: base/<oid> holds hundreds of small files.
  await Promise.all(
    entries.map(async (e) => {
      const src = join(from, e.name)
      const dst = join(to, e.name)
      if (e.isDirectory()) {
        const st = await stat(src).catch(() => undefined)
        if (!st) return
        await copyDir(src, dst, owner, st.mode & 0o7777, childMode(e.name, mode))
        return
      }
      if (mode === 'dirs-only' || SKIPPED_FILES.has(e.name) || e.name.startsWith('pgsql_tmp')) return
      if (!e.isFile()) {
        throw new TestClusterError(
          `pgsplit/testing: cannot copy ${src}: neither a file nor a directory (a symlink or socket)`,
        )
      }
      try {
        // copyFile keeps the permission bits (the owner is set below); a copy-on-write clone where
        // the file system has them (APFS, btrfs, XFS), else a plain copy.
        await copyFile(src, dst, constants.COPYFILE_FICLONE)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
        throw err
      }
      if (owner) await chown(dst, owner.uid, owner.gid)
    }),
  )
}

/** How the subdirectory `name` of a directory copied as `parent` is copied. */
function childMode(name: string, parent: Mode): Mode {
  if (parent === 'dirs-only') return 'dirs-only'
  if (name === 'pg_wal') return 'dirs-only'
  if (EMPTIED_DIRS.has(name) || name.startsWith('pgsql_tmp')) return 'empty'
  return 'copy'
}
