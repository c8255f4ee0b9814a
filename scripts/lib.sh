# Shared settings for the project's scripts. Source it; do not run it.
# Everything the scripts start lives under $RUN_DIR and listens on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

PG_MAJOR=15
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PGRX_VERSION=0.18.1
RUN_DIR=${RUN_DIR:-/tmp/sqs_loader}
TOOLS_DIR=${TOOLS_DIR:-$ROOT/.tools}

# PostgreSQL refuses to run as root: when we are root, clusters run as this OS user.
if [ "$(id -u)" = 0 ]; then PG_OS_USER=${PG_OS_USER:-sqsloader}; else PG_OS_USER=$(id -un); fi

LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
MOTO_PORT=${MOTO_PORT:-4567}
FAUXQS_PORT=${FAUXQS_PORT:-4568}
DEMO_PGPORT=${DEMO_PGPORT:-55432}
TEST_PGPORT=${TEST_PGPORT:-55433}

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

# Wait until a command succeeds, up to $1 seconds.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}
