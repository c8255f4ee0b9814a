#!/usr/bin/env bash
# For the upgrade test: build and install sqs_loader 0.1.0 (the first release, from this
# repository's history), and in cluster NAME on PORT create database upgrade_from_0_1_0 with it,
# holding real data: the 100 sample messages loaded (99 rows, 1 reject), an RSA key (private
# half in $RUN_DIR/upgrade/private_key.pem) and one erased value. Leaves the cluster stopped;
# make test then installs the current version over it and tests ALTER EXTENSION ... UPDATE.
#   upgrade_fixture.sh NAME PORT
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
name=${1:?cluster name}; port=${2:?port}
# The commit of release 0.1.0 (what landed as 0.1.0 on main).
V010=0acc38b988908fa2e27fbbd53f75383ce8272bc5
git -C "$ROOT" cat-file -e "$V010^{commit}" 2>/dev/null \
  || die "commit $V010 (release 0.1.0) is not in this clone: the upgrade test needs the history (not a shallow clone)"

src=$RUN_DIR/build/sqs_loader-0.1.0
export_commit "$V010" "$src"
# 0.1.0 was released with a pg15 feature only; its code builds unchanged for 18 given the feature.
features=(--no-default-features --features "pg$PG")
if [ "$PG" != 15 ]; then
  sed -i "s|^pg15 = \[\(.*\)\]$|&\npg$PG = [\"pgrx/pg$PG\", \"pgrx-tests/pg$PG\"]|" "$src/Cargo.toml"
  grep -q "^pg$PG = " "$src/Cargo.toml" || die "could not add a pg$PG feature to 0.1.0's Cargo.toml"
fi
# Its own target directory: the two crates share a name, and so the path of the built library.
step "building 0.1.0 for PostgreSQL $PG (target/v0.1.0-pg$PG; about 2 minutes the first time)"
sudo_flag=(); [ "$(id -u)" = 0 ] || sudo_flag=(--sudo)
(cd "$src" && CARGO_TARGET_DIR="$ROOT/target/v0.1.0-pg$PG" cargo pgrx install --pg-config "$PG_CONFIG" \
  "${features[@]}" "${sudo_flag[@]}" >/dev/null)

PG_PRELOAD=pg_cron bash "$ROOT/scripts/pg.sh" start "$name" "$port" sqs_loader_cron
mkdir -p "$RUN_DIR/upgrade"
KEY_DIR=$RUN_DIR/upgrade FORCE=1 bash "$ROOT/scripts/create_key.sh" >/dev/null
psql_on "$port" postgres -q -c 'DROP DATABASE IF EXISTS upgrade_from_0_1_0' -c 'CREATE DATABASE upgrade_from_0_1_0'
psql_on "$port" upgrade_from_0_1_0 -q -v ON_ERROR_STOP=1 \
  -v pub="$(cat "$RUN_DIR/upgrade/public_key.pem")" -v queue="upgrade-$(date +%s%N)" \
  -v endpoint="http://localhost:$LOCALSTACK_PORT" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION sqs_loader VERSION '0.1.0';
SELECT set_rsa_public_key(:'pub') \gset
SET sqs_loader.endpoint = :'endpoint';
SELECT sqs_create_queue(:'queue') AS url \gset
RESET sqs_loader.endpoint;
ALTER DATABASE upgrade_from_0_1_0 SET sqs_loader.queue_url = :'url';
CREATE TEMP TABLE sample(body text);
\copy sample(body) FROM 'data/sample_login_messages.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SELECT sqs_send(:'url', array_agg(body)) FROM sample \gset
CALL load_user_logins(:'url');
-- One value erased with 0.1.0: it must stay erased after the upgrade.
SELECT forget_pii(masked_device_id) FROM user_logins WHERE user_id = (SELECT min(user_id) FROM user_logins) \gset
SQL
psql_on "$port" upgrade_from_0_1_0 -At -c 'SELECT extversion FROM pg_extension WHERE extname = $$sqs_loader$$' | grep -qx 0.1.0 \
  || die "the fixture is not at 0.1.0"
bash "$ROOT/scripts/pg.sh" stop "$name"
