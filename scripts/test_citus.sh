#!/usr/bin/env bash
# make test-citus: the Citus suite (tests/integration/tests/citus.rs) on a local Citus cluster
# (scripts/citus.sh: a coordinator and two workers, PostgreSQL 15), with LocalStack. Builds
# Citus from ../shared/vendor/ when it is missing. The cluster is made fresh and destroyed at
# the end; an emulator already running is reused and left running.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
[ "$PG" = 15 ] || die "make test-citus runs on PostgreSQL 15 (Citus 12.1)"
bash scripts/deps.sh citus

cleanup() {
  bash scripts/citus.sh destroy >/dev/null 2>&1 || true
  stop_started_emulators
}
trap cleanup EXIT
step "LocalStack on 127.0.0.1"
start_emulators localstack

step "installing the extension"
PROFILE=dev install_extension
step "Citus cluster: coordinator 127.0.0.1:$CITUS_PGPORT, workers on $CITUS_WORKER_PORTS"
bash scripts/citus.sh destroy
bash scripts/citus.sh start

step "the Citus suite (tests/integration/tests/citus.rs), with the offline recovery tool built"
cargo build -q -p sqs_loader_unmask
# The harness of the integration tests, pointed at the coordinator.
export SQS_LOADER_IT_PGPORT=$CITUS_PGPORT SQS_LOADER_IT_PGBIN=$PG_BIN SQS_LOADER_IT_PGDATA=$RUN_DIR/pg-citus-c/data \
  SQS_LOADER_IT_PG_MAJOR=$PG SQS_LOADER_IT_BARE_PGPORT=$CITUS_PGPORT SQS_LOADER_IT_PG_OS_USER=$PG_OS_USER \
  SQS_LOADER_IT_CRON_DB=sqs_loader_cron SQS_LOADER_IT_CLUSTER=citus-c SQS_LOADER_IT_PG_SERVER_ENV="$DUMMY_AWS_ENV" \
  SQS_LOADER_IT_LOCALSTACK=http://localhost:$LOCALSTACK_PORT SQS_LOADER_IT_MOTO=unused \
  SQS_LOADER_IT_ROOT=$ROOT SQS_LOADER_IT_RUN_DIR=$RUN_DIR SQS_LOADER_CITUS_WORKER_PORTS="$CITUS_WORKER_PORTS"
unset SQS_LOADER_IT_MOTO_CREDENTIALS
cargo test -p sqs_loader_it --test citus -- --test-threads=1 ${TEST_FILTER:-}
