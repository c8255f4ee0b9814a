-- What the vault's key costs as the vault grows, two ways, in any PostgreSQL database (no
-- extension needed): the token text as the primary key (0.1.0's vault), and a 16-byte uuid of
-- it (sqs_loader.token_id(), the vault since 0.2.0) with the text beside it. 3,000,000 random
-- tokens with 46-byte sealed values, made beforehand (untimed), inserted in batches of 500
-- sorted by key, one transaction each. Prints µs per row over all rows and over the last
-- 500,000 (where the text key's index has outgrown the default 128 MB of shared_buffers), and
-- both indexes' sizes. About two minutes; CHECKPOINT needs a superuser or pg_checkpoint. Swap
-- the two CALLs to see the order does not matter.
--   psql -X -q -d DBNAME -f bench/vault_key.sql
\set ON_ERROR_STOP 1
DROP TABLE IF EXISTS ks_src, ks_text, ks_uuid;
CREATE UNLOGGED TABLE ks_src AS
  SELECT i, t, encode(substr(sha256(convert_to(t, 'UTF8')), 1, 16), 'hex')::uuid AS id
    FROM (SELECT i, 'v1.' || rtrim(translate(encode(sha256(i::text::bytea), 'base64'), '+/', '-_'), '=') AS t
            FROM generate_series(1, 3000000) i) s;
ALTER TABLE ks_src ADD PRIMARY KEY (i);
CREATE TABLE ks_text (token text COLLATE "C" PRIMARY KEY, data_key_id bigint, sealed bytea);
CREATE TABLE ks_uuid (token text COLLATE "C" NOT NULL, data_key_id bigint, sealed bytea, id uuid PRIMARY KEY);
CHECKPOINT;
CREATE OR REPLACE PROCEDURE ks_run(tab text, total int) LANGUAGE plpgsql AS $$
DECLARE b int; t0 timestamptz; d interval := '0'; last interval := '0';
    sealed bytea := decode(repeat('ab', 46), 'hex');
BEGIN
    FOR b IN 0..(total / 500 - 1) LOOP
        t0 := clock_timestamp();
        IF tab = 'text' THEN
            INSERT INTO ks_text SELECT t, 1, sealed FROM ks_src
             WHERE i > b * 500 AND i <= b * 500 + 500 ORDER BY t;
        ELSE
            INSERT INTO ks_uuid SELECT t, 1, sealed, id FROM ks_src
             WHERE i > b * 500 AND i <= b * 500 + 500 ORDER BY id;
        END IF;
        COMMIT;
        d := d + (clock_timestamp() - t0);
        IF b >= total / 500 - 1000 THEN last := last + (clock_timestamp() - t0); END IF;
    END LOOP;
    RAISE NOTICE '%: µs per row over all % rows: % ; over the last 500,000: %', tab, total,
        round((extract(epoch FROM d) * 1e6 / total)::numeric, 2), round((extract(epoch FROM last) * 1e6 / 500000)::numeric, 2);
END $$;
CALL ks_run('text', 3000000);
CALL ks_run('uuid', 3000000);
SELECT pg_size_pretty(pg_relation_size('ks_text_pkey')) text_pkey, pg_size_pretty(pg_relation_size('ks_uuid_pkey')) uuid_pkey, current_setting('shared_buffers') sb;
DROP TABLE ks_src, ks_text, ks_uuid;
DROP PROCEDURE ks_run(text, int);
