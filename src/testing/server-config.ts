/**
 * Text of the configuration files the local backend writes into each node's data directory.
 * Kept apart from the process handling so the rules (what is shared, what is per node) are in one place.
 */

/** Name of the per-node include file; `postgresql.conf` ends with `include_if_exists` of it. */
export const NODE_CONF_FILE = 'pgsplit-node.conf'

export type SettingValue = string | number | boolean

/** A value for postgresql.conf / postgresql.auto.conf: strings quoted, booleans on/off. */
export function confValue(value: SettingValue): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off'
  if (typeof value === 'number') return String(value)
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`
}

/**
 * Settings every node shares (they are copied to each standby by pg_basebackup and pg_rewind).
 * Chosen for tests: fsync off for speed (synchronous_commit stays on, so commits still wait for
 * WAL and sync standbys), wal_log_hints for pg_rewind, enough senders/slots/connections for
 * several standbys and a pooler, short retry intervals so standbys reconnect fast after a failover.
 */
export function sharedSettings(extra: Readonly<Record<string, SettingValue>>): string {
  const settings: Record<string, SettingValue> = {
    listen_addresses: '127.0.0.1',
    fsync: false,
    synchronous_commit: 'on',
    full_page_writes: true,
    wal_level: 'replica',
    max_wal_senders: 20,
    max_replication_slots: 20,
    wal_keep_size: '128MB',
    hot_standby: true,
    hot_standby_feedback: true,
    wal_log_hints: true,
    wal_receiver_status_interval: '1s',
    wal_retrieve_retry_interval: '500ms',
    max_connections: 120,
    ...extra,
  }
  for (const key of Object.keys(settings)) {
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key))
      throw new Error(`pgsplit/testing: invalid setting name ${JSON.stringify(key)}`)
  }
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${confValue(v)}`)
  return [
    '',
    '# --- pgsplit/testing ---',
    ...lines,
    '# Port, socket directory and name of this node; rewritten before every start because',
    "# pg_basebackup and pg_rewind copy the source node's files, this one included.",
    `include_if_exists = '${NODE_CONF_FILE}'`,
    '',
  ].join('\n')
}

/** Content of the per-node include file. */
export function nodeSettings(node: { name: string; port: number; socketDir: string }): string {
  return [
    `port = ${node.port}`,
    `unix_socket_directories = ${confValue(node.socketDir)}`,
    `cluster_name = ${confValue(node.name)}`,
    '',
  ].join('\n')
}

/**
 * pg_hba.conf: trust over the Unix socket (only the data directory's owner can reach it), a
 * password (SCRAM) over TCP from 127.0.0.1, for normal and replication connections.
 */
export function hbaConf(): string {
  return [
    '# pgsplit/testing',
    'local   all           all                 trust',
    'local   replication   all                 trust',
    'host    all           all   127.0.0.1/32  scram-sha-256',
    'host    replication   all   127.0.0.1/32  scram-sha-256',
    '',
  ].join('\n')
}

/** One line of a libpq password file matching any host, port and database for `user`. */
export function pgpassLine(user: string, password: string): string {
  const esc = (s: string): string => s.replaceAll('\\', '\\\\').replaceAll(':', '\\:')
  return `*:*:*:${esc(user)}:${esc(password)}\n`
}

/** A libpq key/value connection string; values quoted. The password stays in the passfile. */
export function conninfo(params: Readonly<Record<string, string | number>>): string {
  return Object.entries(params)
    .map(([k, v]) => `${k}='${String(v).replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`)
    .join(' ')
}

/**
 * postgresql.auto.conf with `settings` replacing any earlier lines of the same names (the file
 * may come from another node, through pg_basebackup or pg_rewind).
 */
export function withAutoSettings(current: string, settings: Readonly<Record<string, SettingValue>>): string {
  const names = new Set(Object.keys(settings))
  const kept = current.split('\n').filter((line) => {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?/.exec(line)
    return !(m?.[1] && names.has(m[1]))
  })
  while (kept.length > 0 && kept[kept.length - 1]!.trim() === '') kept.pop()
  const added = Object.entries(settings).map(([k, v]) => `${k} = ${confValue(v)}`)
  return `${[...kept, ...added].join('\n')}\n`
}

/** `ANY n (a, b, c)`: a quorum of n among the named standbys (their application_name). */
export function synchronousStandbyNames(count: number, names: readonly string[]): string {
  if (count <= 0 || names.length === 0) return ''
  return `ANY ${count} (${names.map((n) => `"${n}"`).join(', ')})`
}
