#!/usr/bin/env bash
# Install what the project needs, idempotently (a second run only checks):
#   deps.sh           apt packages, cargo-pgrx, pgrx init, LocalStack   (demo)
#   deps.sh test      ... and moto                                       (tests)
#   deps.sh bench     ... and fauxqs and the Python reference loader     (benchmarks)
source "$(dirname "$0")/lib.sh"
what=${1:-demo}
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

APT_PACKAGES="build-essential pkg-config libssl-dev clang libclang-dev sudo openssl curl python3-venv gnupg
  postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron"
missing=$(for p in $APT_PACKAGES; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  step "apt: installing $(echo $missing)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian's package creates and may start a default cluster on 5432; we never use it.

if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $PGRX_VERSION" ]; then
  step "cargo-pgrx $PGRX_VERSION (about 4 minutes the first time)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  step "cargo pgrx init"
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi

mkdir -p "$TOOLS_DIR"
# LocalStack on the host (no Docker): the runtime package with the pins that start on Python 3.11.
if ! "$TOOLS_DIR/localstack/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
  step "LocalStack 4.13.1 into $TOOLS_DIR/localstack"
  rm -rf "$TOOLS_DIR/localstack"
  python3 -m venv "$TOOLS_DIR/localstack"
  "$TOOLS_DIR/localstack/bin/pip" install -q 'localstack-core[runtime]==4.13.1' 'cbor2==5.9.0' \
    'cryptography==46.0.7' 'localstack-twisted==25.5.0' 'pyopenssl==25.3.0'
fi

if [ "$what" = test ] || [ "$what" = bench ]; then
  # moto verifies SigV4 signatures (LocalStack and fauxqs accept anything).
  if ! "$TOOLS_DIR/moto/bin/python" -c 'import moto, boto3' 2>/dev/null; then
    step "moto 5.2.5 into $TOOLS_DIR/moto"
    rm -rf "$TOOLS_DIR/moto"
    python3 -m venv "$TOOLS_DIR/moto"
    "$TOOLS_DIR/moto/bin/pip" install -q 'moto[server]==5.2.5'
  fi
fi

if [ "$what" = bench ]; then
  if [ ! -f "$TOOLS_DIR/fauxqs/node_modules/fauxqs/dist/cli.js" ]; then
    step "fauxqs 1.9.2 into $TOOLS_DIR/fauxqs"
    mkdir -p "$TOOLS_DIR/fauxqs"
    (cd "$TOOLS_DIR/fauxqs" && npm install --silent --no-audit --no-fund fauxqs@1.9.2 >/dev/null)
  fi
  if ! "$TOOLS_DIR/pyref/bin/python" -c 'import boto3, psycopg2, cryptography, matplotlib' 2>/dev/null; then
    step "Python reference loader environment into $TOOLS_DIR/pyref"
    rm -rf "$TOOLS_DIR/pyref"
    python3 -m venv "$TOOLS_DIR/pyref"
    "$TOOLS_DIR/pyref/bin/pip" install -q 'boto3==1.*' 'psycopg2-binary==2.9.*' 'cryptography==46.*' 'matplotlib==3.*'
  fi
fi
