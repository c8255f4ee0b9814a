#!/usr/bin/env bash
# make test: the whole suite on PostgreSQL $PG (15 by default, PG=18), in four layers:
#  1. plain Rust unit tests and #[pg_test]s in pgrx's test instance (cargo pgrx test);
#  2. the 0.1.0 release built from git history (for $PG), loaded with data in the throwaway
#     cluster, for the upgrade test (tests/integration/tests/upgrade.rs);
#  3. the extension installed into the throwaway cluster (pg_cron and sqs_loader preloaded) and
#     the pg_regress suite in tests/pg_regress/ (golden files) run against it; a second cluster
#     without sqs_loader preloaded, for what must hold (or be refused) there;
#  4. the client-side integration tests in tests/integration/ against it, LocalStack and moto
#     (after the unit tests of tools/unmask and of the benchmark crate).
# Emulators this script starts, it stops; ones already running are reused and left running.
# TEST_FILTER=name runs only the integration tests whose names contain it.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/deps.sh test

cleanup() {
  bash scripts/pg.sh destroy it >/dev/null 2>&1 || true
  bash scripts/pg.sh destroy bare >/dev/null 2>&1 || true
  stop_started_emulators
}
trap cleanup EXIT
step "LocalStack and moto on 127.0.0.1"
start_emulators localstack moto

step "cargo pgrx test pg$PG: unit tests and #[pg_test]s"
runas=()
if [ "$(id -u)" = 0 ]; then
  ensure_pg_os_user
  pgrx_data=$RUN_DIR/pgrx-test-data-$PG
  rm -rf "$pgrx_data"; mkdir -p "$RUN_DIR"; chmod 755 "$RUN_DIR"
  install -d -o "$PG_OS_USER" "$pgrx_data"
  runas=(--runas "$PG_OS_USER" --pgdata "$pgrx_data")
fi
env $DUMMY_AWS_ENV SQS_LOADER_TEST_LOCALSTACK="http://127.0.0.1:$LOCALSTACK_PORT" cargo pgrx test "pg$PG" "${runas[@]}"

bash scripts/pg.sh destroy it
step "the 0.1.0 release, for the upgrade test"
bash scripts/upgrade_fixture.sh it "$TEST_PGPORT"

step "installing the extension"
PROFILE=dev install_extension
step "throwaway clusters on 127.0.0.1:$TEST_PGPORT, and :$BARE_PGPORT without sqs_loader preloaded"
bash scripts/pg.sh stop it
bash scripts/pg.sh start it "$TEST_PGPORT" sqs_loader_cron
bash scripts/pg.sh destroy bare
PG_PRELOAD=pg_cron bash scripts/pg.sh start bare "$BARE_PGPORT" sqs_loader_cron

step "pg_regress suite (tests/pg_regress)"
regress_out=$RUN_DIR/regress
rm -rf "$regress_out"; mkdir -p "$regress_out"
tests=$(cd tests/pg_regress/sql && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
# shellcheck disable=SC2086
if ! "$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress" \
    --bindir="$PG_BIN" --host=127.0.0.1 --port="$TEST_PGPORT" --user=postgres --dbname=regress_sqs_loader \
    --inputdir=tests/pg_regress --outputdir="$regress_out" $tests; then
  cat "$regress_out/regression.diffs" 2>/dev/null | head -100
  die "pg_regress: see $regress_out/regression.diffs"
fi

step "unit tests of the offline recovery tool and of the benchmark (no benchmark runs)"
cargo test -q -p sqs_loader_unmask -p sqs_loader_bench

step "integration tests (tests/integration/), with the offline recovery tool built"
cargo build -q -p sqs_loader_unmask
export SQS_LOADER_IT_PGPORT=$TEST_PGPORT SQS_LOADER_IT_PGBIN=$PG_BIN SQS_LOADER_IT_PGDATA=$RUN_DIR/pg-it/data \
  SQS_LOADER_IT_PG_MAJOR=$PG SQS_LOADER_IT_BARE_PGPORT=$BARE_PGPORT SQS_LOADER_IT_PG_OS_USER=$PG_OS_USER SQS_LOADER_IT_CRON_DB=sqs_loader_cron \
  SQS_LOADER_IT_CLUSTER=it SQS_LOADER_IT_PG_SERVER_ENV="$DUMMY_AWS_ENV" \
  SQS_LOADER_IT_LOCALSTACK=http://localhost:$LOCALSTACK_PORT SQS_LOADER_IT_MOTO=http://127.0.0.1:$MOTO_PORT \
  SQS_LOADER_IT_MOTO_CREDENTIALS=$RUN_DIR/moto/credentials SQS_LOADER_IT_ROOT=$ROOT SQS_LOADER_IT_RUN_DIR=$RUN_DIR
cargo test -p sqs_loader_it --test integration -- --test-threads=4 ${TEST_FILTER:-}
