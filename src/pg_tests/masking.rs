//! Masking: tokens, unmasking, rotation, erasure, key restore rules.

#[pgrx::pg_schema]
mod tests {
    #[allow(unused_imports)]
    use crate::pg_tests::*;

    #[pg_test]
    fn mask_pii_properties() {
        install_fresh_key();
        let a: String = one("SELECT mask_pii('199.172.111.135')");
        assert_eq!(
            a,
            one::<String>("SELECT mask_pii('199.172.111.135')"),
            "deterministic"
        );
        assert_ne!(a, one::<String>("SELECT mask_pii('199.172.111.136')"));
        assert!(a.starts_with("v1.") && a.len() == 46, "{a}");
        assert_eq!(opt::<String>("SELECT mask_pii(NULL)"), None);
        for v in ["", "é漢字🙂", "2001:db8::1", "::ffff:10.0.0.1"] {
            let t: String = one(&format!("SELECT mask_pii({})", quote(v)));
            assert_eq!(t.len(), 46, "{v}");
        }
        // The batch path gives the same tokens as the per-value path.
        assert_eq!(
            one::<String>("SELECT token FROM mask_pii_batch(ARRAY['199.172.111.135', NULL]) WHERE value = '199.172.111.135'"),
            a
        );
        // Lookups store nothing; the loader's path stores each distinct value once, under the
        // same token.
        let in_vault = |t: &str| {
            one::<i64>(&format!(
                "SELECT count(*) FROM sqs_loader.vault WHERE token = {}",
                quote(t)
            ))
        };
        assert_eq!(in_vault(&a), 0, "mask_pii() stores nothing");
        assert_eq!(store("199.172.111.135"), a);
        assert_eq!(store("199.172.111.135"), a);
        assert_eq!(in_vault(&a), 1);
    }

    /// mask_values() builds its text[] by hand (crate::postgres::token_array): the array must be
    /// an ordinary one — aligned with the input, NULL kept, repeats masked alike, bounds 1..n,
    /// usable by every array function — and the same whether the values were stored or known.
    #[pg_test]
    fn mask_values_returns_an_ordinary_text_array() {
        install_fresh_key();
        let a: String = one("SELECT mask_pii('10.0.0.1')");
        let b: String = one("SELECT mask_pii('10.0.0.2')");
        for round in ["stores", "known"] {
            run("CREATE TEMP TABLE IF NOT EXISTS t(tok text[])");
            run("TRUNCATE t");
            run("INSERT INTO t SELECT sqs_loader.mask_values(ARRAY['10.0.0.1', NULL, '10.0.0.2', '10.0.0.1', NULL])");
            assert_eq!(
                one::<String>("SELECT array_dims(tok) FROM t"),
                "[1:5]",
                "{round}"
            );
            assert_eq!(one::<String>("SELECT tok[1] FROM t"), a, "{round}");
            assert_eq!(one::<String>("SELECT tok[3] FROM t"), b, "{round}");
            assert_eq!(one::<String>("SELECT tok[4] FROM t"), a, "{round}");
            assert_eq!(opt::<String>("SELECT tok[2] FROM t"), None, "{round}");
            assert_eq!(opt::<String>("SELECT tok[5] FROM t"), None, "{round}");
            assert_eq!(
                one::<i64>("SELECT count(*) FROM t, unnest(tok) u WHERE u IS NULL"),
                2,
                "{round}"
            );
            assert_eq!(
                one::<i64>("SELECT count(DISTINCT u) FROM t, unnest(tok) u"),
                2,
                "{round}"
            );
            // Equal to the same text built by PostgreSQL (hashing and comparing byte by byte).
            assert!(
                one::<bool>(&format!(
                    "SELECT tok = ARRAY[{a}, NULL, {b}, {a}, NULL]::text[] AND hashtext(tok[1]) = hashtext({a}) FROM t",
                    a = quote(&a),
                    b = quote(&b)
                )),
                "{round}"
            );
        }
        assert_eq!(
            one::<String>(
                "SELECT coalesce(array_dims(sqs_loader.mask_values('{}'::text[])), 'empty')"
            ),
            "empty"
        );
        assert_eq!(
            one::<String>("SELECT array_to_string(sqs_loader.mask_values(ARRAY[NULL, NULL]::text[]), ',', '-')"),
            "-,-"
        );
    }

