-- sqs_loader: schema, tables and user_logins. Runs first (bootstrap).
--
-- Public API objects live in the extension's schema (@extschema@, usually public).
-- Private state lives in schema sqs_loader, which PUBLIC cannot even look into.

-- On a Citus coordinator the extension lives on the coordinator only: with DDL propagation on,
-- Citus would create it on every worker too, each with a token key and a vault of its own
-- (secrets on nodes that never load), and a local user_logins that create_distributed_table()
-- then trips over. Refused with the recipe instead (docs/production.md#citus).
DO $citus$
DECLARE
    workers boolean := false;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NOT NULL
       AND pg_catalog.current_setting('citus.enable_ddl_propagation', true) = 'on' THEN
        -- Dynamic: without Citus the table does not exist, and a static query would not parse.
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node WHERE groupid <> 0)' INTO workers;
    END IF;
    IF workers THEN
        RAISE EXCEPTION 'sqs_loader is created on the Citus coordinator only, with DDL propagation off'
            USING ERRCODE = '55000',
                  DETAIL = 'With citus.enable_ddl_propagation on, Citus would create the extension, its token key and vault on every worker.',
                  HINT = 'SET citus.enable_ddl_propagation = off; CREATE EXTENSION sqs_loader; RESET citus.enable_ddl_propagation; '
                         'then SELECT create_distributed_table(''user_logins'', ''user_id'') (docs/production.md, Citus).';
    END IF;
END
$citus$;

-- Created without IF NOT EXISTS on purpose: a pre-existing schema of that name (possibly
-- owned by someone else) must make CREATE EXTENSION fail, not be adopted.
CREATE SCHEMA sqs_loader;
REVOKE ALL ON SCHEMA sqs_loader FROM PUBLIC;
COMMENT ON SCHEMA sqs_loader IS
  'Private state of the sqs_loader extension (token key, vault, bookkeeping, audit). No access for PUBLIC.';

-- ---------------------------------------------------------------- masking state

CREATE TABLE sqs_loader.token_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret     bytea NOT NULL CHECK (length(secret) = 32),
    key_id     text NOT NULL,
    origin     text NOT NULL CHECK (origin IN ('generated', 'set')),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sqs_loader.token_key IS
  'The HMAC-SHA256 key that turns PII into tokens (one row). Superuser only. Dumped by pg_dump: protect dumps like the data.';

CREATE TABLE sqs_loader.rsa_keys (
    fingerprint  text PRIMARY KEY,
    public_key   text NOT NULL,
    bits         integer NOT NULL,
    active       boolean NOT NULL DEFAULT false,
    installed_at timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);
CREATE UNIQUE INDEX rsa_keys_one_active ON sqs_loader.rsa_keys (active) WHERE active;
COMMENT ON TABLE sqs_loader.rsa_keys IS
  'RSA public keys data keys are wrapped under; the active one wraps new data keys. Private keys are never stored.';
COMMENT ON INDEX sqs_loader.rsa_keys_one_active IS 'At most one active RSA public key.';

