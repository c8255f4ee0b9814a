#!/usr/bin/env bash
# A throwaway PostgreSQL cluster (major $PG) on 127.0.0.1, run as $PG_OS_USER, with pg_cron and
# sqs_loader preloaded and the local emulators in sqs_loader.allowed_hosts.
#   pg.sh start NAME PORT DBNAME   initdb if needed, start, create DBNAME (pg_cron lives there)
#   pg.sh stop NAME                fast shutdown (no error when not running)
#   pg.sh destroy NAME             stop and remove its directory
# PG_SERVER_ENV="K=V ..." is the server's environment (default: the dummy AWS credentials);
# PG_PRELOAD the shared_preload_libraries (default pg_cron,sqs_loader); PG_CONF_EXTRA more
# postgresql.conf lines (one per line), applied at every start like PG_PRELOAD.
# The superuser is `postgres`; local and 127.0.0.1 connections are trusted (loopback only).
source "$(dirname "$0")/lib.sh"

cmd=${1:-}; name=${2:-}
[ -n "$cmd" ] && [ -n "$name" ] || die "usage: pg.sh start|stop|destroy NAME [PORT DBNAME]"
dir=$RUN_DIR/pg-$name
data=$dir/data; sock=$dir/sock; log=$dir/server.log

# By the postmaster's pid, not pg_ctl: the cluster may be of the other major (make demo, then
# make demo PG=18), whose pg_ctl refuses this major's control file.
pid() { [ -f "$data/postmaster.pid" ] && head -1 "$data/postmaster.pid"; }
running() { local p; p=$(pid) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
# halt SIGNAL: INT is a fast shutdown, QUIT an immediate one.
halt() {
  local p; p=$(pid) || return 0
  running || return 0
  kill "-$1" "$p"
  wait_for 60 bash -c "! kill -0 $p" || die "postgres (pid $p) did not stop"
}

case "$cmd" in
start)
  port=${3:?port}; db=${4:?dbname}
  ensure_pg_os_user
  mkdir -p "$RUN_DIR"; chmod 755 "$RUN_DIR"
  if [ -f "$data/PG_VERSION" ] && [ "$(cat "$data/PG_VERSION")" != "$PG" ]; then
    echo "cluster $name holds PostgreSQL $(cat "$data/PG_VERSION") data: re-created for PostgreSQL $PG" >&2
    halt INT; rm -rf "$dir"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$dir"
    install -d -o "$PG_OS_USER" -m 700 "$dir" "$data" "$sock"
    chmod 755 "$dir" "$sock"
    as_pg_user "$PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log"; die "initdb failed"; }
    as_pg_user tee -a "$data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
cron.database_name = '$db'
cron.host = '127.0.0.1'
max_worker_processes = 32
log_line_prefix = '%m [%p] %q%u@%d '
sqs_loader.allowed_hosts = '$LOCAL_ALLOWED_HOSTS'
include_if_exists = 'preload.conf'
CONF
  fi
  if ! running; then
    # Rewritten at every start, so a restart can change what is preloaded.
    printf "shared_preload_libraries = '%s'\n%s\n" "${PG_PRELOAD-pg_cron,sqs_loader}" "${PG_CONF_EXTRA:-}" \
      | as_pg_user tee "$data/preload.conf" >/dev/null
    # shellcheck disable=SC2086
    as_pg_user env ${PG_SERVER_ENV-$DUMMY_AWS_ENV} "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null \
      || { tail -20 "$log"; die "postgres did not start"; }
  fi
  exists=$(psql_on "$port" postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'")
  [ "$exists" = 1 ] || psql_on "$port" postgres -q -c "CREATE DATABASE \"$db\""
  ;;
stop)
  halt INT
  ;;
destroy)
  halt QUIT || true
  rm -rf "$dir"
  ;;
*) die "unknown command $cmd" ;;
esac
