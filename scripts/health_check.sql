-- make health_check: what the load has done, what waits in the queue, how each loader keeps up.
\pset footer off
\echo '== rows in user_logins'
SELECT user_logins_rows FROM load_health;
\echo '== rejected messages by reason'
SELECT reason, count(*) AS messages, max(rejected_at) AS last FROM sqs_loader.rejected_messages GROUP BY reason ORDER BY 2 DESC;
\echo '== last runs'
SELECT r->>'run_id' AS run, r->>'status' AS status, r->>'started_at' AS started_at, r->>'ended_at' AS ended_at,
       r->>'received' AS received, r->>'loaded' AS loaded, r->>'rejected' AS rejected, r->>'skipped' AS skipped,
       r->>'error' AS error
  FROM load_health, jsonb_array_elements(last_runs) r;
\echo '== queue depth'
SELECT queue_url, queue_depth FROM load_health;
\echo '== loaders: mode, state, rates and latency over the last minute, lag, queue depth, last error'
SELECT * FROM sqs_loader.stat_loaders;
