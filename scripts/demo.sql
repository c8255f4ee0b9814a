-- The demo, run by scripts/demo.sh (psql variables: pub, priv = the key pair's PEM text).
\set QUIET on
\pset footer off
SET client_min_messages = warning;
-- A clean slate, so the demo gives the same numbers every time it runs (demo.sh also starts from a
-- fresh cluster): workers are stopped first (committed, so their supervisor sees it), then the
-- demo waits for them to exit.
-- (make start created the extension.)
SELECT count(sqs_loader.stop_worker(queue_url)) AS stopped FROM sqs_loader.workers \gset
\ir wait_for_workers.sql
DROP EXTENSION IF EXISTS sqs_loader CASCADE;
DROP TABLE IF EXISTS user_logins;
CREATE EXTENSION sqs_loader;
SELECT set_rsa_public_key(:'pub') AS fingerprint \gset
SELECT current_setting('sqs_loader.queue_url') AS queue_url \gset
SELECT sqs_create_queue('login-queue') AS queue_url \gset
-- Empty login-queue of anything a previous `make start` left there.
DO $$
DECLARE h text[];
BEGIN
  LOOP
    SELECT array_agg(receipt_handle) INTO h FROM sqs_pull(current_setting('sqs_loader.queue_url'), 100);
    EXIT WHEN h IS NULL;
    PERFORM sqs_delete(current_setting('sqs_loader.queue_url'), h);
  END LOOP;
END $$;
RESET client_min_messages;

\echo
\echo '== 1. login-queue on LocalStack gets the 100 sample messages (data/sample_login_messages.jsonl)'
CREATE TEMP TABLE sample(body text);
\copy sample(body) FROM 'data/sample_login_messages.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SELECT sqs_send(:'queue_url', array_agg(body)) AS sent FROM sample;

\echo '== 2. CALL load_user_logins(): pull, validate, mask, insert exactly once, delete'
\set QUIET off
CALL load_user_logins();
\set QUIET on
SELECT loaded AS demo_loaded, rejected AS demo_rejected FROM sqs_loader.load_runs ORDER BY run_id DESC LIMIT 1 \gset

\echo '== 3. The first rows of user_logins (ip and device_id are tokens; app_version is packed)'
SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version,
       app_version_text(app_version) AS "app_version_text()", create_date
  FROM user_logins ORDER BY user_id LIMIT 5;

\echo '== 4. The rejected message, with its reason (the body is readable by superusers only)'
SELECT message_id, reason, detail, body FROM sqs_loader.rejected_messages;

\echo '== 5. The same IP sent again by another user: GROUP BY masked_ip finds the duplicate'
SELECT sqs_send(:'queue_url', ARRAY['{"user_id": "demo-duplicate-user", "app_version": "2.3.0", "device_type": "ios", "ip": "199.172.111.135", "locale": "US", "device_id": "000-00-0000"}']) AS sent;
\set QUIET off
CALL load_user_logins();
\set QUIET on
SELECT masked_ip, count(*) AS logins, string_agg(user_id, ', ') AS users
  FROM user_logins GROUP BY masked_ip HAVING count(*) > 1;
SELECT max(n) AS demo_duplicate_rows FROM (SELECT count(*) AS n FROM user_logins GROUP BY masked_ip) x \gset

\echo '== 6. Recovery in SQL: unmask_pii() with the RSA private key (keys/private_key.pem) gives the IP back'
\echo '   (the key is masked in the server log and pg_stat_activity; offline recovery, below, keeps it off the server)'
SELECT masked_ip AS demo_token FROM user_logins WHERE user_id = 'demo-duplicate-user' \gset
SELECT unmask_pii(:'demo_token', :'priv') AS demo_unmasked \gset
SELECT :'demo_token' AS masked_ip, :'demo_unmasked' AS "unmask_pii(masked_ip, private key)";
\echo '   ... and the same call by an analyst role that is not a member of sqs_loader_unmask is refused:'
SET client_min_messages = warning;
DROP ROLE IF EXISTS demo_analyst;
RESET client_min_messages;
CREATE ROLE demo_analyst;
GRANT SELECT ON user_logins TO demo_analyst;
SET ROLE demo_analyst;
SELECT count(*) AS rows_the_analyst_sees FROM user_logins;
DO $$
BEGIN
  PERFORM unmask_pii('v1.x', 'key');
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'refused for demo_analyst: % (SQLSTATE %)', SQLERRM, SQLSTATE;
END $$;
RESET ROLE;
\echo '   Every access to PII is audited:'
SELECT at, action, session_user_name, role_name, outcome FROM sqs_loader.unmask_audit ORDER BY at;

\echo '== 7. The queue is empty again; load_health sums it up'
SELECT queue_depth FROM load_health;
SELECT (queue_depth->>'visible')::int + (queue_depth->>'in_flight')::int AS demo_depth FROM load_health \gset
SELECT user_logins_rows, rejected_by_reason FROM load_health;

\echo '== 8. Continuous loading: a background worker long-polls login-queue and loads what arrives'
SELECT queue_url, processes, wait_seconds FROM sqs_loader.start_worker(:'queue_url');
-- Wait until the worker is polling (its run is recorded), then send one event.
DO $$
BEGIN
  FOR i IN 1 .. 200 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM sqs_loader.load_runs WHERE mode = 'worker' AND status = 'running');
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT sqs_send(:'queue_url', ARRAY['{"user_id": "demo-live-user", "app_version": "2.4.0", "device_type": "android", "ip": "203.0.113.7", "locale": "DE", "device_id": "111-22-3333"}']) AS sent,
       clock_timestamp() AS demo_sent_at \gset
-- Poll user_logins until the row is there (at most 10 s).
DO $$
BEGIN
  FOR i IN 1 .. 1000 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM user_logins WHERE user_id = 'demo-live-user');
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT round(extract(epoch FROM clock_timestamp() - :'demo_sent_at'::timestamptz)::numeric, 3) AS demo_live_seconds \gset
SELECT user_id, device_type, masked_ip, locale, app_version_text(app_version) AS app_version,
       :'demo_live_seconds' AS "seconds from send to row"
  FROM user_logins WHERE user_id = 'demo-live-user';
SELECT (:'demo_live_seconds'::numeric < 1) AS demo_live_within_1s \gset
\echo '   What each loader is doing (make health_check shows it too):'
SELECT queue_url, mode, state, active_runs, latency_p50_seconds, lag, visible, in_flight
  FROM sqs_loader.stat_loaders;

\echo
\echo 'demo check: loaded=':demo_loaded' rejected=':demo_rejected' duplicate_ip_rows=':demo_duplicate_rows' unmasked_ip=':demo_unmasked' expected_ip=199.172.111.135 queue_depth=':demo_depth' live_row_within_1s=':demo_live_within_1s

