#!/usr/bin/env bash
# The demo: everything local, nothing but Debian packages, crates.io and PyPI needed.
# Starts PostgreSQL and LocalStack (make start, queue left empty), then scripts/demo.sql
# sends the 100 sample messages and shows the whole product, ending with a background worker
# that loads a message sent after it started; then the duplicate IP is recovered offline with
# sqs_loader_unmask (the private key never goes to the server). Safe to run again.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# A fresh cluster: a worker a previous demo left registered would start with the server and
# poll login-queue while the demo fills it. A fast shutdown first, so that a running worker gives
# back what its last long poll receives (an immediate one would leave it hidden on LocalStack).
bash scripts/pg.sh stop demo
bash scripts/pg.sh destroy demo
NO_FILL=1 bash scripts/start.sh
step "demo"
psql_on "$DEMO_PGPORT" postgres -v ON_ERROR_STOP=1 \
  -v pub="$(cat keys/public_key.pem)" -v priv="$(cat keys/private_key.pem)" -f scripts/demo.sql
step "offline recovery: sqs_loader_unmask (the private key stays on this machine)"
cargo build --release -q -p sqs_loader_unmask
token=$(psql_on "$DEMO_PGPORT" postgres -At -c "SELECT masked_ip FROM user_logins WHERE user_id = 'demo-duplicate-user'")
echo "\$ sqs_loader_unmask --db 'host=127.0.0.1 port=$DEMO_PGPORT user=postgres dbname=postgres' --key keys/private_key.pem $token"
target/release/sqs_loader_unmask --db "host=127.0.0.1 port=$DEMO_PGPORT user=postgres dbname=postgres" \
  --key keys/private_key.pem "$token" | sed 's/^/offline: /'
cat <<TXT

The demo is still running. Connect with:
    psql -h 127.0.0.1 -p $DEMO_PGPORT -U postgres postgres
and try:  CALL load_user_logins();   SELECT * FROM load_health;   (make etl, make health_check)
A background worker keeps loading login-queue:  SELECT * FROM sqs_loader.stat_loaders;
(SELECT sqs_loader.stop_worker('$DEMO_QUEUE_URL') stops it.)  Stop everything with:  make stop
TXT