CREATE TABLE sqs_loader.data_keys (
    id              bigint PRIMARY KEY,
    token_key_id    text NOT NULL,
    rsa_fingerprint text NOT NULL REFERENCES sqs_loader.rsa_keys (fingerprint),
    wrapped_key     bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_keys_rsa_fingerprint ON sqs_loader.data_keys (rsa_fingerprint);
COMMENT ON TABLE sqs_loader.data_keys IS
  'AES-256 data keys, stored only wrapped with RSA-OAEP-SHA256 under an RSA public key (one per loading session).';
COMMENT ON INDEX sqs_loader.data_keys_rsa_fingerprint IS 'Finds the data keys a rotation must re-wrap.';

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

-- Message ids are opaque: byte order (COLLATE "C") makes their B-tree cheaper.
-- An erased value leaves a tombstone under its token (sealed NULL): masking the value again
-- conflicts on the token's id and stores nothing, whatever order the two transactions run in.
-- id is the last column: where 0.2.0's upgrade added it.
CREATE TABLE sqs_loader.vault (
    token         text COLLATE "C" NOT NULL,
    data_key_id   bigint,
    sealed        bytea,
    erased_at     timestamptz,
    erased_by     text,
    value_erased  boolean,
    id            uuid PRIMARY KEY,
    CHECK ((sealed IS NULL) = (data_key_id IS NULL)),
    CHECK ((sealed IS NULL) = (erased_at IS NOT NULL))
);
COMMENT ON TABLE sqs_loader.vault IS
  'One row per distinct masked value, keyed by sqs_loader.token_id(token): nonce || AES-256-GCM(value), the token as associated data; or, once erased with forget_pii(), a tombstone (sealed NULL) that keeps the value from being stored again.';

CREATE VIEW sqs_loader.erased AS
SELECT token, erased_at, erased_by, value_erased FROM sqs_loader.vault WHERE erased_at IS NOT NULL;
COMMENT ON VIEW sqs_loader.erased IS
  'Tokens erased with forget_pii(): when, by whom, and whether a value was stored (false: erased before it was ever seen; NULL: erased by 0.1.0).';

-- Whoever is a member of this role may recover values (unmask_pii, sealed_values): the one
-- place to look to know who can see PII (besides superusers; see sqs_loader.pii_access).
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

CREATE TABLE sqs_loader.unmask_audit (
    audit_id          bigint PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT clock_timestamp(),
    session_user_name text NOT NULL,
    role_name         text NOT NULL,
    token             text,
    outcome           text NOT NULL,
    action            text NOT NULL DEFAULT 'unmask' CHECK (action IN ('unmask', 'export', 'mask')),
    value_count       integer
);
CREATE INDEX unmask_audit_at ON sqs_loader.unmask_audit (at);
COMMENT ON TABLE sqs_loader.unmask_audit IS
  'Every access to PII: unmask_pii() (unmask), sealed_values() (export), mask_pii()/mask_pii_batch() lookups (mask); written in its own transaction before anything is returned (callers cannot roll it back).';
COMMENT ON INDEX sqs_loader.unmask_audit_at IS 'Audit rows by time.';

-- ---------------------------------------------------------------- loading state

CREATE TABLE sqs_loader.processed_messages (
    message_id   text COLLATE "C" PRIMARY KEY,
    outcome      text NOT NULL CHECK (outcome IN ('loaded', 'rejected')),
    -- When its batch claimed it (a few milliseconds before that batch's COMMIT).
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id       bigint,
    -- Its SQS SentTimestamp (0.2.0): processed_at - sent_at is the message's end-to-end latency.
    sent_at      timestamptz
);
CREATE INDEX processed_messages_processed_at ON sqs_loader.processed_messages (processed_at);
COMMENT ON TABLE sqs_loader.processed_messages IS
  'SQS MessageIds already loaded or rejected, committed with their rows: a redelivered message is skipped. Pruned after sqs_loader.dedup_retention_days. With its SentTimestamp and when it was loaded: the latency and lag figures of stat_loaders.';
COMMENT ON INDEX sqs_loader.processed_messages_processed_at IS 'Pruning by age.';

CREATE TABLE sqs_loader.rejected_messages (
    message_id  text COLLATE "C" PRIMARY KEY,
    queue_url   text NOT NULL,
    sent_at     timestamptz,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL,
    detail      text,
    body        text NOT NULL,
    run_id      bigint
);
CREATE INDEX rejected_messages_reason ON sqs_loader.rejected_messages (reason);
COMMENT ON TABLE sqs_loader.rejected_messages IS
  'Messages that are not valid login events, with the reason and the raw body (which may hold PII: superuser only by default).';
COMMENT ON INDEX sqs_loader.rejected_messages_reason IS 'Rejections by reason.';

CREATE TABLE sqs_loader.load_runs (
    run_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_url    text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at     timestamptz,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'failed', 'delete_failed', 'stopped')),
    received     bigint NOT NULL DEFAULT 0,
    loaded       bigint NOT NULL DEFAULT 0,
    rejected     bigint NOT NULL DEFAULT 0,
    skipped      bigint NOT NULL DEFAULT 0,
    deleted      bigint NOT NULL DEFAULT 0,
    error        text,
    backend_pid  integer NOT NULL DEFAULT pg_backend_pid(),
    run_by       text NOT NULL DEFAULT session_user,
    -- Added in 0.2.0: how the run was started, its limits (fixed when it starts), its error in
    -- full, and when its last batch committed.
    mode         text NOT NULL DEFAULT 'call' CHECK (mode IN ('call', 'worker')),
    max_messages bigint,
    deadline     timestamptz,
    batch_size   integer,
    visibility_timeout integer,
    wait_seconds integer,
    exit_when_empty boolean,
    sqlstate     text,
    error_detail text,
    error_hint   text,
    progress_at  timestamptz,
    batches      bigint NOT NULL DEFAULT 0,
    last_batch_at timestamptz
);
CREATE INDEX load_runs_started_at ON sqs_loader.load_runs (started_at);
COMMENT ON TABLE sqs_loader.load_runs IS
  'One row per load run (CALL load_user_logins() or a worker): its limits, counts, status and any error. A run left "running" by a crash shows in load_health as aborted. The state the loader works from.';
