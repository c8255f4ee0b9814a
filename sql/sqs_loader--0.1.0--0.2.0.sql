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


-- ---------------------------------------------------------------- PII: erasure, audit, recovery
-- Erasure leaves a tombstone in the vault (sealed NULL) instead of a row in a separate table,
-- so that masking and erasing the same value serialise on the token's key. 0.1.0's erasures
-- become tombstones; a value 0.1.0 stored again after its erasure (the race) is erased now.
ALTER TABLE sqs_loader.vault
    ALTER COLUMN data_key_id DROP NOT NULL,
    ALTER COLUMN sealed DROP NOT NULL,
    ADD COLUMN erased_at timestamptz,
    ADD COLUMN erased_by text,
    ADD COLUMN value_erased boolean;
INSERT INTO sqs_loader.vault AS v (token, erased_at, erased_by)
SELECT e.token, e.erased_at, e.erased_by FROM sqs_loader.erased e
ON CONFLICT (token) DO UPDATE
   SET data_key_id = NULL, sealed = NULL, erased_at = excluded.erased_at, erased_by = excluded.erased_by;
ALTER TABLE sqs_loader.vault
    ADD CHECK ((sealed IS NULL) = (data_key_id IS NULL)),
    ADD CHECK ((sealed IS NULL) = (erased_at IS NOT NULL));
COMMENT ON TABLE sqs_loader.vault IS
  'One row per distinct masked value: nonce || AES-256-GCM(value), the token as associated data; or, once erased with forget_pii(), a tombstone (sealed NULL) that keeps the value from being stored again.';
ALTER EXTENSION sqs_loader DROP TABLE sqs_loader.erased;
DROP TABLE sqs_loader.erased;
CREATE VIEW sqs_loader.erased AS
SELECT token, erased_at, erased_by, value_erased FROM sqs_loader.vault WHERE erased_at IS NOT NULL;
COMMENT ON VIEW sqs_loader.erased IS
  'Tokens erased with forget_pii(): when, by whom, and whether a value was stored (false: erased before it was ever seen; NULL: erased by 0.1.0).';

-- The audit covers every access to PII now: unmask, export (sealed_values), mask (lookups).
ALTER TABLE sqs_loader.unmask_audit
    ADD COLUMN action text NOT NULL DEFAULT 'unmask' CHECK (action IN ('unmask', 'export', 'mask')),
    ADD COLUMN value_count integer;
COMMENT ON TABLE sqs_loader.unmask_audit IS
  'Every access to PII: unmask_pii() (unmask), sealed_values() (export), mask_pii()/mask_pii_batch() lookups (mask); written in its own transaction before anything is returned (callers cannot roll it back).';

DO $role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sqs_loader_unmask') THEN
        CREATE ROLE sqs_loader_unmask NOLOGIN;
        COMMENT ON ROLE sqs_loader_unmask IS
          'Members may recover masked values with an RSA private key: unmask_pii() and sealed_values() (sqs_loader).';
    END IF;
END
$role$;
-- Roles 0.1.0 let unmask (EXECUTE on unmask_pii) keep that right, as members of the new role.
DO $grant$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid IN ('@extschema@.unmask_pii(text, text)'::regprocedure,
                              '@extschema@.unmask_pii(text, text, text)'::regprocedure)
                AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT sqs_loader_unmask TO %s', r.grantee);
        RAISE NOTICE 'sqs_loader 0.2.0: % may unmask, so it is now a member of sqs_loader_unmask', r.grantee;
    END LOOP;
END
$grant$;

