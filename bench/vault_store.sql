-- What a vault store costs per row, three ways, in one session of any PostgreSQL database (no
-- extension needed): a plain INSERT (one run: every token new), INSERT ... ON CONFLICT DO
-- NOTHING (what vault_store() falls back to where runs share values), and an index probe per
-- token followed by a plain INSERT of the rest (tried and reverted, docs/performance.md).
-- 200,000 random 44-byte tokens with 60-byte sealed values, in batches of 500, into copies of
-- 0.1.0's vault (a text COLLATE "C" primary key; bench/vault_key.sql compares it with the
-- 16-byte key of 0.2.0). Prints µs per row; run it twice, the first run also pays for new WAL
-- segments. CHECKPOINT needs a superuser or pg_checkpoint.
--   psql -X -q -d DBNAME -f bench/vault_store.sql
DROP TABLE IF EXISTS pg_temp.vs_src, vs_plain, vs_conflict, vs_probe;
CREATE TEMP TABLE vs_src AS
  SELECT i, encode(sha256(i::text::bytea), 'base64') AS t, decode(repeat('ab', 60), 'hex') AS s
    FROM generate_series(1, 200000) i;
-- Logged tables, as the vault is (the WAL is part of the cost).
CREATE TABLE vs_plain (token text COLLATE "C" PRIMARY KEY, data_key_id bigint, sealed bytea);
CREATE TABLE vs_conflict (LIKE vs_plain INCLUDING ALL);
CREATE TABLE vs_probe (LIKE vs_plain INCLUDING ALL);
CHECKPOINT;
DO $$
DECLARE
    b int; toks text[]; seals bytea[]; t0 timestamptz; found text[];
    d1 interval := '0'; d2 interval := '0'; d3 interval := '0';
BEGIN
    FOR b IN 0..399 LOOP
        SELECT array_agg(t ORDER BY t), array_agg(s ORDER BY t) INTO toks, seals
          FROM vs_src WHERE i > b * 500 AND i <= (b + 1) * 500;
        t0 := clock_timestamp();
        INSERT INTO vs_plain SELECT u.t, 1, u.s FROM unnest(toks, seals) u(t, s);
        d1 := d1 + (clock_timestamp() - t0); t0 := clock_timestamp();
        INSERT INTO vs_conflict SELECT u.t, 1, u.s FROM unnest(toks, seals) u(t, s)
            ON CONFLICT (token) DO NOTHING;
        d2 := d2 + (clock_timestamp() - t0); t0 := clock_timestamp();
        SELECT array_agg(token) INTO found FROM vs_probe WHERE token = ANY (toks);
        INSERT INTO vs_probe SELECT u.t, 1, u.s FROM unnest(toks, seals) u(t, s)
         WHERE found IS NULL OR u.t <> ALL (found);
        d3 := d3 + (clock_timestamp() - t0);
    END LOOP;
    RAISE NOTICE 'µs per row: plain INSERT %, ON CONFLICT DO NOTHING %, probe + plain INSERT %',
        round((extract(epoch FROM d1) * 5)::numeric, 2), round((extract(epoch FROM d2) * 5)::numeric, 2),
        round((extract(epoch FROM d3) * 5)::numeric, 2);
END $$;
DROP TABLE vs_plain, vs_conflict, vs_probe;