COMMENT ON INDEX sqs_loader.load_runs_started_at IS 'Recent runs.';

-- pg_dump dumps the data of these extension tables; a restore gets them back.
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.token_key', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.rsa_keys', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.data_keys', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.vault', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.unmask_audit', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.processed_messages', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.rejected_messages', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_loader.load_runs', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sqs_loader.load_runs', 'run_id'), '');

-- ---------------------------------------------------------------- user_logins
-- Exactly the owners' DDL. An existing table of that shape (e.g. made by the take-home's
-- Postgres image) is used as is. (Not `CREATE TABLE IF NOT EXISTS`: since CVE-2022-2625 an
-- extension script may not skip over an object it does not own.) The table is never a member
-- of the extension: DROP EXTENSION does not drop it, and pg_dump dumps it like any table.
-- While a dump is being restored the table is left to the dump, which creates it itself
-- (pg_dump and pg_restore always SET row_security = off; sessions default to on).
-- load_user_logins() creates it if it is still missing.
DO $user_logins$
DECLARE
    missing text;
    owner_is_trusted boolean;
BEGIN
    IF pg_catalog.to_regclass('@extschema@.user_logins') IS NULL THEN
        IF pg_catalog.current_setting('row_security') = 'off' THEN
            RETURN;
        END IF;
        CREATE TABLE @extschema@.user_logins(
            user_id varchar(128),
            device_type varchar(32),
            masked_ip varchar(256),
            masked_device_id varchar(256),
            locale varchar(32),
            app_version integer,
            create_date date
        );
        ALTER EXTENSION sqs_loader DROP TABLE @extschema@.user_logins;
        COMMENT ON TABLE @extschema@.user_logins IS
          'User-login events loaded from SQS by load_user_logins(); masked_ip and masked_device_id are sqs_loader tokens.';
        RETURN;
    END IF;
    SELECT string_agg(format('%s %s', c.col, c.want), ', ') INTO missing
      FROM (VALUES ('user_id', 'varchar'), ('device_type', 'varchar'), ('masked_ip', 'varchar'),
                   ('masked_device_id', 'varchar'), ('locale', 'varchar'), ('app_version', 'integer'),
                   ('create_date', 'date')) AS c(col, want)
     WHERE NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = '@extschema@.user_logins'::regclass AND a.attname = c.col AND NOT a.attisdropped
              AND CASE c.want
                    WHEN 'varchar' THEN a.atttypid IN ('varchar'::regtype, 'text'::regtype)
                    WHEN 'integer' THEN a.atttypid IN ('int4'::regtype, 'int8'::regtype)
                    ELSE a.atttypid = 'date'::regtype END);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'table @extschema@.user_logins exists but does not have the expected shape'
            USING ERRCODE = '42P16', DETAIL = format('missing or mistyped columns: %s', missing),
                  HINT = 'Rename the existing table, or create the extension in another schema.';
    END IF;
    SELECT r.rolsuper OR r.oid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
      INTO owner_is_trusted
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
     WHERE c.oid = '@extschema@.user_logins'::regclass;
    IF NOT owner_is_trusted THEN
        RAISE WARNING 'existing table @extschema@.user_logins is owned by a role that is not a superuser'
            USING HINT = 'Its owner can attach triggers that run as whoever calls load_user_logins(). '
                         'Make a superuser own it, or run the loader as that owner.';
    END IF;
END
$user_logins$;
