-- The ETL: load_user_logins() and what it needs. Orchestration is SQL; parsing, masking and
-- SQS calls are the Rust functions.

-- Claim message ids for a run (exactly once: a message id already recorded was loaded or
-- rejected before, and is skipped). p_ids are distinct and sorted: concurrent loaders lock them
-- in the same order. Usually every id is new, and a plain INSERT is the cheap way; when one is
-- not (a redelivery), the INSERT is undone and ON CONFLICT DO NOTHING claims the others.
-- Returns the ids claimed. Called by prepare_batch().
CREATE FUNCTION sqs_loader.claim_messages(p_run_id bigint, p_ids text[], p_valid boolean[],
                                          p_sent timestamptz[]) RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claimed text[];
BEGIN
    BEGIN
        INSERT INTO sqs_loader.processed_messages (message_id, outcome, run_id, sent_at)
        SELECT u.id, CASE WHEN u.ok THEN 'loaded' ELSE 'rejected' END, p_run_id, u.sent
          FROM (SELECT unnest(p_ids), unnest(p_valid), unnest(p_sent)) AS u(id, ok, sent);
        RETURN p_ids;
    EXCEPTION WHEN unique_violation THEN
        NULL;
    END;
    WITH ins AS (
        INSERT INTO sqs_loader.processed_messages (message_id, outcome, run_id, sent_at)
        SELECT u.id, CASE WHEN u.ok THEN 'loaded' ELSE 'rejected' END, p_run_id, u.sent
          FROM (SELECT unnest(p_ids), unnest(p_valid), unnest(p_sent)) AS u(id, ok, sent)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING message_id)
    SELECT coalesce(array_agg(message_id), '{}') INTO claimed FROM ins;
    RETURN claimed;
END
$$;
COMMENT ON FUNCTION sqs_loader.claim_messages(bigint, text[], boolean[], timestamptz[]) IS
  'Record message ids in processed_messages for a run (outcome loaded or rejected); returns those claimed: an id recorded already is skipped. Internal to prepare_batch().';

