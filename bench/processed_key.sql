-- What processed_messages' key costs, two ways, in any PostgreSQL database (no extension
-- needed): the SQS MessageId as text (the table since 0.1.0) and the same id as a uuid (what
-- SQS, LocalStack, moto and fauxqs send is a UUID). Copies of the table with its processed_at
-- index; 1,000,000 random ids made beforehand as text (untimed), claimed 500 per statement
-- sorted by key, one transaction each, the uuid side casting the text as a loader would. The
-- two keys take turns in blocks of 250,000 rows (both orders). Prints µs per row per block and
-- the sizes. About half a minute; CHECKPOINT needs a superuser or pg_checkpoint.
--   psql -X -q -d DBNAME -f bench/processed_key.sql
\set ON_ERROR_STOP 1
DROP TABLE IF EXISTS pk_src, pk_text, pk_uuid;
CREATE UNLOGGED TABLE pk_src AS
  SELECT i, gen_random_uuid()::text AS t FROM generate_series(1, 1000000) i;
ALTER TABLE pk_src ADD PRIMARY KEY (i);
CREATE TABLE pk_text (message_id text COLLATE "C" PRIMARY KEY, outcome text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(), run_id bigint, sent_at timestamptz);
CREATE INDEX ON pk_text (processed_at);
CREATE TABLE pk_uuid (message_id uuid PRIMARY KEY, outcome text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(), run_id bigint, sent_at timestamptz);
CREATE INDEX ON pk_uuid (processed_at);
CHECKPOINT;
CREATE OR REPLACE PROCEDURE pk_run(tab text, lo int, hi int) LANGUAGE plpgsql AS $$
DECLARE b int; t0 timestamptz; d interval := '0';
BEGIN
    FOR b IN (lo / 500)..(hi / 500 - 1) LOOP
        t0 := clock_timestamp();
        IF tab = 'text' THEN
            INSERT INTO pk_text (message_id, outcome, run_id, sent_at)
              SELECT t, 'loaded', 1, now() FROM pk_src
               WHERE i > b * 500 AND i <= b * 500 + 500 ORDER BY t;
        ELSE
            INSERT INTO pk_uuid (message_id, outcome, run_id, sent_at)
              SELECT t::uuid, 'loaded', 1, now() FROM pk_src
               WHERE i > b * 500 AND i <= b * 500 + 500 ORDER BY t::uuid;
        END IF;
        COMMIT;
        d := d + (clock_timestamp() - t0);
    END LOOP;
    RAISE NOTICE '% key, rows % to %: % µs per row', tab, lo, hi,
        round((extract(epoch FROM d) * 1e6 / (hi - lo))::numeric, 2);
END $$;
CALL pk_run('text', 0, 250000);
CALL pk_run('uuid', 0, 250000);
CALL pk_run('uuid', 250000, 500000);
CALL pk_run('text', 250000, 500000);
CALL pk_run('text', 500000, 750000);
CALL pk_run('uuid', 500000, 750000);
CALL pk_run('uuid', 750000, 1000000);
CALL pk_run('text', 750000, 1000000);
SELECT pg_size_pretty(pg_relation_size('pk_text_pkey')) AS text_key,
       pg_size_pretty(pg_relation_size('pk_uuid_pkey')) AS uuid_key,
       pg_size_pretty(pg_relation_size('pk_text')) AS text_heap,
       pg_size_pretty(pg_relation_size('pk_uuid')) AS uuid_heap;
DROP TABLE pk_src, pk_text, pk_uuid;
DROP PROCEDURE pk_run(text, int, int);
