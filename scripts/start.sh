#!/usr/bin/env bash
# Local PostgreSQL ($PG; pg_cron and sqs_loader preloaded) and LocalStack, both on 127.0.0.1;
# the extension installed and created; login-queue created and filled with the 100 sample messages.
#   NO_FILL=1 start.sh   leaves the queue as it is
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
step "building and installing sqs_loader (release; the first build takes a few minutes)"
make -s install
step "LocalStack on 127.0.0.1:$LOCALSTACK_PORT"
bash scripts/sqs.sh start localstack
step "PostgreSQL on 127.0.0.1:$DEMO_PGPORT"
# A running cluster keeps the library it preloaded: restart it when a newer one was installed.
pid_file=$RUN_DIR/pg-demo/data/postmaster.pid
if [ -f "$pid_file" ] && [ "$("$PG_CONFIG" --pkglibdir)/sqs_loader.so" -nt "$pid_file" ]; then
  bash scripts/pg.sh stop demo
fi
# LocalStack accepts any credentials; the server process gets dummy ones (scripts/lib.sh).
bash scripts/pg.sh start demo "$DEMO_PGPORT" postgres
bash scripts/create_key.sh >/dev/null
step "extension, RSA public key, login-queue"
psql_on "$DEMO_PGPORT" postgres -q -v ON_ERROR_STOP=1 \
  -v pub="$(cat keys/public_key.pem)" -v nofill="${NO_FILL:-0}" -v queue_url="$DEMO_QUEUE_URL" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS sqs_loader;
ALTER DATABASE postgres SET sqs_loader.queue_url = :'queue_url';
SET sqs_loader.queue_url = :'queue_url';
SELECT set_rsa_public_key(:'pub') AS rsa_key_fingerprint \gset
SELECT sqs_create_queue('login-queue') AS queue_url \gset
\if :nofill
\else
-- make etl loads what this sends: a background worker (the demo starts one) would take it first.
-- It exits once its last long poll has ended (<= 20 s), giving back what that received.
SELECT count(sqs_loader.stop_worker(queue_url)) > 0 AS stopped FROM sqs_loader.workers
 WHERE queue_url = :'queue_url' \gset
\if :stopped
\echo stopped the background worker on :queue_url (SELECT sqs_loader.start_worker(...) starts it again)
\i scripts/wait_for_workers.sql
\endif
CREATE TEMP TABLE sample(body text);
\copy sample(body) FROM 'data/sample_login_messages.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SELECT sqs_send(:'queue_url', array_agg(body)) AS sent FROM sample \gset
\echo sent :sent sample messages to :queue_url
\endif
SQL
