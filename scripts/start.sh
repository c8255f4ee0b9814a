#!/usr/bin/env bash
# Local PostgreSQL 15 (pg_cron preloaded) and LocalStack, both on 127.0.0.1; the extension
# installed and created; login-queue created and filled with the 100 sample messages.
#   NO_FILL=1 start.sh   leaves the queue as it is
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
step "building and installing sqs_loader (release; the first build takes a few minutes)"
make -s install
step "LocalStack on 127.0.0.1:$LOCALSTACK_PORT"
bash scripts/sqs.sh start localstack
step "PostgreSQL on 127.0.0.1:$DEMO_PGPORT"
# LocalStack accepts any credentials; the server process gets dummy ones from its environment.
PG_SERVER_ENV="AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test" bash scripts/pg.sh start demo "$DEMO_PGPORT" postgres
bash scripts/create_key.sh >/dev/null
step "extension, RSA public key, login-queue"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DEMO_PGPORT" -U postgres -d postgres \
  -v pub="$(cat keys/public_key.pem)" -v nofill="${NO_FILL:-0}" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS sqs_loader;
ALTER DATABASE postgres SET sqs_loader.queue_url = 'http://localhost:4566/000000000000/login-queue';
SET sqs_loader.queue_url = 'http://localhost:4566/000000000000/login-queue';
SELECT set_rsa_public_key(:'pub') AS rsa_key_fingerprint \gset
SELECT sqs_create_queue('login-queue') AS queue_url \gset
\if :nofill
\else
CREATE TEMP TABLE sample(body text);
\copy sample(body) FROM 'data/sample_login_messages.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SELECT sqs_send(:'queue_url', array_agg(body)) AS sent FROM sample \gset
\echo sent :sent sample messages to :queue_url
\endif
SQL
