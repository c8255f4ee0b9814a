-- sqs_loader 0.1.0 -> 0.2.0 (ALTER EXTENSION sqs_loader UPDATE).
-- Written by hand from the diff of the SQL pgrx generates for both versions
-- (scripts/schema_diff.sh); the upgrade test (tests/integration/tests/upgrade.rs) checks that
-- an upgraded database has exactly the catalog of a fresh 0.2.0 install, and that tokens,
-- unmasking and loading go on working.
\echo Use "ALTER EXTENSION sqs_loader UPDATE" to load this file. \quit

-- ---------------------------------------------------------------- load runs
-- A run's limits, full error and mode live in its row (the loader works from it); new statuses.
ALTER TABLE sqs_loader.load_runs DROP CONSTRAINT load_runs_status_check;
ALTER TABLE sqs_loader.load_runs ADD CONSTRAINT load_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'delete_failed', 'stopped'));
ALTER TABLE sqs_loader.load_runs
    ADD COLUMN mode         text NOT NULL DEFAULT 'call' CHECK (mode IN ('call', 'worker')),
    ADD COLUMN max_messages bigint,
    ADD COLUMN deadline     timestamptz,
    ADD COLUMN batch_size   integer,
    ADD COLUMN visibility_timeout integer,
    ADD COLUMN wait_seconds integer,
    ADD COLUMN exit_when_empty boolean,
    ADD COLUMN sqlstate     text,
    ADD COLUMN error_detail text,
    ADD COLUMN error_hint   text,
    ADD COLUMN progress_at  timestamptz,
    ADD COLUMN batches      bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_batch_at timestamptz;
COMMENT ON TABLE sqs_loader.load_runs IS
  'One row per load run (CALL load_user_logins() or a worker): its limits, counts, status and any error. A run left "running" by a crash shows in load_health as aborted. The state the loader works from.';

-- ---------------------------------------------------------------- the loader
-- Deletes are armed by a commit callback now, and the procedure only calls run_* functions with
-- a pinned search_path.
DROP FUNCTION sqs_loader.delete_async(text, text[]);
DROP FUNCTION sqs_loader.fail_run(bigint, bigint, text, text);

