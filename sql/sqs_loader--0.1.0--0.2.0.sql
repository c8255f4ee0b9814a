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
	"dedup_retention_days" INT,
	"poison_receive_count" INT
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
-- record the outcome. Returns the run's row.
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
-- so that masking and erasing the same value serialise on the token's unique key. 0.1.0's erasures
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
ALTER EXTENSION sqs_loader DROP TABLE sqs_loader.erased;
DROP TABLE sqs_loader.erased;
CREATE VIEW sqs_loader.erased AS
SELECT token, erased_at, erased_by, value_erased FROM sqs_loader.vault WHERE erased_at IS NOT NULL;
COMMENT ON VIEW sqs_loader.erased IS
  'Tokens erased with forget_pii(): when, by whom, and whether a value was stored (false: erased before it was ever seen; NULL: erased by 0.1.0).';

-- The vault's key: 16 bytes instead of the token's 46 characters. The B-tree is half the size
-- and a store cheaper per value (docs/performance.md). The first 16 bytes of the SHA-256 of the
-- token's text (masking computes the same in Rust, src/postgres/vault.rs): every character
-- counts, so no other text shares a token's key — forget_pii() takes any text, and must not
-- reach another token's row. (The token's own HMAC bytes would be free, but only its first 22
-- characters carry them.)
CREATE FUNCTION sqs_loader.token_id(p_token text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.encode(pg_catalog.substr(
    pg_catalog.sha256(pg_catalog.convert_to(p_token, pg_catalog.getdatabaseencoding())), 1, 16),
    'hex')::pg_catalog.uuid;
COMMENT ON FUNCTION sqs_loader.token_id(text) IS
  'The vault key of a token: the first 16 bytes of the SHA-256 of its text. Internal.';

ALTER TABLE sqs_loader.vault ADD COLUMN id uuid;
UPDATE sqs_loader.vault SET id = sqs_loader.token_id(token);
ALTER TABLE sqs_loader.vault
    DROP CONSTRAINT vault_pkey,
    ADD PRIMARY KEY (id),
    ALTER COLUMN token SET NOT NULL;
COMMENT ON TABLE sqs_loader.vault IS
  'One row per distinct masked value, keyed by sqs_loader.token_id(token): nonce || AES-256-GCM(value), the token as associated data; or, once erased with forget_pii(), a tombstone (sealed NULL) that keeps the value from being stored again.';

-- The audit covers every access to PII now: unmask, export (sealed_values), mask (lookups).
ALTER TABLE sqs_loader.unmask_audit
    ADD COLUMN action text NOT NULL DEFAULT 'unmask' CHECK (action IN ('unmask', 'export', 'mask')),
    ADD COLUMN value_count integer;
COMMENT ON TABLE sqs_loader.unmask_audit IS
  'Every access to PII: unmask_pii() (unmask), sealed_values() (export), mask_pii()/mask_pii_batch() lookups (mask); written in its own transaction before anything is returned (callers cannot roll it back).';

DO $role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sqs_loader_unmask') THEN
        BEGIN
            CREATE ROLE sqs_loader_unmask NOLOGIN;
            COMMENT ON ROLE sqs_loader_unmask IS
              'Members may recover masked values with an RSA private key: unmask_pii() and sealed_values() (sqs_loader).';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            -- Roles are cluster-wide: CREATE EXTENSION in another database made it meanwhile.
            NULL;
        END;
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

-- One statement, so that it serialises with masking on the token's unique id: a concurrent
-- transaction that is storing the value makes this wait and then erase what it committed; one
-- that stores the value after this makes it wait and then find the tombstone.
CREATE OR REPLACE FUNCTION @extschema@.forget_pii(token text) RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH e AS (
        INSERT INTO sqs_loader.vault AS v (id, token, erased_at, erased_by, value_erased)
        VALUES (sqs_loader.token_id(forget_pii.token), forget_pii.token, now(), session_user, false)
        ON CONFLICT (id) DO UPDATE
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
     WHERE s.id = sqs_loader.token_id(p_token) AND s.token = p_token;
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
      LEFT JOIN sqs_loader.vault v ON v.id = sqs_loader.token_id(t.t) AND v.token = t.t
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

-- ---------------------------------------------------------------- hardening
-- A row user_logins refuses is rejected as insert_failed, its neighbours load; a reject
-- received again replaces its record.
-- One batch, inside the caller's transaction: claim the message ids (exactly once), insert the
-- valid events masked, record the rejected ones. Returns the counts.
CREATE OR REPLACE FUNCTION sqs_loader.load_batch(
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


-- Every function that runs SQL pins its search_path (the sqs_* functions now look for
-- credentials stored in pg_db_role_setting).
ALTER FUNCTION @extschema@.sqs_pull(text, integer, integer, integer) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.sqs_delete(text, text[]) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.sqs_send(text, text[]) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.sqs_create_queue(text, jsonb) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.sqs_queue_attributes(text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION sqs_loader.release_prefetched() SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION sqs_loader.delete_collect(boolean) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION sqs_loader.delete_after_commit(text, text[]) SET search_path TO pg_catalog, pg_temp;

-- ---------------------------------------------------------------- continuous loading
-- Each message's SentTimestamp and the moment its batch claimed it: stat_loaders' latency.
ALTER TABLE sqs_loader.processed_messages
    ALTER COLUMN processed_at SET DEFAULT clock_timestamp(),
    ADD COLUMN sent_at timestamptz;
COMMENT ON TABLE sqs_loader.processed_messages IS
  'SQS MessageIds already loaded or rejected, committed with their rows: a redelivered message is skipped. Pruned after sqs_loader.dedup_retention_days. With its SentTimestamp and when it was loaded: the latency and lag figures of stat_loaders.';

CREATE FUNCTION sqs_loader."batch_abandoned"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'batch_abandoned_wrapper';
COMMENT ON FUNCTION sqs_loader.batch_abandoned() IS
  'The batch being loaded failed: give its messages back to the queue now and stop keeping them invisible (internal to the loader).';

CREATE FUNCTION sqs_loader."check_queue_url"("queue_url" TEXT) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_queue_url_wrapper';
COMMENT ON FUNCTION sqs_loader.check_queue_url(text) IS
  'Raise the error a request to this queue URL would raise for its form, the host allow-list or exposed credentials (internal to start_worker()).';

-- At most sqs_loader.max_runs_per_queue runs of one queue load at a time (run_batch, run_end).
CREATE FUNCTION sqs_loader."run_slot"(
	"queue_url" TEXT,
	"wait_ms" INT
) RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'run_slot_wrapper';
COMMENT ON FUNCTION sqs_loader.run_slot(text, integer) IS
  'Whether this run may load a batch of the queue now: it holds one of the queue''s sqs_loader.max_runs_per_queue slots (a session advisory lock) or takes a free one, waiting up to wait_ms (internal to the loader).';
CREATE FUNCTION sqs_loader."run_slot_release"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'run_slot_release_wrapper';
COMMENT ON FUNCTION sqs_loader.run_slot_release() IS
  'Give up the queue slot this backend''s run holds (internal to run_end(); an aborted transaction gives it up too).';

CREATE FUNCTION sqs_loader."launch_supervisor"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'launch_supervisor_wrapper';
COMMENT ON FUNCTION sqs_loader.launch_supervisor() IS
  'Start this database''s background-worker supervisor once the transaction commits (internal to start_worker()).';

-- Queue depth without failing when the queue is unreachable.
CREATE OR REPLACE FUNCTION sqs_loader.queue_depth(p_queue_url text) RETURNS jsonb
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

-- ---------------------------------------------------------------- envelopes (#14)
-- SNS notifications and EventBridge events are unwrapped; the envelope's time counts for
-- create_date when it is the earliest.
DROP FUNCTION sqs_loader.parse_login(text);
CREATE FUNCTION sqs_loader."parse_login"(
	"body" TEXT
) RETURNS TABLE (
	"user_id" TEXT,
	"device_type" TEXT,
	"ip" TEXT,
	"locale" TEXT,
	"device_id" TEXT,
	"app_version" INT,
	"reject_reason" TEXT,
	"reject_detail" TEXT,
	"envelope" TEXT,
	"event_at" timestamp with time zone
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'parse_login_wrapper';
COMMENT ON FUNCTION sqs_loader.parse_login(text) IS
  'Validate and flatten a message body, unwrapping an SNS notification or EventBridge event (envelope, event_at: its kind and time); reject_reason/reject_detail are set when it is not a login event.';

-- ---------------------------------------------------------------- FIFO queues (#14)
-- sqs_send() to a message group: an overload, so grants on sqs_send(text, text[]) stay.
CREATE FUNCTION @extschema@."sqs_send"(
	"queue_url" TEXT,
	"bodies" TEXT[],
	"message_group_id" TEXT
) RETURNS INT
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sqs_send_to_group_wrapper';
REVOKE EXECUTE ON FUNCTION @extschema@.sqs_send(text, text[], text) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.sqs_send(text, text[], text) IS
  'Send messages in one message group (what a FIFO queue requires), in order, each with its own deduplication id (a retried request is not sent twice); returns how many were sent.';

-- ---------------------------------------------------------------- one call per batch (#16)
-- Store sealed values under their tokens' ids (sorted: concurrent loaders lock them in the
-- same order), as masking does (src/postgres/vault.rs). A plain INSERT is the cheap way when every
-- token is new (one index descent per value instead of ON CONFLICT's two); when one is stored
-- already (by another backend, or erased: a tombstone), the INSERT fails and is undone, and
-- ON CONFLICT DO NOTHING stores the rest. Returns whether the plain INSERT did it.
CREATE FUNCTION sqs_loader.vault_store(p_ids uuid[], p_tokens text[], p_data_key_id bigint,
                                       p_sealed bytea[], p_try_plain boolean) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_try_plain THEN
        BEGIN
            INSERT INTO sqs_loader.vault (id, token, data_key_id, sealed)
            SELECT u.i, u.t, p_data_key_id, u.s FROM (SELECT unnest(p_ids), unnest(p_tokens), unnest(p_sealed)) AS u(i, t, s);
            RETURN true;
        EXCEPTION WHEN unique_violation THEN
            NULL;
        END;
    END IF;
    -- An erased token's row is a tombstone (sealed NULL): ON CONFLICT leaves it as it is, and
    -- waits for a concurrent forget_pii() of the same token to commit or abort first.
    INSERT INTO sqs_loader.vault (id, token, data_key_id, sealed)
    SELECT u.i, u.t, p_data_key_id, u.s FROM (SELECT unnest(p_ids), unnest(p_tokens), unnest(p_sealed)) AS u(i, t, s)
    ON CONFLICT (id) DO NOTHING;
    RETURN false;
END
$$;
COMMENT ON FUNCTION sqs_loader.vault_store(uuid[], text[], bigint, bytea[], boolean) IS
  'Store sealed values under their tokens and ids (sqs_loader.token_id(token), computed by the caller), never over an existing row (a tombstone stays): a plain INSERT when p_try_plain and every id is new, else INSERT ... ON CONFLICT DO NOTHING. Internal to masking.';

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

-- load_batch() parses, claims and masks a batch with one call (instead of a parse_login() call
-- per message, a mask_values() call on arrays built from the parsed rows and statements over a
-- composite array), and inserts from the column arrays it returns: batch_row is gone.
CREATE FUNCTION sqs_loader."prepare_batch"(
	"run_id" bigint,
	"ids" TEXT[],
	"bodies" TEXT[],
	"sent" timestamp with time zone[]
) RETURNS TABLE (
	"skipped" INT,
	"message_ids" TEXT[],
	"user_ids" TEXT[],
	"device_types" TEXT[],
	"ips" TEXT[],
	"locales" TEXT[],
	"device_ids" TEXT[],
	"app_versions" INT[],
	"sent_ats" timestamp with time zone[],
	"event_ats" timestamp with time zone[],
	"rejected_ids" TEXT[],
	"rejected_sent_ats" timestamp with time zone[],
	"reject_reasons" TEXT[],
	"reject_details" TEXT[],
	"rejected_bodies" TEXT[]
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'prepare_batch_wrapper';
COMMENT ON FUNCTION sqs_loader.mask_values(text[]) IS
  'Tokens of many values, aligned with them (NULL stays NULL), storing the values not yet in the vault with one vault_store() call: the masking prepare_batch() does, as one SQL call on an array (internal; what the masking benchmark measures).';
COMMENT ON FUNCTION sqs_loader.prepare_batch(bigint, text[], text[], timestamptz[]) IS
  'load_batch()''s first step: parse the distinct messages of a batch, claim their ids in processed_messages (an id already there is skipped), mask the IPs and device ids of the claimed valid ones (one vault_store() call); column arrays in message id order.';
DROP TYPE sqs_loader.batch_row;
-- The loader's receive returns one row of column arrays instead of a row per message.
DROP FUNCTION sqs_loader.pull(text, integer, integer, integer, boolean);
CREATE FUNCTION sqs_loader."pull"(
	"queue_url" TEXT,
	"n" INT,
	"visibility_timeout" INT,
	"wait_seconds" INT,
	"prefetch" bool
) RETURNS TABLE (
	"message_ids" TEXT[],
	"receipt_handles" TEXT[],
	"bodies" TEXT[],
	"sent_ats" timestamp with time zone[],
	"receive_counts" INT[]
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'pull_wrapper';
COMMENT ON FUNCTION sqs_loader.pull(text, integer, integer, integer, boolean) IS
  'Receive for load_user_logins(): one row of column arrays; takes the batch prefetched for the same request and, with prefetch, receives the next one in the background.';

-- ---------------------------------------------------------------- privileges (as a fresh install)
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA sqs_loader FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sqs_loader FROM PUBLIC;
