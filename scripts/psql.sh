#!/usr/bin/env bash
# psql on the local cluster that `make start` / `make demo` runs (arguments go to psql).
source "$(dirname "$0")/lib.sh"
psql_on "$DEMO_PGPORT" postgres "$@"
