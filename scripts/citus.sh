#!/usr/bin/env bash
# A local Citus cluster on 127.0.0.1: a coordinator ($CITUS_PGPORT) and two workers
# ($CITUS_WORKER_PORTS), separate PostgreSQL 15 instances made by scripts/pg.sh (clusters
# citus-c, citus-w1, citus-w2) with citus and pg_cron preloaded (and sqs_loader on the
# coordinator, the only node where the extension is created; see docs/production.md#citus).
#   citus.sh start            build Citus if missing (deps.sh citus), start the three nodes
#   citus.sh createdb DB      DB on every node with the citus extension, the workers registered
#   citus.sh dropdb DB        drop DB on every node
#   citus.sh restart-worker N fast restart of worker N (1 or 2)
#   citus.sh stop | destroy   stop the nodes | stop them and remove their data
# The coordinator's database for pg_cron is sqs_loader_cron (created by start, like any DB).
source "$(dirname "$0")/lib.sh"
[ "$PG" = 15 ] || die "the Citus cluster runs PostgreSQL 15 (Citus 12.1)"
cmd=${1:-}
read -r -a workers <<<"$CITUS_WORKER_PORTS"
# Citus commits a transaction that wrote on several nodes with two-phase commit: workers need
# prepared transactions. Every node gets the same settings.
CONF="max_prepared_transactions = 100"
CRON_DB=sqs_loader_cron

node() { # node NAME PORT PRELOAD
  PG_PRELOAD=$3 PG_CONF_EXTRA=$CONF bash "$ROOT/scripts/pg.sh" start "$1" "$2" "$CRON_DB"
}
on_every_node() { # on_every_node DB SQL
  local p
  for p in "$CITUS_PGPORT" "${workers[@]}"; do psql_on "$p" "$1" -v ON_ERROR_STOP=1 -q -c "$2"; done
}

case "$cmd" in
start)
  bash "$ROOT/scripts/deps.sh" citus
  node citus-c "$CITUS_PGPORT" citus,pg_cron,sqs_loader
  node citus-w1 "${workers[0]}" citus,pg_cron
  node citus-w2 "${workers[1]}" citus,pg_cron
  "$0" createdb "$CRON_DB"
  ;;
createdb)
  db=${2:?database}
  for p in "$CITUS_PGPORT" "${workers[@]}"; do
    [ "$(psql_on "$p" postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ] \
      || psql_on "$p" postgres -q -c "CREATE DATABASE \"$db\""
  done
  on_every_node "$db" "CREATE EXTENSION IF NOT EXISTS citus"
  psql_on "$CITUS_PGPORT" "$db" -v ON_ERROR_STOP=1 -q -At -c "SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_PGPORT)" >/dev/null
  for p in "${workers[@]}"; do
    psql_on "$CITUS_PGPORT" "$db" -v ON_ERROR_STOP=1 -q -At -c "SELECT citus_add_node('127.0.0.1', $p)" >/dev/null
  done
  ;;
dropdb)
  db=${2:?database}
  for p in "$CITUS_PGPORT" "${workers[@]}"; do
    psql_on "$p" postgres -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  done
  ;;
restart-worker)
  n=${2:?worker number}
  bash "$ROOT/scripts/pg.sh" stop "citus-w$n"
  node "citus-w$n" "${workers[$((n - 1))]}" citus,pg_cron
  ;;
stop | destroy)
  for n in citus-w2 citus-w1 citus-c; do bash "$ROOT/scripts/pg.sh" "$cmd" "$n"; done
  ;;
*) die "usage: citus.sh start|createdb DB|dropdb DB|restart-worker N|stop|destroy" ;;
esac