-- One batch, inside the caller's transaction: claim the message ids (exactly once), insert the
-- valid events masked, record the rejected ones. Returns the counts.
CREATE FUNCTION sqs_loader.load_batch(
    p_run_id bigint, p_queue_url text, p_ids text[], p_bodies text[], p_sent timestamptz[],
    OUT loaded integer, OUT rejected integer, OUT skipped integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b record;
    n integer;
    refused_ids text[] := '{}';
    refused_details text[] := '{}';
    st text;
    msg text;
BEGIN
    -- In one call: parse each distinct message once (SQS may deliver one message twice in a
    -- batch); claim the message ids, sorted (one recorded already, loaded earlier and its
    -- delete lost, is skipped); mask the IPs and device ids of the claimed valid ones with one
    -- vault upsert. What comes back are column arrays: b.ips and b.device_ids hold tokens.
    SELECT * INTO b FROM sqs_loader.prepare_batch(p_run_id, p_ids, p_bodies, p_sent);
    skipped := b.skipped;

    -- Valid events: insert the rows. The arrays are unnested in a select list (one pass, in
    -- step: ProjectSet), not as unnest(a, b, ...) in FROM, which first copies every array into
    -- a tuplestore of its own (that insert took 1.7x the time of this one: docs/performance.md).
    n := cardinality(b.message_ids);
    loaded := 0;
    IF n > 0 THEN
        BEGIN
            INSERT INTO @extschema@.user_logins
                   (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
            SELECT v.user_id, v.device_type, v.ip, v.device_id, v.locale, v.app_version,
                   (least(v.sent_at, v.event_at) AT TIME ZONE 'UTC')::date
              FROM (SELECT unnest(b.user_ids), unnest(b.device_types), unnest(b.ips), unnest(b.device_ids),
                           unnest(b.locales), unnest(b.app_versions), unnest(b.sent_ats), unnest(b.event_ats))
                   AS v(user_id, device_type, ip, device_id, locale, app_version, sent_at, event_at);
            GET DIAGNOSTICS loaded = ROW_COUNT;
        EXCEPTION WHEN data_exception OR integrity_constraint_violation OR plpgsql_error THEN
            -- The table refused a row (a column narrower than the parser allows, a CHECK
            -- constraint, a trigger that raises): insert one at a time, and reject only the rows
            -- it refuses, with their SQLSTATE and message. Other errors (locks, privileges, a
            -- missing table) are not about one row: they fail the batch, which comes back.
            FOR i IN 1 .. n LOOP
                BEGIN
                    INSERT INTO @extschema@.user_logins
                           (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
                    VALUES (b.user_ids[i], b.device_types[i], b.ips[i], b.device_ids[i], b.locales[i],
                            b.app_versions[i], (least(b.sent_ats[i], b.event_ats[i]) AT TIME ZONE 'UTC')::date);
                    loaded := loaded + 1;
                EXCEPTION WHEN data_exception OR integrity_constraint_violation OR plpgsql_error THEN
                    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                    refused_ids := refused_ids || b.message_ids[i];
                    refused_details := refused_details || (st || ': ' || msg);
                END;
            END LOOP;
            UPDATE sqs_loader.processed_messages SET outcome = 'rejected' WHERE message_id = ANY (refused_ids);
        END;
    END IF;

    -- Rejected messages, with reason and body. A message rejected earlier and received again
    -- after its id was pruned from processed_messages replaces its old record.
    INSERT INTO sqs_loader.rejected_messages AS old (message_id, queue_url, sent_at, reason, detail, body, run_id)
    SELECT r.id, p_queue_url, r.sent_at, r.reason, r.detail, r.body, p_run_id
      FROM unnest(b.rejected_ids, b.rejected_sent_ats, b.reject_reasons, b.reject_details, b.rejected_bodies)
           AS r(id, sent_at, reason, detail, body)
    UNION ALL
    -- Valid messages the table refused (rare: the bodies are taken from the arguments).
    SELECT DISTINCT ON (f.id) f.id, p_queue_url, m.sent_at, 'insert_failed', f.detail, m.body, p_run_id
      FROM unnest(refused_ids, refused_details) AS f(id, detail)
      JOIN unnest(p_ids, p_bodies, p_sent) AS m(id, body, sent_at) ON m.id = f.id
    ON CONFLICT (message_id) DO UPDATE
       SET queue_url = excluded.queue_url, sent_at = excluded.sent_at, rejected_at = now(),
           reason = excluded.reason, detail = excluded.detail, body = excluded.body, run_id = excluded.run_id;
    GET DIAGNOSTICS rejected = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION sqs_loader.load_batch(bigint, text, text[], text[], timestamptz[]) IS
  'One batch of load_user_logins(), in the caller''s transaction: claim message ids, insert masked rows (a row the table refuses is rejected as insert_failed, its neighbours load), record rejects.';

-- A batch with a message received sqs_loader.poison_receive_count times or more has failed
-- before (a batch that fails comes back whole): load it one message at a time, each in its own
-- subtransaction, so that one message that makes loading fail (a trigger, a permission, whatever
-- the loader cannot tell from the body) does not block the queue. A message that fails alone
-- is rejected as load_failed when it is such a message; otherwise the batch fails as before. So
-- does it when every message of a batch of several fails (the cause is not one message), or on a
-- cancel, a lost connection, a lack of resources, a serialization failure or a lock timeout.
CREATE FUNCTION sqs_loader.load_each(
    p_run_id bigint, p_queue_url text, p_ids text[], p_bodies text[], p_sent timestamptz[],
    p_receive_counts integer[], p_poison_receive_count integer,
    OUT loaded integer, OUT rejected integer, OUT skipped integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b record;
    failed integer := 0;
    st text;
    msg text;
    det text;
    hnt text;
    keep_st text;
    keep_msg text;
    keep_det text;
    keep_hnt text;
BEGIN
    loaded := 0; rejected := 0; skipped := 0;
    FOR i IN 1 .. cardinality(p_ids) LOOP
        BEGIN
            SELECT * INTO b FROM sqs_loader.load_batch(p_run_id, p_queue_url, ARRAY[p_ids[i]], ARRAY[p_bodies[i]], ARRAY[p_sent[i]]);
            loaded := loaded + b.loaded; rejected := rejected + b.rejected; skipped := skipped + b.skipped;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
            failed := failed + 1;
            IF coalesce(p_receive_counts[i], 0) < p_poison_receive_count
               OR left(st, 2) IN ('08', '40', '53', '57', '58') OR st = '55P03' THEN
                -- Not (yet) a poison message, or not about this message: the batch fails.
                keep_st := coalesce(keep_st, st); keep_msg := coalesce(keep_msg, msg);
                keep_det := coalesce(keep_det, det); keep_hnt := coalesce(keep_hnt, hnt);
            ELSE
                INSERT INTO sqs_loader.processed_messages (message_id, outcome, run_id, sent_at)
                VALUES (p_ids[i], 'rejected', p_run_id, p_sent[i])
                ON CONFLICT (message_id) DO UPDATE SET outcome = 'rejected', run_id = excluded.run_id;
                INSERT INTO sqs_loader.rejected_messages AS old (message_id, queue_url, sent_at, reason, detail, body, run_id)
                VALUES (p_ids[i], p_queue_url, p_sent[i], 'load_failed',
                        format('%s: %s (received %s times)', st, msg, p_receive_counts[i]), p_bodies[i], p_run_id)
                ON CONFLICT (message_id) DO UPDATE
                   SET queue_url = excluded.queue_url, sent_at = excluded.sent_at, rejected_at = now(),
                       reason = excluded.reason, detail = excluded.detail, body = excluded.body, run_id = excluded.run_id;
                rejected := rejected + 1;
            END IF;
        END;
    END LOOP;
    IF keep_st IS NULL AND failed = cardinality(p_ids) AND failed > 1 THEN
        -- Every message failed: the cause is not one of them. Undo the rejections, fail the batch.
        keep_st := st; keep_msg := msg; keep_det := det; keep_hnt := hnt;
    END IF;
    IF keep_st IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = keep_st, MESSAGE = keep_msg, DETAIL = coalesce(keep_det, ''), HINT = coalesce(keep_hnt, '');
    END IF;
END
$$;
COMMENT ON FUNCTION sqs_loader.load_each(bigint, text, text[], text[], timestamptz[], integer[], integer) IS
  'A batch that failed before, loaded one message at a time: a message received poison_receive_count times that fails alone is rejected as load_failed, the others load; a failure that is not one message''s fails the batch.';

-- ---------------------------------------------------------------- runs
-- A run is a row of sqs_loader.load_runs (its limits, counts, status) plus what its backend
-- keeps in memory (the prefetched batch, background deletes). load_user_logins() and the
-- background workers drive a run through the same three functions:
--   run_begin() -> COMMIT -> { run_batch() -> COMMIT } until it returns false -> run_end() -> COMMIT.
-- Each has a pinned search_path; the procedure itself (which cannot have one, as it COMMITs)
-- calls nothing but these schema-qualified functions.

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
    IF s.visibility_timeout = 1 THEN
        RAISE WARNING 'sqs_loader.visibility_timeout = 1 s: too short for the visibility heartbeat'
            USING DETAIL = 'Received messages are extended while their batch waits or loads only when the timeout is at least 2 s; with 1 s another consumer may receive them meanwhile (they are then skipped, not loaded twice).',
                  HINT = 'SET sqs_loader.visibility_timeout to 2 or more (0 uses the queue''s own).';
    END IF;
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
    counts integer[];
    poison integer;
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
    -- At most sqs_loader.max_runs_per_queue runs of a queue load at a time: while they all do,
    -- wait (up to a second, then come back here after the checks above).
    IF NOT sqs_loader.run_slot(r.queue_url,
               least(1000, greatest(0, extract(epoch FROM r.deadline - clock_timestamp()) * 1000))::integer) THEN
        RETURN true;
    END IF;
    want := r.batch_size;
    IF r.max_messages IS NOT NULL THEN
        want := least(want, r.max_messages - r.received);
    END IF;
    BEGIN
        SELECT p.message_ids, p.receipt_handles, p.bodies, p.sent_ats, p.receive_counts
          INTO ids, handles, bodies, sents, counts
          FROM sqs_loader.pull(r.queue_url, want, r.visibility_timeout,
                   least(r.wait_seconds, greatest(0, floor(extract(epoch FROM r.deadline - clock_timestamp())))::integer),
                   -- receive the next batch while this one is loaded, unless it is the last
                   r.max_messages IS NULL OR r.received + 2 * want <= r.max_messages) AS p;
        n := coalesce(cardinality(ids), 0);
        IF n > 0 THEN
            -- On a Citus coordinator: the batch's rows go to each worker over one connection
            -- (in one remote transaction) instead of one per shard: several times the rate
            -- (docs/production.md#citus). For this transaction only.
            IF pg_catalog.current_setting('citus.multi_shard_modify_mode', true) = 'parallel' THEN
                PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
            END IF;
            poison := (SELECT poison_receive_count FROM sqs_loader.loader_settings());
            IF poison IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(counts) AS c WHERE c >= poison) THEN
                SELECT * INTO b FROM sqs_loader.load_each(p_run_id, r.queue_url, ids, bodies, sents, counts, poison);
            ELSE
                SELECT * INTO b FROM sqs_loader.load_batch(p_run_id, r.queue_url, ids, bodies, sents);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        -- Nothing of this batch is kept: its messages are given back to the queue at once.
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        PERFORM sqs_loader.batch_abandoned();
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
    ELSE
        UPDATE sqs_loader.load_runs
           SET received = received + n, loaded = loaded + b.loaded, rejected = rejected + b.rejected,
               skipped = skipped + b.skipped, batches = batches + 1, last_batch_at = clock_timestamp()
         WHERE run_id = p_run_id
        RETURNING * INTO r;
    END IF;
    -- A CALL reports its progress, also while it waits for messages (a worker has stat_loaders).
    IF r.mode = 'call' AND clock_timestamp() - r.progress_at >= make_interval(secs => (SELECT progress_seconds FROM sqs_loader.loader_settings())) THEN
        RAISE NOTICE 'load_user_logins: % received, % loaded, % rejected, % skipped so far',
            r.received, r.loaded, r.rejected, r.skipped;
        UPDATE sqs_loader.load_runs SET progress_at = clock_timestamp() WHERE run_id = p_run_id;
    END IF;
    IF n = 0 THEN
        RETURN true;
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

-- End a run: give up its slot of the queue (sqs_loader.max_runs_per_queue), give prefetched
-- messages back, wait for the last deletes, prune the bookkeeping,
-- record the outcome (stopped, for a background worker asked to stop). Returns the run's row.
CREATE FUNCTION sqs_loader.run_end(p_run_id bigint, p_stopped boolean DEFAULT false) RETURNS sqs_loader.load_runs
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
    PERFORM sqs_loader.run_slot_release();
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
           status = CASE WHEN status <> 'running' THEN status WHEN p_stopped THEN 'stopped' ELSE 'succeeded' END
     WHERE run_id = p_run_id
    RETURNING * INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION sqs_loader.run_end(bigint, boolean) IS
  'End a load run: give up its queue slot, release prefetched messages, wait for the background deletes, prune processed_messages, record the status.';

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

-- The job. A procedure (not a function) because it COMMITs after every batch; so it cannot run
-- inside an explicit transaction block, and cannot pin its search_path: it refers to nothing
-- but schema-qualified functions and a schema-qualified type (no operators, no casts).
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
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'visible', a -> 'ApproximateNumberOfMessages',
        'in_flight', a -> 'ApproximateNumberOfMessagesNotVisible',
        'delayed', a -> 'ApproximateNumberOfMessagesDelayed',
        -- Not a queue attribute on AWS (a CloudWatch metric); some endpoints report it.
        'oldest_age_seconds', a -> 'ApproximateAgeOfOldestMessage'));
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('error', SQLERRM);
END
$$;
COMMENT ON FUNCTION sqs_loader.queue_depth(text) IS
  'Visible, in-flight and delayed message counts of a queue (and the age of its oldest message where the endpoint reports it), or {"error": …} when it cannot be reached.';

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
