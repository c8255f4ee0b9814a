#!/usr/bin/env bash
# The test suite, in three layers:
#  1. plain Rust unit tests and #[pg_test]s in pgrx's test instance (cargo pgrx test);
#  2. the extension installed into a throwaway cluster (pg_cron preloaded) and the client-side
#     integration tests in pgrx-tests/ against it, LocalStack and moto (signature checking).
# Emulators this script starts, it stops; ones already running are reused and left running.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/deps.sh test

cleanup() {
  bash scripts/pg.sh destroy it >/dev/null 2>&1 || true
  stop_started_emulators
}
trap cleanup EXIT
step "LocalStack and moto on 127.0.0.1"
start_emulators localstack moto

step "cargo pgrx test: unit tests and #[pg_test]s"
runas=()
if [ "$(id -u)" = 0 ]; then
  id -u "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$PG_OS_USER"
  pgrx_data=$RUN_DIR/pgrx-test-data
  rm -rf "$pgrx_data"; mkdir -p "$RUN_DIR"; chmod 755 "$RUN_DIR"
  install -d -o "$PG_OS_USER" "$pgrx_data"
  runas=(--runas "$PG_OS_USER" --pgdata "$pgrx_data")
fi
SQS_LOADER_TEST_LOCALSTACK="http://127.0.0.1:$LOCALSTACK_PORT" \
  cargo pgrx test "pg$PG_MAJOR" "${runas[@]}"

step "installing the extension"
sudo_flag=(); [ "$(id -u)" = 0 ] || sudo_flag=(--sudo)
cargo pgrx install --pg-config "$PG_CONFIG" "${sudo_flag[@]}" >/dev/null

step "throwaway cluster on 127.0.0.1:$TEST_PGPORT"
bash scripts/pg.sh destroy it
# LocalStack accepts any credentials: the server process gets dummy ones from its environment.
server_env="AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
PG_SERVER_ENV=$server_env bash scripts/pg.sh start it "$TEST_PGPORT" sqs_loader_cron

step "integration tests (pgrx-tests/)"
export SQS_LOADER_IT_PGPORT=$TEST_PGPORT SQS_LOADER_IT_PGBIN=$PG_BIN SQS_LOADER_IT_PGDATA=$RUN_DIR/pg-it/data \
  SQS_LOADER_IT_PG_OS_USER=$PG_OS_USER SQS_LOADER_IT_CRON_DB=sqs_loader_cron \
  SQS_LOADER_IT_CLUSTER=it SQS_LOADER_IT_PG_SERVER_ENV="$server_env" \
  SQS_LOADER_IT_LOCALSTACK=http://localhost:$LOCALSTACK_PORT SQS_LOADER_IT_MOTO=http://127.0.0.1:$MOTO_PORT \
  SQS_LOADER_IT_MOTO_CREDENTIALS=$RUN_DIR/moto/credentials SQS_LOADER_IT_ROOT=$ROOT
cargo test -p sqs_loader_it --test integration -- --test-threads=4 ${TEST_FILTER:-}