DROP FUNCTION sqs_loader.audit_unmask(text, text);
CREATE FUNCTION sqs_loader."audit_access"(
	"action" TEXT,
	"tokens" TEXT[],
	"outcomes" TEXT[]
) RETURNS VOID
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'audit_access_wrapper';
CREATE FUNCTION sqs_loader."protect_statement"(
	"secrets" TEXT[]
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'protect_statement_wrapper';
CREATE FUNCTION sqs_loader."require_caller"(
	"what" TEXT,
	"role" TEXT
) RETURNS VOID
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'require_caller_wrapper';
CREATE FUNCTION sqs_loader."require_preloaded"(
	"what" TEXT
) RETURNS VOID
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'require_preloaded_wrapper';
COMMENT ON FUNCTION sqs_loader.audit_access(text, text[], text[]) IS 'Commit PII audit rows from a background worker before anything is returned (internal).';
COMMENT ON FUNCTION sqs_loader.protect_statement(text[]) IS
  'Mask private keys and the given secrets in the running statement, its pg_stat_activity entry and later log lines (internal; first call of every function that takes a secret).';
COMMENT ON FUNCTION sqs_loader.require_caller(text, text) IS
  'Refuse (42501) unless the calling role is a superuser or has the privileges of the given role (internal).';
COMMENT ON FUNCTION sqs_loader.require_preloaded(text) IS
  'Refuse (55000) unless sqs_loader is in shared_preload_libraries, so that every session masks keys in the log (internal).';
COMMENT ON FUNCTION @extschema@.mask_pii(text) IS
  'Token of a value, to look it up in the data (WHERE masked_ip = mask_pii(''203.0.113.7'')): deterministic, keyed. Stores nothing; every distinct value looked up is audited. NULL in, NULL out.';
COMMENT ON FUNCTION @extschema@.mask_pii_batch(text[]) IS
  'Tokens of many values to look them up: one (value, token) row per distinct non-null value. Stores nothing; the call is audited with the number of values.';

CREATE OR REPLACE FUNCTION @extschema@.set_token_key(key bytea) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$
DECLARE
    kid text;
BEGIN
    -- The key must reach no log and no pg_stat_activity: mask it (as hex or base64, however it
    -- was written) before anything can fail, then check who is asking.
    PERFORM sqs_loader.protect_statement(ARRAY[encode(key, 'hex'), upper(encode(key, 'hex')), encode(key, 'base64')]);
    PERFORM sqs_loader.require_caller('set_token_key()', 'superuser');
    kid := sqs_loader.token_key_id(key);
    IF NOT EXISTS (SELECT 1 FROM sqs_loader.token_key WHERE key_id = kid) THEN
        INSERT INTO sqs_loader.token_key (secret, key_id, origin) VALUES (key, kid, 'set');
    END IF;
    RETURN kid;
END
$$;
COMMENT ON FUNCTION @extschema@.set_token_key(bytea) IS
  'Install a 32-byte token key (restore one from backup, or share one between databases); superusers only. Refused once values were masked with another key. Returns its key id. The key is masked in the log and pg_stat_activity.';

CREATE OR REPLACE FUNCTION @extschema@.rotate_rsa_key(new_public_key text, old_private_key text, passphrase text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$
DECLARE
    new_key record;
    old_fp text;
    n bigint;
    left_over bigint;
BEGIN
    PERFORM sqs_loader.protect_statement(ARRAY[passphrase]);
    PERFORM sqs_loader.require_caller('rotate_rsa_key()', 'superuser');
    PERFORM sqs_loader.require_preloaded('rotate_rsa_key()');
    old_fp := sqs_loader.private_key_fingerprint(old_private_key, passphrase);
    SELECT * INTO new_key FROM sqs_loader.rsa_key_info(new_public_key);
    IF new_key.fingerprint = old_fp THEN
        RAISE EXCEPTION 'the new public key is the old key' USING ERRCODE = '22023';
    END IF;
    -- Deactivating the old key waits for sessions that are creating a data key under it.
    UPDATE sqs_loader.rsa_keys SET active = false, retired_at = now() WHERE active;
    INSERT INTO sqs_loader.rsa_keys (fingerprint, public_key, bits, active)
    VALUES (new_key.fingerprint, new_key.pem, new_key.bits, true)
    ON CONFLICT (fingerprint) DO UPDATE SET active = true, retired_at = NULL;
    UPDATE sqs_loader.data_keys
       SET wrapped_key = sqs_loader.rewrap(wrapped_key, old_private_key, passphrase, new_key.pem),
           rsa_fingerprint = new_key.fingerprint
     WHERE rsa_fingerprint = old_fp;
    GET DIAGNOSTICS n = ROW_COUNT;
    SELECT count(*) INTO left_over FROM sqs_loader.data_keys WHERE rsa_fingerprint <> new_key.fingerprint;
    IF left_over > 0 THEN
        RAISE NOTICE '% data key(s) remain wrapped under other, older RSA keys', left_over
            USING HINT = 'Rotate again with each of those private keys.';
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.rotate_rsa_key(text, text, text) IS
  'Re-wrap every data key of the old key pair under a new public key (tokens unchanged; the old private key opens nothing afterwards); superusers only. Returns how many were re-wrapped.';

-- One statement, so that it serialises with masking on the token's unique key: a concurrent
-- transaction that is storing the value makes this wait and then erase what it committed; one
-- that stores the value after this makes it wait and then find the tombstone.
CREATE OR REPLACE FUNCTION @extschema@.forget_pii(token text) RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH e AS (
        INSERT INTO sqs_loader.vault AS v (token, erased_at, erased_by, value_erased)
        VALUES (forget_pii.token, now(), session_user, false)
        ON CONFLICT (token) DO UPDATE
           SET data_key_id = NULL, sealed = NULL, erased_at = now(), erased_by = session_user,
               value_erased = v.sealed IS NOT NULL
         WHERE v.erased_at IS NULL
        RETURNING v.value_erased)
    SELECT coalesce((SELECT value_erased FROM e), false);
$$;
COMMENT ON FUNCTION @extschema@.forget_pii(text) IS
  'Erase a masked value (crypto-shredding): its sealed value is deleted and a tombstone keeps it from ever being stored again, whatever runs concurrently; the token stays in the data as an opaque id. True when a value was erased.';

-- The one place that reveals values on the server. Callers reach it through the unmask_pii()
-- overloads, which every role may call: the refusal of non-members happens in here, after the
-- key was masked in the statement, so it never reaches the log (whatever the logging settings).
CREATE OR REPLACE FUNCTION sqs_loader.unmask(p_token text, p_private_key text, p_passphrase text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$
DECLARE
    v record;
    result text;
    st text;
    msg text;
    hint text;
BEGIN
    PERFORM sqs_loader.protect_statement(ARRAY[p_passphrase]);
    PERFORM sqs_loader.require_caller('unmask_pii()', 'sqs_loader_unmask');
    PERFORM sqs_loader.require_preloaded('unmask_pii()');
    IF p_token IS NULL THEN
        PERFORM sqs_loader.audit_access('unmask', ARRAY[NULL], ARRAY['null_token']);
        RETURN NULL;
    END IF;
    IF p_private_key IS NULL THEN
        PERFORM sqs_loader.audit_access('unmask', ARRAY[p_token], ARRAY['no_key']);
        RAISE EXCEPTION 'private_key must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT s.sealed, d.wrapped_key INTO v
      FROM sqs_loader.vault s LEFT JOIN sqs_loader.data_keys d ON d.id = s.data_key_id
     WHERE s.token = p_token;
    IF NOT FOUND OR v.sealed IS NULL THEN
        PERFORM sqs_loader.audit_access('unmask', ARRAY[p_token],
            ARRAY[CASE WHEN FOUND THEN 'erased' ELSE 'unknown_token' END]);
        RETURN NULL;
    END IF;
    BEGIN
        result := sqs_loader.unseal(p_token, v.sealed, v.wrapped_key, p_private_key, p_passphrase);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
        PERFORM sqs_loader.audit_access('unmask', ARRAY[p_token],
            ARRAY[CASE st WHEN '28000' THEN 'wrong_key' WHEN '22023' THEN 'bad_key' WHEN 'XX001' THEN 'corrupt' ELSE 'error ' || st END]);
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, HINT = coalesce(hint, '');
    END;
    PERFORM sqs_loader.audit_access('unmask', ARRAY[p_token], ARRAY['ok']);
    RETURN result;
END
$$;
COMMENT ON FUNCTION sqs_loader.unmask(text, text, text) IS
  'Decrypt one token''s value with the RSA private key, after masking the key in the statement, checking the caller and committing its audit row. Internal: use unmask_pii().';

CREATE OR REPLACE FUNCTION @extschema@.unmask_pii(token text, private_key text) RETURNS text
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$ SELECT sqs_loader.unmask(token, private_key, NULL) $$;
COMMENT ON FUNCTION @extschema@.unmask_pii(text, text) IS
  'The original value of a token, with the RSA private key (PEM, PKCS#8 or PKCS#1); members of sqs_loader_unmask only. NULL for unknown or erased tokens. Audited in sqs_loader.unmask_audit; the key is masked in the log and pg_stat_activity. Prefer offline recovery (sealed_values and sqs_loader_unmask).';

CREATE OR REPLACE FUNCTION @extschema@.unmask_pii(token text, private_key text, passphrase text) RETURNS text
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$ SELECT sqs_loader.unmask(token, private_key, passphrase) $$;
COMMENT ON FUNCTION @extschema@.unmask_pii(text, text, text) IS
  'unmask_pii() with an encrypted PKCS#8 private key (BEGIN ENCRYPTED PRIVATE KEY) and its passphrase.';

-- Offline recovery: what a key holder needs to decrypt elsewhere (the private key never comes
-- to the server). Every token asked for is audited (action export) before anything is returned.
CREATE FUNCTION @extschema@.sealed_values(tokens text[])
RETURNS TABLE (token text, outcome text, sealed bytea, wrapped_key bytea, rsa_fingerprint text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    toks text[];
    outs text[];
    seals bytea[];
    wraps bytea[];
    fps text[];
BEGIN
    PERFORM sqs_loader.require_caller('sealed_values()', 'sqs_loader_unmask');
    SELECT array_agg(t.t ORDER BY t.t),
           array_agg(CASE WHEN v.token IS NULL THEN 'unknown_token' WHEN v.sealed IS NULL THEN 'erased'
                          ELSE 'exported' END ORDER BY t.t),
           array_agg(v.sealed ORDER BY t.t), array_agg(d.wrapped_key ORDER BY t.t),
           array_agg(d.rsa_fingerprint ORDER BY t.t)
      INTO toks, outs, seals, wraps, fps
      FROM (SELECT DISTINCT u.t FROM unnest(tokens) AS u(t) WHERE u.t IS NOT NULL) AS t
      LEFT JOIN sqs_loader.vault v ON v.token = t.t
      LEFT JOIN sqs_loader.data_keys d ON d.id = v.data_key_id;
    IF toks IS NULL THEN
        RETURN;
    END IF;
    PERFORM sqs_loader.audit_access('export', toks, outs);
    RETURN QUERY SELECT * FROM unnest(toks, outs, seals, wraps, fps);
END
$$;
COMMENT ON FUNCTION @extschema@.sealed_values(text[]) IS
  'For offline recovery (tool sqs_loader_unmask): per distinct token, its sealed value and RSA-wrapped data key, or outcome erased / unknown_token. Members of sqs_loader_unmask only; every token is audited (export).';

-- For security officers: who can see or infer PII, and how.
CREATE VIEW sqs_loader.pii_access AS
SELECT r.rolname AS role,
       r.rolsuper AS superuser,
       r.rolsuper OR pg_has_role(r.oid, 'sqs_loader_unmask', 'USAGE') AS can_unmask,
       r.rolsuper OR has_function_privilege(r.oid, '@extschema@.sqs_pull(text, integer, integer, integer)'::regprocedure, 'EXECUTE')
           OR (has_schema_privilege(r.oid, 'sqs_loader', 'USAGE')
               AND has_table_privilege(r.oid, 'sqs_loader.rejected_messages', 'SELECT')) AS can_read_raw_bodies,
       r.rolsuper OR has_function_privilege(r.oid, '@extschema@.mask_pii(text)'::regprocedure, 'EXECUTE')
           OR has_function_privilege(r.oid, '@extschema@.mask_pii_batch(text[])'::regprocedure, 'EXECUTE') AS can_look_up_tokens,
       r.rolsuper OR has_function_privilege(r.oid, '@extschema@.sqs_send(text, text[])'::regprocedure, 'EXECUTE') AS can_send_messages,
       r.rolsuper OR has_function_privilege(r.oid, '@extschema@.forget_pii(text)'::regprocedure, 'EXECUTE') AS can_erase
  FROM pg_roles r
 WHERE r.rolname !~ '^pg_'
   AND (r.rolsuper OR pg_has_role(r.oid, 'sqs_loader_unmask', 'USAGE')
        OR has_function_privilege(r.oid, '@extschema@.sqs_pull(text, integer, integer, integer)'::regprocedure, 'EXECUTE')
        OR has_function_privilege(r.oid, '@extschema@.mask_pii(text)'::regprocedure, 'EXECUTE')
        OR has_function_privilege(r.oid, '@extschema@.mask_pii_batch(text[])'::regprocedure, 'EXECUTE')
        OR has_function_privilege(r.oid, '@extschema@.sqs_send(text, text[])'::regprocedure, 'EXECUTE')
        OR has_function_privilege(r.oid, '@extschema@.forget_pii(text)'::regprocedure, 'EXECUTE')
        OR (has_schema_privilege(r.oid, 'sqs_loader', 'USAGE')
            AND has_table_privilege(r.oid, 'sqs_loader.rejected_messages', 'SELECT')));
COMMENT ON VIEW sqs_loader.pii_access IS
  'Who can see or infer PII: recover values (can_unmask), read raw message bodies (sqs_pull, rejected_messages), look up tokens of guessed values (mask_pii*), send messages the loader masks (sqs_send + SELECT on user_logins is a guessing oracle), erase. One row per role that can do any of it.';

GRANT EXECUTE ON FUNCTION
    @extschema@.unmask_pii(text, text),
    @extschema@.unmask_pii(text, text, text),
    @extschema@.set_token_key(bytea),
    @extschema@.rotate_rsa_key(text, text, text)
TO PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.sealed_values(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.sealed_values(text[]) TO sqs_loader_unmask;

-- ---------------------------------------------------------------- privileges (as a fresh install)
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sqs_loader FROM PUBLIC;
