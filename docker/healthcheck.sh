#!/bin/sh
# Healthcheck of both services, right for either role: the server accepts connections and,
# while it is in recovery, its WAL receiver streams. So a promoted replica stays healthy and a
# standby that lost its upstream turns unhealthy. A replica listens on the port it claimed
# (replica-entrypoint.sh writes it down); the primary on 5432.
port=5432
if [ -s /var/lib/pgsplit-replica/port ]; then port="$(cat /var/lib/pgsplit-replica/port)"; fi
pg_isready -q -h 127.0.0.1 -p "$port" -U "$POSTGRES_USER" -d "$POSTGRES_DB" || exit 1
state="$(psql -XAtq -p "$port" -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "
  SELECT CASE WHEN NOT pg_is_in_recovery() THEN 'primary'
              WHEN EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 'standby'
              ELSE 'not streaming' END")" || exit 1
[ "$state" = primary ] || [ "$state" = standby ]
