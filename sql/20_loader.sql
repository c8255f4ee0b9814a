-- The ETL: load_user_logins() and what it needs. Orchestration is SQL; parsing, masking and
-- SQS calls are the Rust functions.

-- One batch, inside the caller's transaction: claim the message ids (exactly once), insert the
-- valid events masked, record the rejected ones. Returns the counts.
CREATE FUNCTION sqs_loader.load_batch(
    p_run_id bigint, p_queue_url text, p_ids text[], p_bodies text[], p_sent timestamptz[],
    OUT loaded integer, OUT rejected integer, OUT skipped integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    batch sqs_loader.batch_row[];
    claimed text[];
    valid sqs_loader.batch_row[];
    tokens text[];
    n integer;
BEGIN
    -- Parse each distinct message once (SQS may deliver one message twice in a batch).
    SELECT array_agg(ROW(b.id, b.sent, b.body, p.user_id, p.device_type, p.ip, p.locale, p.device_id,
                         p.app_version, p.reject_reason, p.reject_detail)::sqs_loader.batch_row ORDER BY b.id)
      INTO batch
      FROM (SELECT DISTINCT ON (u.id) u.id, u.body, u.sent
              FROM unnest(p_ids, p_bodies, p_sent) AS u(id, body, sent) ORDER BY u.id) AS b
     CROSS JOIN LATERAL sqs_loader.parse_login(b.body) AS p;

    -- 1. Claim: a message id already recorded (loaded earlier, its delete lost) is skipped.
    --    Sorted, so concurrent loaders take row locks in the same order.
    WITH ins AS (
        INSERT INTO sqs_loader.processed_messages (message_id, outcome, run_id)
        SELECT r.message_id, CASE WHEN r.reject_reason IS NULL THEN 'loaded' ELSE 'rejected' END, p_run_id
          FROM unnest(batch) AS r ORDER BY r.message_id
        ON CONFLICT (message_id) DO NOTHING
        RETURNING message_id)
    SELECT coalesce(array_agg(message_id), '{}') INTO claimed FROM ins;
    skipped := cardinality(p_ids) - cardinality(claimed);

    -- 2. Valid events: mask ip and device_id with one call (one vault upsert), insert the rows.
    SELECT array_agg(r ORDER BY r.message_id) INTO valid
      FROM unnest(batch) AS r JOIN unnest(claimed) AS c(id) ON c.id = r.message_id
     WHERE r.reject_reason IS NULL;
    n := coalesce(cardinality(valid), 0);
    loaded := 0;
    IF n > 0 THEN
        -- tokens[1..n] are the ips, tokens[n+1..2n] the device ids, in the order of valid.
        tokens := sqs_loader.mask_values(
            ARRAY(SELECT v.ip FROM unnest(valid) WITH ORDINALITY AS v ORDER BY v.ordinality)
            || ARRAY(SELECT v.device_id FROM unnest(valid) WITH ORDINALITY AS v ORDER BY v.ordinality));
        INSERT INTO @extschema@.user_logins
               (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
        SELECT v.user_id, v.device_type, t.t_ip, t.t_dev, v.locale, v.app_version,
               (v.sent_at AT TIME ZONE 'UTC')::date
          FROM unnest(valid) WITH ORDINALITY AS v
          JOIN unnest(tokens[1:n], tokens[n + 1:2 * n]) WITH ORDINALITY AS t(t_ip, t_dev, ordinality)
            ON t.ordinality = v.ordinality;
        GET DIAGNOSTICS loaded = ROW_COUNT;
    END IF;

    -- 3. Rejected messages, with reason and body.
    INSERT INTO sqs_loader.rejected_messages (message_id, queue_url, sent_at, reason, detail, body, run_id)
    SELECT r.message_id, p_queue_url, r.sent_at, r.reject_reason, r.reject_detail, r.body, p_run_id
      FROM unnest(batch) AS r JOIN unnest(claimed) AS c(id) ON c.id = r.message_id
     WHERE r.reject_reason IS NOT NULL;
    GET DIAGNOSTICS rejected = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION sqs_loader.load_batch(bigint, text, text[], text[], timestamptz[]) IS
  'One batch of load_user_logins(), in the caller''s transaction: claim message ids, insert masked rows, record rejects.';

-- Record a failed run (committed by the caller, which then re-raises). Prefetched messages are
-- made visible again; if that fails too they come back after their visibility timeout.
CREATE FUNCTION sqs_loader.fail_run(p_run_id bigint, p_deleted bigint, p_state text, p_message text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sqs_loader.load_runs
       SET ended_at = clock_timestamp(), status = 'failed', error = p_state || ': ' || p_message,
           deleted = p_deleted
     WHERE run_id = p_run_id;
    BEGIN
        PERFORM sqs_loader.release_prefetched();
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
END
$$;
COMMENT ON FUNCTION sqs_loader.fail_run(bigint, bigint, text, text) IS
  'Mark a load run as failed with its error, and release its prefetched messages.';

-- The job. A procedure (not a function) because it COMMITs after every batch; so it cannot run
-- inside an explicit transaction block. Each batch: pull -> one transaction (claim, insert,
-- reject) -> COMMIT -> delete from SQS. A crash anywhere loses nothing and duplicates nothing.
CREATE PROCEDURE @extschema@.load_user_logins(
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
    q text;
    msg_limit bigint;
    deadline timestamptz;
    batch_size integer;
    vis integer;
    wait_s integer;
    exit_when_empty boolean;
    progress_every interval;
    last_progress timestamptz := clock_timestamp();
    want integer;
    n integer;
    ids text[];
    handles text[];
    bodies text[];
    sents timestamptz[];
    b record;
    n_deleted bigint := 0;
    err_state text;
    err_msg text;
    err_detail text;
    err_hint text;
BEGIN
    PERFORM sqs_loader.version();  -- loads the library, which defines the sqs_loader.* settings
    q := coalesce(load_user_logins.queue_url, nullif(pg_catalog.current_setting('sqs_loader.queue_url'), ''));
    IF q IS NULL THEN
        RAISE EXCEPTION 'no queue URL' USING ERRCODE = '22023',
            HINT = 'CALL load_user_logins(''http://…/queue'') or SET sqs_loader.queue_url.';
    END IF;
    msg_limit := coalesce(max_messages, nullif(pg_catalog.current_setting('sqs_loader.max_messages')::integer, 0));
    deadline := clock_timestamp() + pg_catalog.make_interval(secs =>
                    coalesce(max_seconds, pg_catalog.current_setting('sqs_loader.max_seconds')::integer));
    batch_size := pg_catalog.current_setting('sqs_loader.batch_size')::integer;
    vis := nullif(pg_catalog.current_setting('sqs_loader.visibility_timeout')::integer, 0);
    wait_s := pg_catalog.current_setting('sqs_loader.wait_seconds')::integer;
    exit_when_empty := pg_catalog.current_setting('sqs_loader.exit_when_empty')::boolean;
    progress_every := pg_catalog.make_interval(secs => pg_catalog.current_setting('sqs_loader.progress_seconds')::integer);
    received := 0; loaded := 0; rejected := 0; skipped := 0;
    -- Normally made by CREATE EXTENSION; missing after a partial restore.
    IF pg_catalog.to_regclass('@extschema@.user_logins') IS NULL THEN
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
    INSERT INTO sqs_loader.load_runs (queue_url) VALUES (q) RETURNING load_runs.run_id INTO run_id;
    COMMIT;

    LOOP
        EXIT WHEN msg_limit IS NOT NULL AND received >= msg_limit;
        EXIT WHEN clock_timestamp() >= deadline;
        want := batch_size;
        IF msg_limit IS NOT NULL THEN want := least(want, msg_limit - received); END IF;
        n := 0;
        BEGIN
            SELECT array_agg(p.message_id), array_agg(p.receipt_handle), array_agg(p.body), array_agg(p.sent_at)
              INTO ids, handles, bodies, sents
              FROM sqs_loader.pull(q, want, vis,
                       least(wait_s, greatest(0, floor(extract(epoch FROM deadline - clock_timestamp())))::integer),
                       -- receive the next batch while this one is loaded, unless it is the last
                       msg_limit IS NULL OR received + 2 * want <= msg_limit) AS p;
            n := coalesce(cardinality(ids), 0);
            IF n > 0 THEN
                SELECT * INTO b FROM sqs_loader.load_batch(run_id, q, ids, bodies, sents);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_msg = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL, err_hint = PG_EXCEPTION_HINT;
        END;
        -- Nothing of this batch was committed; its messages reappear after the visibility timeout.
        EXIT WHEN err_state IS NOT NULL;
        IF n = 0 THEN
            EXIT WHEN exit_when_empty;
            IF wait_s = 0 THEN PERFORM pg_catalog.pg_sleep(0.5); END IF;
        ELSE
            received := received + n;
            loaded := loaded + b.loaded;
            rejected := rejected + b.rejected;
            skipped := skipped + b.skipped;
            UPDATE sqs_loader.load_runs r
               SET received = load_user_logins.received, loaded = load_user_logins.loaded,
                   rejected = load_user_logins.rejected, skipped = load_user_logins.skipped
             WHERE r.run_id = load_user_logins.run_id;
            -- The messages are deleted right after this COMMIT, so it must be durable even where
            -- synchronous_commit = off (a crash would otherwise lose rows whose messages are gone).
            IF pg_catalog.current_setting('synchronous_commit') = 'off' THEN
                PERFORM pg_catalog.set_config('synchronous_commit', 'local', true);
            END IF;
            COMMIT;
            -- Only now, with the rows committed, are the messages deleted from the queue: in the
            -- background, so that the next batch's receives and inserts overlap the deletes.
            BEGIN
                PERFORM sqs_loader.delete_async(q, handles);
                n_deleted := n_deleted + sqs_loader.delete_collect(false);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_msg = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL, err_hint = PG_EXCEPTION_HINT;
            END;
            -- The rows are committed; the undeleted messages will be recognised and skipped.
            EXIT WHEN err_state IS NOT NULL;
        END IF;
        IF clock_timestamp() - last_progress >= progress_every THEN
            RAISE NOTICE 'load_user_logins: % received, % loaded, % rejected, % skipped so far',
                received, loaded, rejected, skipped;
            last_progress := clock_timestamp();
        END IF;
    END LOOP;

    IF err_state IS NULL THEN
        BEGIN
            PERFORM sqs_loader.release_prefetched();
            n_deleted := n_deleted + sqs_loader.delete_collect(true);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_msg = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL, err_hint = PG_EXCEPTION_HINT;
        END;
    END IF;
    -- Every error above ends up here: recorded with the run (and committed), then raised.
    IF err_state IS NOT NULL THEN
        PERFORM sqs_loader.fail_run(run_id, n_deleted, err_state, err_msg);
        COMMIT;
        RAISE EXCEPTION USING ERRCODE = err_state, MESSAGE = err_msg,
            DETAIL = coalesce(err_detail, ''), HINT = coalesce(err_hint, '');
    END IF;
    DELETE FROM sqs_loader.processed_messages
     WHERE processed_at < now() - pg_catalog.make_interval(
               days => pg_catalog.current_setting('sqs_loader.dedup_retention_days')::integer);
    UPDATE sqs_loader.load_runs r
       SET ended_at = clock_timestamp(), status = 'succeeded', deleted = n_deleted,
           received = load_user_logins.received, loaded = load_user_logins.loaded,
           rejected = load_user_logins.rejected, skipped = load_user_logins.skipped
     WHERE r.run_id = load_user_logins.run_id;
    COMMIT;
END
$$;
COMMENT ON PROCEDURE @extschema@.load_user_logins(text, integer, integer, bigint, bigint, bigint, bigint, bigint) IS
  'Pull login events from SQS, mask them and insert them into user_logins, exactly once. CALL it from psql or pg_cron; returns received/loaded/rejected/skipped and the run id.';

-- Queue depth without failing when the queue is unreachable.
CREATE FUNCTION sqs_loader.queue_depth(p_queue_url text) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a jsonb;
BEGIN
    IF p_queue_url IS NULL THEN
        RETURN NULL;
    END IF;
    a := @extschema@.sqs_queue_attributes(p_queue_url);
    RETURN jsonb_build_object(
        'visible', a -> 'ApproximateNumberOfMessages',
        'in_flight', a -> 'ApproximateNumberOfMessagesNotVisible',
        'delayed', a -> 'ApproximateNumberOfMessagesDelayed');
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('error', SQLERRM);
END
$$;
COMMENT ON FUNCTION sqs_loader.queue_depth(text) IS
  'Visible, in-flight and delayed message counts of a queue, or {"error": …} when it cannot be reached.';

-- Late-bound (PL/pgSQL), so that the view does not depend on user_logins, which is not part
-- of the extension and may be created after it (restores).
CREATE FUNCTION sqs_loader.user_logins_rows() RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT count(*) FROM @extschema@.user_logins);
EXCEPTION WHEN undefined_table THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sqs_loader.user_logins_rows() IS 'Rows in user_logins (NULL when the table does not exist).';

CREATE VIEW @extschema@.load_health AS
SELECT
    sqs_loader.user_logins_rows() AS user_logins_rows,
    (SELECT coalesce(jsonb_object_agg(reason, n), '{}') FROM
        (SELECT reason, count(*) AS n FROM sqs_loader.rejected_messages GROUP BY reason) AS r) AS rejected_by_reason,
    (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.run_id DESC), '[]') FROM
        (SELECT r.run_id, r.started_at, r.ended_at,
                CASE WHEN r.status = 'running'
                      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = r.backend_pid)
                     THEN 'aborted' ELSE r.status END AS status,
                r.received, r.loaded, r.rejected, r.skipped, r.deleted, r.error
           FROM sqs_loader.load_runs r ORDER BY r.run_id DESC LIMIT 5) AS x) AS last_runs,
    nullif(pg_catalog.current_setting('sqs_loader.queue_url', true), '') AS queue_url,
    sqs_loader.queue_depth(nullif(pg_catalog.current_setting('sqs_loader.queue_url', true), '')) AS queue_depth;
COMMENT ON VIEW @extschema@.load_health IS
  'Health of the load: rows in user_logins, rejects by reason, the last 5 runs (a crashed run shows as aborted), and the depth of sqs_loader.queue_url.';
