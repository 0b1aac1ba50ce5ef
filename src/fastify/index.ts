/**
 * `pgsplit/fastify`: the fastify plugin.
 *
 * ```ts
 * import Fastify from 'fastify'
 * import pgsplit from 'pgsplit/fastify'
 *
 * const app = Fastify()
 * await app.register(pgsplit, { primary: PRIMARY_URL, replicas: [REPLICA_URL] })
 * app.get('/clients', async () => (await app.db.query('SELECT * FROM clients')).rows)
 * ```
 */
import { pgsplitFastify } from './plugin.js'

export {
  DEFAULT_TOKEN_HEADER,
  type PgsplitPluginClusterOptions,
  type PgsplitPluginConfigOptions,
  type PgsplitPluginOptions,
  type PgsplitPluginSettings,
  parseTokenHeader,
  pgsplitFastify,
} from './plugin.js'

export default pgsplitFastify