    #[pg_test]
    fn ten_thousand_distinct_values_no_collision() {
        install_fresh_key();
        let (rows, tokens): (Option<i64>, Option<i64>) = Spi::get_two(
            "SELECT count(*), count(DISTINCT token)
               FROM mask_pii_batch(ARRAY(SELECT '10.0.' || (i / 256) || '.' || (i % 256) FROM generate_series(0, 9999) i))",
        )
        .unwrap();
        assert_eq!((rows, tokens), (Some(10_000), Some(10_000)));
    }

    #[pg_test]
    fn unmask_round_trip_wrong_key_and_audit() {
        let private = install_fresh_key();
        let token: String = store("593-47-5928");
        let plain = unmask(&token, &private).unwrap();
        assert_eq!(plain, "593-47-5928");
        // A freshly generated other key is refused with a clear error and no output.
        let (other, _) = keypair(2048);
        install_try_sql();
        let err = try_sql(&unmask_sql(&token, &other));
        assert!(
            err.starts_with("28000: this private key cannot decrypt"),
            "{err}"
        );
        assert!(
            !err.contains("PRIVATE KEY") && !err.contains("MII"),
            "no key material in errors: {err}"
        );
        // Garbage key: a different, clear error.
        assert!(
            try_sql(&format!("SELECT unmask_pii({}, 'garbage')", quote(&token)))
                .starts_with("22023")
        );
        // Audit rows, committed by the background worker even though the calls failed.
        let outcomes: String = one(&format!(
            "SELECT string_agg(outcome, ',' ORDER BY at) FROM sqs_loader.unmask_audit WHERE token = {}",
            quote(&token)
        ));
        assert_eq!(outcomes, "ok,wrong_key,bad_key");
        // Unknown and NULL tokens: NULL, audited.
        assert_eq!(
            opt::<String>(&format!(
                "SELECT unmask_pii('v1.nope', {})",
                quote(&private)
            )),
            None
        );
        assert_eq!(
            one::<String>("SELECT outcome FROM sqs_loader.unmask_audit WHERE token = 'v1.nope' ORDER BY at DESC LIMIT 1"),
            "unknown_token"
        );
    }

    #[pg_test]
    fn encrypted_pkcs8_with_passphrase() {
        let k = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let public = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let encrypted = k
            .to_pkcs8_encrypted_pem(b"s3cret passphrase", LineEnding::LF)
            .unwrap()
            .to_string();
        run(&format!("SELECT set_rsa_public_key({})", quote(&public)));
        let token: String = store("10.1.2.3");
        let plain: String = one(&format!(
            "SELECT unmask_pii({}, {}, 's3cret passphrase')",
            quote(&token),
            quote(&encrypted)
        ));
        assert_eq!(plain, "10.1.2.3");
        install_try_sql();
        let err = try_sql(&format!(
            "SELECT unmask_pii({}, {}, 'wrong')",
            quote(&token),
            quote(&encrypted)
        ));
        assert!(
            err.starts_with("22023") && err.contains("passphrase"),
            "{err}"
        );
    }

