-- Unmasking refused: with the wrong key, a garbage key, no key; erased and unknown tokens give
-- NULL. Every attempt is audited. The key pair in data/ is a throwaway made for this test.
-- (The value is stored as the loader stores it: mask_pii() only looks tokens up.)
\getenv abs_srcdir PG_ABS_SRCDIR
\set pub `cat :abs_srcdir/data/regress_public_key.pem`
\set other `cat :abs_srcdir/data/regress_other_private_key.pem`
SELECT length(set_rsa_public_key(:'pub')) AS fingerprint_length;
SELECT (sqs_loader.mask_values(ARRAY['203.0.113.7']))[1] AS token \gset
SELECT regress.try(format('SELECT unmask_pii(%L, %L)', :'token', :'other'));
SELECT regress.try(format('SELECT unmask_pii(%L, %L)', :'token', 'garbage'));
SELECT regress.try(format('SELECT unmask_pii(%L, NULL)', :'token'));
SELECT unmask_pii('v1.unknown-token', :'other') IS NULL AS unknown_token_gives_null;
SELECT forget_pii(:'token') AS erased;
SELECT unmask_pii(:'token', :'other') IS NULL AS erased_token_gives_null;
SELECT action, outcome, count(*) FROM sqs_loader.unmask_audit GROUP BY action, outcome ORDER BY action, outcome;
