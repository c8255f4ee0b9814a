-- Masking: token key lifecycle, RSA public keys, rotation, erasure, unmasking with audit.
-- Functions that change keys or reveal values run with a pinned search_path; those callable
-- by granted roles are SECURITY DEFINER so the roles need no privilege on the private tables.

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
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kid text := sqs_loader.token_key_id(key);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sqs_loader.token_key WHERE key_id = kid) THEN
        INSERT INTO sqs_loader.token_key (secret, key_id, origin) VALUES (key, kid, 'set');
    END IF;
    RETURN kid;
END
$$;
COMMENT ON FUNCTION @extschema@.set_token_key(bytea) IS
  'Install a 32-byte token key (restore one from backup, or share one between databases). Refused once values were masked with another key. Returns its key id.';

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
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$
DECLARE
    new_key record;
    old_fp text := sqs_loader.private_key_fingerprint(old_private_key, passphrase);
    n bigint;
    left_over bigint;
BEGIN
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
  'Re-wrap every data key of the old key pair under a new public key (tokens unchanged; the old private key opens nothing afterwards). Returns how many were re-wrapped.';

CREATE FUNCTION @extschema@.forget_pii(token text) RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_it boolean;
BEGIN
    DELETE FROM sqs_loader.vault v WHERE v.token = forget_pii.token;
    found_it := FOUND;
    INSERT INTO sqs_loader.erased (token) VALUES (forget_pii.token) ON CONFLICT DO NOTHING;
    RETURN found_it;
END
$$;
COMMENT ON FUNCTION @extschema@.forget_pii(text) IS
  'Erase a masked value (crypto-shredding): its vault entry is deleted and never re-created; the token stays in the data as an opaque id. True when a value was erased.';

-- The one place that reveals values. Callers reach it through the unmask_pii() overloads.
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
    IF p_token IS NULL THEN
        PERFORM sqs_loader.audit_unmask(NULL, 'null_token');
        RETURN NULL;
    END IF;
    IF p_private_key IS NULL THEN
        PERFORM sqs_loader.audit_unmask(p_token, 'no_key');
        RAISE EXCEPTION 'private_key must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT s.sealed, d.wrapped_key INTO v
      FROM sqs_loader.vault s JOIN sqs_loader.data_keys d ON d.id = s.data_key_id
     WHERE s.token = p_token;
    IF NOT FOUND THEN
        PERFORM sqs_loader.audit_unmask(p_token,
            CASE WHEN EXISTS (SELECT 1 FROM sqs_loader.erased e WHERE e.token = p_token)
                 THEN 'erased' ELSE 'unknown_token' END);
        RETURN NULL;
    END IF;
    BEGIN
        result := sqs_loader.unseal(p_token, v.sealed, v.wrapped_key, p_private_key, p_passphrase);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
        PERFORM sqs_loader.audit_unmask(p_token,
            CASE st WHEN '28000' THEN 'wrong_key' WHEN '22023' THEN 'bad_key' WHEN 'XX001' THEN 'corrupt' ELSE 'error ' || st END);
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, HINT = coalesce(hint, '');
    END;
    PERFORM sqs_loader.audit_unmask(p_token, 'ok');
    RETURN result;
END
$$;
COMMENT ON FUNCTION sqs_loader.unmask(text, text, text) IS
  'Decrypt one token''s value with the RSA private key, after committing its audit row. Internal: use unmask_pii().';

CREATE FUNCTION @extschema@.unmask_pii(token text, private_key text) RETURNS text
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$ SELECT sqs_loader.unmask(token, private_key, NULL) $$;
COMMENT ON FUNCTION @extschema@.unmask_pii(text, text) IS
  'The original value of a token, with the RSA private key (PEM, PKCS#8 or PKCS#1). NULL for unknown or erased tokens. Every call is audited in sqs_loader.unmask_audit.';

CREATE FUNCTION @extschema@.unmask_pii(token text, private_key text, passphrase text) RETURNS text
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = 'panic'
AS $$ SELECT sqs_loader.unmask(token, private_key, passphrase) $$;
COMMENT ON FUNCTION @extschema@.unmask_pii(text, text, text) IS
  'unmask_pii() with an encrypted PKCS#8 private key (BEGIN ENCRYPTED PRIVATE KEY) and its passphrase.';