    #[pg_test]
    fn rotation_keeps_tokens_and_retires_the_old_key() {
        let old_private = install_fresh_key();
        let t1: String = store("172.16.0.1");
        let (new_private, new_public) = keypair(2048);
        let n: i64 = one(&format!(
            "SELECT rotate_rsa_key({}, {})",
            quote(&new_public),
            quote(&old_private)
        ));
        assert!(n >= 1);
        // Tokens are unchanged, new values use the new key, the old private key opens nothing.
        assert_eq!(store("172.16.0.1"), t1);
        let t2: String = store("172.16.0.2");
        assert_eq!(unmask(&t1, &new_private).unwrap(), "172.16.0.1");
        assert_eq!(unmask(&t2, &new_private).unwrap(), "172.16.0.2");
        install_try_sql();
        assert!(try_sql(&unmask_sql(&t1, &old_private)).starts_with("28000"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM sqs_loader.data_keys d JOIN sqs_loader.rsa_keys r ON r.fingerprint = d.rsa_fingerprint WHERE NOT r.active"),
            0
        );
    }

    #[pg_test]
    fn vault_store_never_overwrites_and_falls_back_on_a_stored_token() {
        install_fresh_key();
        let t: String = store("7.7.7.7");
        let dk: i64 = one("SELECT id FROM sqs_loader.data_keys LIMIT 1");
        let sealed_of = |t: &str| {
            opt::<Vec<u8>>(&format!(
                "SELECT sealed FROM sqs_loader.vault WHERE token = {}",
                quote(t)
            ))
        };
        // The loader's vault key (Token::vault_id() in Rust) is the one SQL computes from the
        // token for lookups: unmask_pii(), sealed_values(), forget_pii().
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM sqs_loader.vault WHERE id = sqs_loader.token_id(token)"
            ),
            one::<i64>("SELECT count(*) FROM sqs_loader.vault")
        );
        let before = sealed_of(&t);
        // A batch with a stored token and a new one: the plain INSERT fails and is undone, ON
        // CONFLICT stores the new one and leaves the stored one as it was.
        let plain: bool = one(&format!(
            "SELECT sqs_loader.vault_store(ARRAY[sqs_loader.token_id({t}), sqs_loader.token_id('v1.new-token')], \
             ARRAY[{t}, 'v1.new-token'], {dk}, ARRAY['\\x01'::bytea, '\\x02'], true)",
            t = quote(&t)
        ));
        assert!(!plain, "a stored token makes the plain INSERT fail");
        assert_eq!(sealed_of(&t), before, "never stored over");
        assert_eq!(sealed_of("v1.new-token"), Some(vec![2u8]));
        // Only new tokens: the plain INSERT does it.
        let plain: bool = one(&format!(
            "SELECT sqs_loader.vault_store(ARRAY[sqs_loader.token_id('v1.newer-token')], ARRAY['v1.newer-token'], {dk}, ARRAY['\\x03'::bytea], true)"
        ));
        assert!(plain);
        assert_eq!(sealed_of("v1.newer-token"), Some(vec![3u8]));
    }

    /// forget_pii() takes any text: one that shares a token's first 22 characters (all its
    /// HMAC's first 16 bytes are in them) must neither erase that token's value nor keep it
    /// from being stored. With the HMAC's bytes as the vault key, both happened (review of the
    /// 16-byte key, 2026-12-04).
    #[pg_test]
    fn forget_pii_of_a_look_alike_text_reaches_no_other_token() {
        let private = install_fresh_key();
        let look_alike = |t: &str| {
            let rest = if t.ends_with('A') { "B" } else { "A" };
            format!("{}{}", &t[..25], rest.repeat(t.len() - 25))
        };
        // A stored value.
        let t: String = store("6.6.6.6");
        assert!(!one::<bool>(&format!(
            "SELECT forget_pii({})",
            quote(&look_alike(&t))
        )));
        assert_eq!(unmask(&t, &private), Some("6.6.6.6".into()));
        // A value not seen yet: erasing a look-alike of its token first does not block it.
        let unseen: String = one("SELECT mask_pii('5.5.5.5')");
        assert!(!one::<bool>(&format!(
            "SELECT forget_pii({})",
            quote(&look_alike(&unseen))
        )));
        assert_eq!(store("5.5.5.5"), unseen);
        assert_eq!(unmask(&unseen, &private), Some("5.5.5.5".into()));
    }

    #[pg_test]
    fn kept_plans_are_planned_again_after_ddl() {
        // The loader keeps the plans of its per-batch statements (src/postgres/plans.rs). DDL
        // on what such a plan uses must make it analysed again, as the statement's text would be.
        const STORE: &str = "SELECT sqs_loader.vault_store($1, $2, $3, $4, $5)";
        install_fresh_key();
        let t = store("10.9.0.1");
        assert!(crate::postgres::plans::is_kept(STORE));
        // vault_store() renamed and another function made under its name: the new one is
        // called (a stale plan would call the old one by its oid).
        run("CREATE TEMP TABLE calls (n int)");
        run("ALTER FUNCTION sqs_loader.vault_store(uuid[], text[], bigint, bytea[], boolean) RENAME TO vault_store_was");
        run("CREATE FUNCTION sqs_loader.vault_store(i uuid[], t text[], d bigint, s bytea[], p boolean)
             RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO calls VALUES (cardinality(t)); RETURN sqs_loader.vault_store_was(i, t, d, s, p); END $$");
        let u = store("10.9.0.2");
        assert_eq!(one::<i64>("SELECT count(*) FROM calls WHERE n = 1"), 1);
        let in_vault = |token: &str| {
            one::<i64>(&format!(
                "SELECT count(*) FROM sqs_loader.vault WHERE id = sqs_loader.token_id({}) AND sealed IS NOT NULL",
                quote(token)
            ))
        };
        assert_eq!(in_vault(&u), 1);
        // The vault renamed and a new, empty one made under its name: the token-key query's
        // 'sqs_loader.vault'::regclass (a constant in its plan) now names the new table, so
        // the backend no longer counts 10.9.0.1 as stored and stores it again, in the new one.
        // (A stale plan would name the old table, and the value would be skipped as known.)
        run("ALTER TABLE sqs_loader.vault RENAME TO vault_was");
        run("CREATE TABLE sqs_loader.vault (LIKE sqs_loader.vault_was INCLUDING ALL)");
        assert_eq!(store("10.9.0.1"), t);
        assert_eq!(in_vault(&t), 1);
        assert_eq!(in_vault(&u), 0);
    }

    #[pg_test]
    fn erasure_forgets_the_value_but_keeps_the_token() {
        let private = install_fresh_key();
        let t: String = store("8.8.8.8");
        assert!(one::<bool>(&format!("SELECT forget_pii({})", quote(&t))));
        assert_eq!(unmask(&t, &private), None);
        assert_eq!(
            one::<String>(&format!("SELECT outcome FROM sqs_loader.unmask_audit WHERE token = {} ORDER BY at DESC LIMIT 1", quote(&t))),
            "erased"
        );
        // The same value seen again keeps its token (GROUP BY still works) but is not stored
        // again: its row stays a tombstone.
        assert_eq!(store("8.8.8.8"), t);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM sqs_loader.vault WHERE token = {} AND sealed IS NULL AND value_erased",
                quote(&t)
            )),
            1
        );
        assert!(!one::<bool>(&format!("SELECT forget_pii({})", quote(&t))));
        // Erasing a value never seen leaves a tombstone too: it will never be stored.
        let unseen: String = one("SELECT mask_pii('9.9.9.9')");
        assert!(!one::<bool>(&format!(
            "SELECT forget_pii({})",
            quote(&unseen)
        )));
        assert_eq!(store("9.9.9.9"), unseen);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM sqs_loader.erased WHERE token = {} AND NOT value_erased",
                quote(&unseen)
            )),
            1
        );
    }

    #[pg_test]
    fn lookups_store_nothing_and_are_audited() {
        install_fresh_key();
        let before: i64 = one("SELECT count(*) FROM sqs_loader.vault");
        let audited: i64 =
            one("SELECT count(*) FROM sqs_loader.unmask_audit WHERE action = 'mask'");
        // One statement looking the same value up per row is audited once.
        let n: i64 = one("SELECT count(mask_pii('203.0.113.77')) FROM generate_series(1, 50)");
        assert_eq!(n, 50);
        let rows: i64 = one("SELECT count(*) FROM mask_pii_batch(ARRAY['a1', 'a2', 'a2', NULL])");
        assert_eq!(rows, 2);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM sqs_loader.vault"),
            before,
            "nothing stored"
        );
        let (calls, values): (Option<i64>, Option<i64>) = Spi::get_two(&format!(
            "SELECT count(*), sum(value_count) FROM sqs_loader.unmask_audit WHERE action = 'mask' AND audit_id NOT IN
               (SELECT audit_id FROM sqs_loader.unmask_audit WHERE action = 'mask' ORDER BY at LIMIT {audited})"
        ))
        .unwrap();
        assert_eq!((calls, values), (Some(2), Some(3)));
    }

    #[pg_test]
    fn sealed_values_for_offline_recovery() {
        let private = install_fresh_key();
        let kept = store("198.51.100.1");
        let gone = store("198.51.100.2");
        one::<bool>(&format!("SELECT forget_pii({})", quote(&gone)));
        type SealedRow = (String, String, Option<Vec<u8>>, Option<Vec<u8>>);
        let rows: Vec<SealedRow> = Spi::connect(|c| {
            c.select(
                &format!(
                    "SELECT token, outcome, sealed, wrapped_key FROM sealed_values(ARRAY[{}, {}, 'v1.nope', NULL, {}])",
                    quote(&kept),
                    quote(&gone),
                    quote(&kept)
                ),
                None,
                &[],
            )
            .unwrap()
            .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap(), r.get(4).unwrap()))
            .collect()
        });
        let outcome = |t: &str| rows.iter().find(|r| r.0 == t).map(|r| r.1.clone());
        assert_eq!(rows.len(), 3, "distinct, non-null tokens");
        assert_eq!(outcome(&kept).as_deref(), Some("exported"));
        assert_eq!(outcome(&gone).as_deref(), Some("erased"));
        assert_eq!(outcome("v1.nope").as_deref(), Some("unknown_token"));
        // What it returns is enough to decrypt away from the server, with the private key.
        let r = rows.iter().find(|r| r.0 == kept).unwrap();
        let key = crate::mask::parse_private_key(&private, None).unwrap();
        let dk = crate::mask::unwrap(&key, r.3.as_ref().unwrap()).unwrap();
        let value = crate::mask::open(&dk, &kept, r.2.as_ref().unwrap()).unwrap();
        assert_eq!(value, b"198.51.100.1");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM sqs_loader.unmask_audit WHERE action = 'export'"),
            3,
            "every token audited as exported"
        );
    }

    #[pg_test]
    fn masking_without_an_rsa_key_fails_loudly() {
        run("DELETE FROM sqs_loader.rsa_keys WHERE NOT EXISTS (SELECT 1 FROM sqs_loader.data_keys d WHERE d.rsa_fingerprint = rsa_keys.fingerprint)");
        run("UPDATE sqs_loader.rsa_keys SET active = false");
        install_try_sql();
        let err = try_sql("SELECT sqs_loader.mask_values(ARRAY['1.1.1.1'])");
        assert!(err.starts_with("55000: no RSA public key"), "{err}");
    }

    #[pg_test]
    fn token_key_restore_rules() {
        install_fresh_key();
        let kid: String = one("SELECT key_id FROM sqs_loader.token_key");
        store("1.2.3.4");
        install_try_sql();
        // A used key cannot be replaced.
        let err = try_sql("SELECT set_token_key(sqs_loader.new_token_key())");
        assert!(err.starts_with("55000"), "{err}");
        // Re-installing the same key is a no-op.
        let secret_hex: String = one("SELECT encode(secret, 'hex') FROM sqs_loader.token_key");
        assert_eq!(
            one::<String>(&format!(
                "SELECT set_token_key(decode('{secret_hex}', 'hex'))"
            )),
            kid
        );
        // A database restored without its token key: masking refuses instead of minting new tokens.
        run("ALTER TABLE sqs_loader.token_key DISABLE TRIGGER token_key_replace_unused");
        run("DELETE FROM sqs_loader.token_key");
        run("INSERT INTO sqs_loader.token_key(secret, key_id, origin) SELECT k, sqs_loader.token_key_id(k), 'generated' FROM sqs_loader.new_token_key() k");
        let err = try_sql("SELECT mask_pii('1.2.3.4')");
        assert!(
            err.starts_with("55000") && err.contains("not the one the vault was built with"),
            "{err}"
        );
        run("DELETE FROM sqs_loader.token_key");
        let err = try_sql("SELECT mask_pii('1.2.3.4')");
        assert!(err.starts_with("55000: no token key"), "{err}");
        run("ALTER TABLE sqs_loader.token_key ENABLE TRIGGER token_key_replace_unused");
        // Restoring the key from backup repairs it.
        assert_eq!(
            one::<String>(&format!(
                "SELECT set_token_key(decode('{secret_hex}', 'hex'))"
            )),
            kid
        );
        store("1.2.3.4");
    }
}
