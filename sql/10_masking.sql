-- Masking: token key lifecycle, RSA public keys, rotation, erasure, unmasking with audit,
-- offline recovery. Functions that change keys or reveal values run with a pinned search_path;
-- those callable by other roles are SECURITY DEFINER so the roles need no privilege on the
-- private tables. Those that take a secret (a private key, a passphrase, the token key) may be
-- called by every role and refuse the wrong ones themselves, after masking the secret in the
-- statement: a refusal by PostgreSQL's own permission check would log the statement first.

-- A token key nothing has been masked with yet (for example the one CREATE EXTENSION made
-- while pg_restore re-creates the extension) yields to an incoming one; a used one never does.
CREATE FUNCTION sqs_loader.token_key_before_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.key_id IS DISTINCT FROM sqs_loader.token_key_id(NEW.secret) THEN
        RAISE EXCEPTION 'token key id % does not match the key', NEW.key_id USING ERRCODE = '22023';
    END IF;
    DELETE FROM sqs_loader.token_key k
     WHERE NOT EXISTS (SELECT 1 FROM sqs_loader.data_keys d WHERE d.token_key_id = k.key_id);
    IF EXISTS (SELECT 1 FROM sqs_loader.token_key) THEN
        RAISE EXCEPTION 'a token key that values were masked with is already installed'
            USING ERRCODE = '55000',
                  HINT = 'Replacing it would change every token; re-create the extension for a new vault.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION sqs_loader.token_key_before_insert() IS
  'Trigger: an unused token key is replaced by an inserted one (restores); a used key cannot be replaced.';
CREATE TRIGGER token_key_replace_unused BEFORE INSERT ON sqs_loader.token_key
    FOR EACH ROW EXECUTE FUNCTION sqs_loader.token_key_before_insert();
COMMENT ON TRIGGER token_key_replace_unused ON sqs_loader.token_key IS
  'Lets pg_restore put back the dumped token key over the one CREATE EXTENSION generated.';

-- The token key: 256 random bits, made now.
INSERT INTO sqs_loader.token_key (secret, key_id, origin)
SELECT k, sqs_loader.token_key_id(k), 'generated' FROM sqs_loader.new_token_key() AS k;

CREATE FUNCTION @extschema@.set_token_key(key bytea) RETURNS text
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

CREATE FUNCTION @extschema@.set_rsa_public_key(public_key text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
BEGIN
    SELECT * INTO k FROM sqs_loader.rsa_key_info(public_key);
    IF EXISTS (SELECT 1 FROM sqs_loader.rsa_keys WHERE fingerprint = k.fingerprint AND active) THEN
        RETURN k.fingerprint;
    END IF;
    UPDATE sqs_loader.rsa_keys SET active = false, retired_at = now() WHERE active;
    INSERT INTO sqs_loader.rsa_keys (fingerprint, public_key, bits, active)
    VALUES (k.fingerprint, k.pem, k.bits, true)
    ON CONFLICT (fingerprint) DO UPDATE SET active = true, retired_at = NULL;
    RETURN k.fingerprint;
END
$$;
COMMENT ON FUNCTION @extschema@.set_rsa_public_key(text) IS
  'Install the RSA public key (PEM, >= 2048 bits) that new data keys are wrapped under; returns its SHA-256 fingerprint. Existing data keys stay under their key: use rotate_rsa_key() to move them.';

CREATE FUNCTION @extschema@.rotate_rsa_key(new_public_key text, old_private_key text, passphrase text DEFAULT NULL)
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
CREATE FUNCTION @extschema@.forget_pii(token text) RETURNS boolean
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

-- The one place that reveals values on the server. Callers reach it through the unmask_pii()
-- overloads, which every role may call: the refusal of non-members happens in here, after the
-- key was masked in the statement, so it never reaches the log (whatever the logging settings).
CREATE FUNCTION sqs_loader.unmask(p_token text, p_private_key text, p_passphrase text) RETURNS text
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

CREATE FUNCTION @extschema@.unmask_pii(token text, private_key text) RETURNS text
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$ SELECT sqs_loader.unmask(token, private_key, NULL) $$;
COMMENT ON FUNCTION @extschema@.unmask_pii(text, text) IS
  'The original value of a token, with the RSA private key (PEM, PKCS#8 or PKCS#1); members of sqs_loader_unmask only. NULL for unknown or erased tokens. Audited in sqs_loader.unmask_audit; the key is masked in the log and pg_stat_activity. Prefer offline recovery (sealed_values and sqs_loader_unmask).';

CREATE FUNCTION @extschema@.unmask_pii(token text, private_key text, passphrase text) RETURNS text
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