CREATE FUNCTION sqs_loader."loader_settings"() RETURNS TABLE (
	"queue_url" TEXT,
	"batch_size" INT,
	"visibility_timeout" INT,
	"wait_seconds" INT,
	"max_seconds" INT,
	"max_messages" INT,
	"exit_when_empty" bool,
	"progress_seconds" INT,
	"dedup_retention_days" INT
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'loader_settings_wrapper';
COMMENT ON FUNCTION sqs_loader.loader_settings() IS
  'The loader''s settings (sqs_loader.batch_size, visibility_timeout, ...), typed: what a load run starts from.';

CREATE FUNCTION sqs_loader."delete_after_commit"(
	"queue_url" TEXT,
	"receipt_handles" TEXT[]
) RETURNS VOID
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'delete_after_commit_wrapper';
COMMENT ON FUNCTION sqs_loader.delete_after_commit(text, text[]) IS
  'Delete messages in the background once the current transaction commits, never if it aborts (internal to the loader).';

CREATE FUNCTION sqs_loader.run_begin(
    p_queue_url text, p_max_messages integer, p_max_seconds integer, p_mode text,
    p_wait_seconds integer DEFAULT NULL, p_exit_when_empty boolean DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    q text;
    id bigint;
BEGIN
    SELECT * INTO s FROM sqs_loader.loader_settings();
    q := coalesce(p_queue_url, s.queue_url);
    IF q IS NULL THEN
        RAISE EXCEPTION 'no queue URL' USING ERRCODE = '22023',
            HINT = 'CALL load_user_logins(''http://…/queue'') or SET sqs_loader.queue_url.';
    END IF;
    -- Normally made by CREATE EXTENSION; missing after a partial restore.
    IF to_regclass('@extschema@.user_logins') IS NULL THEN
        CREATE TABLE IF NOT EXISTS @extschema@.user_logins(
            user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
            masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date);
    END IF;
    -- Forget what an earlier, aborted run of this session left behind: background deletes (their
    -- messages come back and are skipped as already loaded) and prefetched messages.
    BEGIN
        PERFORM sqs_loader.delete_collect(true);
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    BEGIN
        PERFORM sqs_loader.release_prefetched();
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    INSERT INTO sqs_loader.load_runs (queue_url, mode, max_messages, deadline, batch_size,
                                      visibility_timeout, wait_seconds, exit_when_empty, progress_at)
    VALUES (q, p_mode, coalesce(p_max_messages, s.max_messages),
            clock_timestamp() + make_interval(secs => coalesce(p_max_seconds, s.max_seconds)),
            s.batch_size, s.visibility_timeout, coalesce(p_wait_seconds, s.wait_seconds),
            coalesce(p_exit_when_empty, s.exit_when_empty), clock_timestamp())
    RETURNING run_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION sqs_loader.run_begin(text, integer, integer, text, integer, boolean) IS
  'Start a load run: resolve the queue and the settings, record the run; returns its run_id. Internal to load_user_logins() and the workers.';

-- Record why a run stopped early (in the caller's transaction).
CREATE FUNCTION sqs_loader.run_failed(p_run_id bigint, p_status text, p_sqlstate text,
                                      p_message text, p_detail text, p_hint text) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE sqs_loader.load_runs
       SET status = p_status, sqlstate = p_sqlstate, error = p_sqlstate || ': ' || p_message,
           error_detail = nullif(p_detail, ''), error_hint = nullif(p_hint, '')
     WHERE run_id = p_run_id AND status = 'running';
$$;
COMMENT ON FUNCTION sqs_loader.run_failed(bigint, text, text, text, text, text) IS
  'Record the error that ends a load run (status failed or delete_failed).';

-- One batch: pull, then (if anything came) load it in the caller's transaction and arrange for
-- its messages to be deleted once that transaction commits. Returns whether the run goes on.
CREATE FUNCTION sqs_loader.run_batch(p_run_id bigint) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r sqs_loader.load_runs;
    want integer;
    n integer := 0;
    ids text[];
    handles text[];
    bodies text[];
    sents timestamptz[];
    b record;
    done_deletes bigint;
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    SELECT * INTO STRICT r FROM sqs_loader.load_runs WHERE run_id = p_run_id;
    -- Deletes of earlier batches that finished since (their rows are committed: a failure
    -- leaves the messages in the queue, to be skipped when they come back).
    BEGIN
        done_deletes := sqs_loader.delete_collect(false);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        PERFORM sqs_loader.run_failed(p_run_id, 'delete_failed', st, msg, det, hnt);
        RETURN false;
    END;
    IF done_deletes > 0 THEN
        UPDATE sqs_loader.load_runs SET deleted = deleted + done_deletes WHERE run_id = p_run_id;
    END IF;
    IF (r.max_messages IS NOT NULL AND r.received >= r.max_messages) OR clock_timestamp() >= r.deadline THEN
        RETURN false;
    END IF;
    want := r.batch_size;
    IF r.max_messages IS NOT NULL THEN
        want := least(want, r.max_messages - r.received);
    END IF;
    BEGIN
        SELECT array_agg(p.message_id), array_agg(p.receipt_handle), array_agg(p.body), array_agg(p.sent_at)
          INTO ids, handles, bodies, sents
          FROM sqs_loader.pull(r.queue_url, want, r.visibility_timeout,
                   least(r.wait_seconds, greatest(0, floor(extract(epoch FROM r.deadline - clock_timestamp())))::integer),
                   -- receive the next batch while this one is loaded, unless it is the last
                   r.max_messages IS NULL OR r.received + 2 * want <= r.max_messages) AS p;
        n := coalesce(cardinality(ids), 0);
        IF n > 0 THEN
            SELECT * INTO b FROM sqs_loader.load_batch(p_run_id, r.queue_url, ids, bodies, sents);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        -- Nothing of this batch is kept; its messages reappear after the visibility timeout.
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        PERFORM sqs_loader.run_failed(p_run_id, 'failed', st, msg, det, hnt);
        RETURN false;
    END;
    IF n = 0 THEN
        IF r.exit_when_empty THEN
            RETURN false;
        END IF;
        IF r.wait_seconds = 0 THEN
            PERFORM pg_sleep(0.5);
        END IF;
        RETURN true;
    END IF;
    UPDATE sqs_loader.load_runs
       SET received = received + n, loaded = loaded + b.loaded, rejected = rejected + b.rejected,
           skipped = skipped + b.skipped, batches = batches + 1, last_batch_at = clock_timestamp()
     WHERE run_id = p_run_id
    RETURNING * INTO r;
    IF clock_timestamp() - r.progress_at >= make_interval(secs => (SELECT progress_seconds FROM sqs_loader.loader_settings())) THEN
        RAISE NOTICE 'load_user_logins: % received, % loaded, % rejected, % skipped so far',
            r.received, r.loaded, r.rejected, r.skipped;
        UPDATE sqs_loader.load_runs SET progress_at = clock_timestamp() WHERE run_id = p_run_id;
    END IF;
    -- The messages are deleted right after the COMMIT, so it must be durable even where
    -- synchronous_commit = off (a crash would otherwise lose rows whose messages are gone).
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'local', true);
    END IF;
    -- Only once the rows are committed are the messages deleted from the queue: in the
    -- background, so that the next batch's receives and inserts overlap the deletes.
    PERFORM sqs_loader.delete_after_commit(r.queue_url, handles);
    RETURN true;
END
$$;
COMMENT ON FUNCTION sqs_loader.run_batch(bigint) IS
  'One batch of a load run, in the caller''s transaction: pull, load, and delete the messages once it commits. Returns whether the run goes on.';

-- End a run: give prefetched messages back, wait for the last deletes, prune the bookkeeping,
-- record the outcome. Returns the run's row.
CREATE FUNCTION sqs_loader.run_end(p_run_id bigint) RETURNS sqs_loader.load_runs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r sqs_loader.load_runs;
    done_deletes bigint := 0;
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    BEGIN
        PERFORM sqs_loader.release_prefetched();
        done_deletes := sqs_loader.delete_collect(true);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        PERFORM sqs_loader.run_failed(p_run_id, 'delete_failed', st, msg, det, hnt);
    END;
    DELETE FROM sqs_loader.processed_messages
     WHERE processed_at < now() - make_interval(days => (SELECT dedup_retention_days FROM sqs_loader.loader_settings()));
    UPDATE sqs_loader.load_runs
       SET ended_at = clock_timestamp(), deleted = deleted + done_deletes,
           status = CASE status WHEN 'running' THEN 'succeeded' ELSE status END
     WHERE run_id = p_run_id
    RETURNING * INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION sqs_loader.run_end(bigint) IS
  'End a load run: release prefetched messages, wait for the background deletes, prune processed_messages, record the status.';

-- Raise the error a run ended with, if any (after the caller committed its record).
CREATE FUNCTION sqs_loader.run_raise(p_run_id bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r sqs_loader.load_runs;
BEGIN
    SELECT * INTO STRICT r FROM sqs_loader.load_runs WHERE run_id = p_run_id;
    IF r.sqlstate IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = r.sqlstate, MESSAGE = substr(r.error, length(r.sqlstate) + 3),
            DETAIL = coalesce(r.error_detail, ''), HINT = coalesce(r.error_hint, '');
    END IF;
END
$$;
COMMENT ON FUNCTION sqs_loader.run_raise(bigint) IS 'Raise the error a load run ended with, if any.';

CREATE OR REPLACE PROCEDURE @extschema@.load_user_logins(
    queue_url text DEFAULT NULL,
    max_messages integer DEFAULT NULL,
    max_seconds integer DEFAULT NULL,
    INOUT received bigint DEFAULT NULL,
    INOUT loaded bigint DEFAULT NULL,
    INOUT rejected bigint DEFAULT NULL,
    INOUT skipped bigint DEFAULT NULL,
    INOUT run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    more boolean;
    r sqs_loader.load_runs;
BEGIN
    run_id := sqs_loader.run_begin(queue_url, max_messages, max_seconds, 'call');
    COMMIT;
    LOOP
        more := sqs_loader.run_batch(run_id);
        COMMIT;
        EXIT WHEN NOT more;
    END LOOP;
    r := sqs_loader.run_end(run_id);
    COMMIT;
    received := r.received;
    loaded := r.loaded;
    rejected := r.rejected;
    skipped := r.skipped;
    PERFORM sqs_loader.run_raise(run_id);
END
$$;
COMMENT ON PROCEDURE @extschema@.load_user_logins(text, integer, integer, bigint, bigint, bigint, bigint, bigint) IS
  'Pull login events from SQS, mask them and insert them into user_logins, exactly once. CALL it from psql or pg_cron; returns received/loaded/rejected/skipped and the run id.';


-- ---------------------------------------------------------------- privileges (as a fresh install)
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sqs_loader FROM PUBLIC;
