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
        // The vault holds one entry per distinct value.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM sqs_loader.vault WHERE token = {}",
                quote(&a)
            )),
            1
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
        let token: String = one("SELECT mask_pii('593-47-5928')");
        let plain: String = one(&format!(
            "SELECT unmask_pii({}, {})",
            quote(&token),
            quote(&private)
        ));
        assert_eq!(plain, "593-47-5928");
        // A freshly generated other key is refused with a clear error and no output.
        let (other, _) = keypair(2048);
        install_try_sql();
        let err = try_sql(&format!(
            "SELECT unmask_pii({}, {})",
            quote(&token),
            quote(&other)
        ));
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
        let token: String = one("SELECT mask_pii('10.1.2.3')");
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
        let t1: String = one("SELECT mask_pii('172.16.0.1')");
        let (new_private, new_public) = keypair(2048);
        let n: i64 = one(&format!(
            "SELECT rotate_rsa_key({}, {})",
            quote(&new_public),
            quote(&old_private)
        ));
        assert!(n >= 1);
        // Tokens are unchanged, new values use the new key, the old private key opens nothing.
        assert_eq!(one::<String>("SELECT mask_pii('172.16.0.1')"), t1);
        let t2: String = one("SELECT mask_pii('172.16.0.2')");
        assert_eq!(
            one::<String>(&format!(
                "SELECT unmask_pii({}, {})",
                quote(&t1),
                quote(&new_private)
            )),
            "172.16.0.1"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT unmask_pii({}, {})",
                quote(&t2),
                quote(&new_private)
            )),
            "172.16.0.2"
        );
        install_try_sql();
        assert!(try_sql(&format!(
            "SELECT unmask_pii({}, {})",
            quote(&t1),
            quote(&old_private)
        ))
        .starts_with("28000"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM sqs_loader.data_keys d JOIN sqs_loader.rsa_keys r ON r.fingerprint = d.rsa_fingerprint WHERE NOT r.active"),
            0
        );
    }

    #[pg_test]
    fn erasure_forgets_the_value_but_keeps_the_token() {
        let private = install_fresh_key();
        let t: String = one("SELECT mask_pii('8.8.8.8')");
        assert!(one::<bool>(&format!("SELECT forget_pii({})", quote(&t))));
        assert_eq!(
            opt::<String>(&format!(
                "SELECT unmask_pii({}, {})",
                quote(&t),
                quote(&private)
            )),
            None
        );
        assert_eq!(
            one::<String>(&format!("SELECT outcome FROM sqs_loader.unmask_audit WHERE token = {} ORDER BY at DESC LIMIT 1", quote(&t))),
            "erased"
        );
        // The same value seen again keeps its token (GROUP BY still works) but is not stored again.
        assert_eq!(one::<String>("SELECT mask_pii('8.8.8.8')"), t);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM sqs_loader.vault WHERE token = {}",
                quote(&t)
            )),
            0
        );
        assert!(!one::<bool>(&format!("SELECT forget_pii({})", quote(&t))));
    }

    #[pg_test]
    fn masking_without_an_rsa_key_fails_loudly() {
        run("DELETE FROM sqs_loader.rsa_keys WHERE NOT EXISTS (SELECT 1 FROM sqs_loader.data_keys d WHERE d.rsa_fingerprint = rsa_keys.fingerprint)");
        run("UPDATE sqs_loader.rsa_keys SET active = false");
        install_try_sql();
        let err = try_sql("SELECT mask_pii('1.1.1.1')");
        assert!(err.starts_with("55000: no RSA public key"), "{err}");
    }

    #[pg_test]
    fn token_key_restore_rules() {
        install_fresh_key();
        let kid: String = one("SELECT key_id FROM sqs_loader.token_key");
        one::<String>("SELECT mask_pii('1.2.3.4')");
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
        one::<String>("SELECT mask_pii('1.2.3.4')");
    }
}
