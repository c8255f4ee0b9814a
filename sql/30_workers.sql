-- Continuous loading: background workers (src/postgres/worker.rs) and what shows how the
-- loading goes (stat_loaders).

CREATE TABLE sqs_loader.workers (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_url    text NOT NULL UNIQUE,
    processes    integer NOT NULL DEFAULT 1 CHECK (processes BETWEEN 1 AND 16),
    batch_size   integer CHECK (batch_size BETWEEN 1 AND 10000),
    wait_seconds integer NOT NULL DEFAULT 20 CHECK (wait_seconds BETWEEN 1 AND 20),
    run_as       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE sqs_loader.workers IS
  'The continuous loaders: one row per queue (start_worker() / stop_worker()), each run by processes background workers as run_as. Kept across restarts (and in pg_dump).';
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.workers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sqs_loader.workers', 'id'), '');

CREATE FUNCTION sqs_loader.start_worker(
    queue_url text, processes integer DEFAULT 1, batch_size integer DEFAULT NULL,
    wait_seconds integer DEFAULT 20)
RETURNS sqs_loader.workers
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w sqs_loader.workers;
    owner text;
BEGIN
    PERFORM sqs_loader.require_preloaded('start_worker()');
    SELECT r.rolname INTO owner
      FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner WHERE e.extname = 'sqs_loader';
    PERFORM sqs_loader.require_caller('start_worker()', owner);
    -- A queue URL the workers could not use is refused now, not in the server log later.
    PERFORM sqs_loader.check_queue_url(start_worker.queue_url);
    INSERT INTO sqs_loader.workers AS old (queue_url, processes, batch_size, wait_seconds, run_as)
    VALUES (start_worker.queue_url, start_worker.processes, start_worker.batch_size,
            start_worker.wait_seconds, session_user)
    ON CONFLICT ON CONSTRAINT workers_queue_url_key DO UPDATE
       SET processes = excluded.processes, batch_size = excluded.batch_size,
           wait_seconds = excluded.wait_seconds, run_as = excluded.run_as
    RETURNING * INTO w;
    -- The supervisor of this database starts the workers once this commits.
    PERFORM sqs_loader.launch_supervisor();
    RETURN w;
END
$$;
COMMENT ON FUNCTION sqs_loader.start_worker(text, integer, integer, integer) IS
  'Load a queue continuously: processes background workers long-poll it and load through the same path as load_user_logins() (superuser or the extension owner; needs sqs_loader in shared_preload_libraries). Calling it again changes the settings. Kept across restarts.';

CREATE FUNCTION sqs_loader.stop_worker(queue_url text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    SELECT r.rolname INTO owner
      FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner WHERE e.extname = 'sqs_loader';
    PERFORM sqs_loader.require_caller('stop_worker()', owner);
    DELETE FROM sqs_loader.workers w WHERE w.queue_url = stop_worker.queue_url;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION sqs_loader.stop_worker(text) IS
  'Stop the background workers of a queue: each finishes the batch it is loading, its run is recorded as stopped. True when there were workers.';

-- How the loading of each queue goes: who loads it, how fast, how far behind.
CREATE VIEW sqs_loader.stat_loaders AS
WITH queues AS (
    SELECT w.queue_url FROM sqs_loader.workers w
    UNION
    SELECT r.queue_url FROM sqs_loader.load_runs r WHERE r.started_at > now() - interval '1 day'),
last_run AS (
    SELECT DISTINCT ON (r.queue_url) r.queue_url, r.status, r.mode, r.error, r.ended_at
      FROM sqs_loader.load_runs r ORDER BY r.queue_url, r.run_id DESC),
last_error AS (
    SELECT DISTINCT ON (r.queue_url) r.queue_url, r.error, coalesce(r.ended_at, r.started_at) AS at
      FROM sqs_loader.load_runs r WHERE r.error IS NOT NULL ORDER BY r.queue_url, r.run_id DESC),
active AS (
    SELECT r.queue_url, count(*) AS runs, count(*) FILTER (WHERE r.mode = 'worker') AS worker_runs
      FROM sqs_loader.load_runs r
     WHERE r.status = 'running'
       AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid)
     GROUP BY r.queue_url),
recent AS (
    SELECT r.queue_url,
           count(*) AS messages,
           count(*) FILTER (WHERE p.outcome = 'loaded') AS loaded,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM p.processed_at - p.sent_at)) AS latency_p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM p.processed_at - p.sent_at)) AS latency_p99
      FROM sqs_loader.processed_messages p JOIN sqs_loader.load_runs r ON r.run_id = p.run_id
     WHERE p.processed_at > clock_timestamp() - interval '1 minute'
     GROUP BY r.queue_url),
newest AS (
    SELECT r.queue_url, max(p.sent_at) AS sent_at
      FROM sqs_loader.processed_messages p JOIN sqs_loader.load_runs r ON r.run_id = p.run_id
     WHERE p.processed_at > now() - interval '1 day'
     GROUP BY r.queue_url),
depth AS (
    SELECT q.queue_url, sqs_loader.queue_depth(q.queue_url) AS d FROM queues q)
SELECT q.queue_url,
       CASE WHEN w.id IS NOT NULL THEN 'worker' ELSE coalesce(l.mode, 'call') END AS mode,
       w.processes AS worker_processes,
       CASE WHEN coalesce(a.runs, 0) > 0 THEN 'running'
            WHEN w.id IS NOT NULL THEN 'starting'
            ELSE coalesce(l.status, 'idle') END AS state,
       coalesce(a.runs, 0) AS active_runs,
       round(coalesce(rc.messages, 0) / 60.0, 1) AS messages_per_second,
       round(coalesce(rc.loaded, 0) / 60.0, 1) AS rows_per_second,
       round(rc.latency_p50::numeric, 3) AS latency_p50_seconds,
       round(rc.latency_p99::numeric, 3) AS latency_p99_seconds,
       clock_timestamp() - n.sent_at AS lag,
       (dp.d ->> 'visible')::bigint AS visible,
       (dp.d ->> 'in_flight')::bigint AS in_flight,
       (dp.d ->> 'oldest_age_seconds')::bigint AS oldest_message_age_seconds,
       coalesce(dp.d ->> 'error', le.error) AS last_error,
       le.at AS last_error_at
  FROM queues q
  LEFT JOIN sqs_loader.workers w ON w.queue_url = q.queue_url
  LEFT JOIN last_run l ON l.queue_url = q.queue_url
  LEFT JOIN last_error le ON le.queue_url = q.queue_url
  LEFT JOIN active a ON a.queue_url = q.queue_url
  LEFT JOIN recent rc ON rc.queue_url = q.queue_url
  LEFT JOIN newest n ON n.queue_url = q.queue_url
  LEFT JOIN depth dp ON dp.queue_url = q.queue_url;
COMMENT ON VIEW sqs_loader.stat_loaders IS
  'Per queue: mode (worker or call) and state, messages and rows per second and the p50/p99 latency (SentTimestamp to load) over the last minute, lag (now - SentTimestamp of the newest loaded message), the queue''s visible and in-flight depth and the age of its oldest message where the endpoint reports it, the last error.';
