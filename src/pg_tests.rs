// #[pg_test]s: run inside pgrx's test PostgreSQL, each in a transaction that is rolled back.
// The SQS tests talk to LocalStack at sqs_loader_test.localstack (set in pg_test below and
// started by `make test`). Tests that need COMMIT (the procedure, pg_cron, kills) are client-side
// tests in pgrx-tests/.
use pgrx::prelude::*;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: NULL"))
}

fn opt<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn quote(s: &str) -> String {
    pgrx::spi::quote_literal(s)
}

/// A helper schema with try_sql(q): 'ok', or 'SQLSTATE: message' when q fails (in a subtransaction).
/// Every role may call it, so it can probe what an unprivileged role is refused.
fn install_try_sql() {
    run("CREATE SCHEMA IF NOT EXISTS t_help");
    run("GRANT USAGE ON SCHEMA t_help TO PUBLIC");
    run("CREATE OR REPLACE FUNCTION t_help.try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN EXECUTE q; RETURN 'ok';
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$");
}

fn try_sql(sql: &str) -> String {
    one::<String>(&format!("SELECT t_help.try_sql({})", quote(sql)))
}

/// A role that exists only in this test's transaction.
fn make_role(name: &str) -> String {
    let role = format!("{name}_{}", std::process::id() ^ (getrandom::u32().unwrap() & 0xffff));
    run(&format!("CREATE ROLE {role} NOLOGIN"));
    role
}

fn keypair(bits: usize) -> (String, String) {
    let k = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).unwrap();
    let private = k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    (private, public)
}

/// Install a fresh RSA public key; return the private key PEM.
fn install_fresh_key() -> String {
    let (private, public) = keypair(2048);
    run(&format!("SELECT set_rsa_public_key({})", quote(&public)));
    private
}

// ------------------------------------------------------------------ catalog hygiene

#[pg_test]
fn every_extension_object_has_a_comment() {
    let missing: Option<String> = opt(
        "SELECT string_agg(pg_describe_object(d.classid, d.objid, 0), ', ')
           FROM pg_depend d
          WHERE d.refclassid = 'pg_extension'::regclass
            AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sqs_loader')
            AND d.deptype = 'e'
            AND (pg_identify_object(d.classid, d.objid, 0)).schema IS DISTINCT FROM 'tests'  -- pgrx's test functions
            AND pg_describe_object(d.classid, d.objid, 0) <> 'schema tests'
            AND obj_description(d.objid, d.classid::regclass::text) IS NULL
            AND NOT (d.classid = 'pg_class'::regclass AND
                     (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S')",
    );
    assert_eq!(missing, None, "objects without COMMENT ON");
    // Triggers are not extension members but carry a comment too.
    assert!(opt::<String>(
        "SELECT obj_description(oid, 'pg_trigger') FROM pg_trigger WHERE tgname = 'token_key_replace_unused'"
    )
    .is_some());
}

#[pg_test]
fn user_logins_has_exactly_the_owners_ddl_and_is_not_an_extension_member() {
    let cols: String = one(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
           FROM pg_attribute WHERE attrelid = 'user_logins'::regclass AND attnum > 0 AND NOT attisdropped",
    );
    assert_eq!(
        cols,
        "user_id character varying(128), device_type character varying(32), masked_ip character varying(256), \
         masked_device_id character varying(256), locale character varying(32), app_version integer, create_date date"
    );
    let member: bool = one(
        "SELECT EXISTS (SELECT 1 FROM pg_depend WHERE objid = 'user_logins'::regclass AND deptype = 'e')",
    );
    assert!(!member, "DROP EXTENSION must never drop user_logins");
}

// ------------------------------------------------------------------ app_version

#[pg_test]
fn app_version_functions() {
    assert_eq!(one::<i32>("SELECT app_version_int('2.3.0')"), 2_003_000);
    assert_eq!(one::<i32>("SELECT app_version_int('0.96')"), 96_000);
    assert_eq!(one::<String>("SELECT app_version_text(2003000)"), "2.3.0");
    assert_eq!(one::<String>("SELECT app_version_text(app_version_int('2.00'))"), "2.0.0");
    // The three values that stripping dots collapses into 26 stay apart, in version order.
    assert_eq!(
        one::<String>(
            "SELECT string_agg(v, ' < ' ORDER BY app_version_int(v)) FROM unnest(ARRAY['2.6','0.26','0.2.6']) v"
        ),
        "0.2.6 < 0.26 < 2.6"
    );
    install_try_sql();
    assert!(try_sql("SELECT app_version_int('1.2.3.4')").starts_with("22023"));
    assert!(try_sql("SELECT app_version_text(-1)").starts_with("22003"));
    assert_eq!(opt::<i32>("SELECT app_version_int(NULL)"), None);
}

#[pg_test]
fn parse_login_from_sql() {
    let r: String = one(
        "SELECT concat_ws('|', user_id, device_type, ip, locale, device_id, app_version, reject_reason)
           FROM sqs_loader.parse_login('{\"user_id\":\"u\",\"app_version\":\"2.3.0\",\"device_type\":\"ios\",\"ip\":\"2001:DB8::1\",\"locale\":null,\"device_id\":\"d\"}')",
    );
    assert_eq!(r, "u|ios|2001:db8::1|d|2003000");
    assert_eq!(
        one::<String>("SELECT reject_reason FROM sqs_loader.parse_login('[1]')"),
        "not_an_object"
    );
    assert_eq!(one::<i64>("SELECT count(*) FROM sqs_loader.reject_reasons()"), 14);
}

// ------------------------------------------------------------------ masking

#[pg_test]
fn mask_pii_properties() {
    install_fresh_key();
    let a: String = one("SELECT mask_pii('199.172.111.135')");
    assert_eq!(a, one::<String>("SELECT mask_pii('199.172.111.135')"), "deterministic");
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
        one::<i64>(&format!("SELECT count(*) FROM sqs_loader.vault WHERE token = {}", quote(&a))),
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
    let plain: String = one(&format!("SELECT unmask_pii({}, {})", quote(&token), quote(&private)));
    assert_eq!(plain, "593-47-5928");
    // A freshly generated other key is refused with a clear error and no output.
    let (other, _) = keypair(2048);
    install_try_sql();
    let err = try_sql(&format!("SELECT unmask_pii({}, {})", quote(&token), quote(&other)));
    assert!(err.starts_with("28000: this private key cannot decrypt"), "{err}");
    assert!(!err.contains("PRIVATE KEY") && !err.contains("MII"), "no key material in errors: {err}");
    // Garbage key: a different, clear error.
    assert!(try_sql(&format!("SELECT unmask_pii({}, 'garbage')", quote(&token))).starts_with("22023"));
    // Audit rows, committed by the background worker even though the calls failed.
    let outcomes: String = one(&format!(
        "SELECT string_agg(outcome, ',' ORDER BY at) FROM sqs_loader.unmask_audit WHERE token = {}",
        quote(&token)
    ));
    assert_eq!(outcomes, "ok,wrong_key,bad_key");
    // Unknown and NULL tokens: NULL, audited.
    assert_eq!(opt::<String>(&format!("SELECT unmask_pii('v1.nope', {})", quote(&private))), None);
    assert_eq!(
        one::<String>("SELECT outcome FROM sqs_loader.unmask_audit WHERE token = 'v1.nope' ORDER BY at DESC LIMIT 1"),
        "unknown_token"
    );
}

#[pg_test]
fn encrypted_pkcs8_with_passphrase() {
    let k = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let public = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let encrypted = k.to_pkcs8_encrypted_pem(b"s3cret passphrase", LineEnding::LF).unwrap().to_string();
    run(&format!("SELECT set_rsa_public_key({})", quote(&public)));
    let token: String = one("SELECT mask_pii('10.1.2.3')");
    let plain: String = one(&format!(
        "SELECT unmask_pii({}, {}, 's3cret passphrase')",
        quote(&token),
        quote(&encrypted)
    ));
    assert_eq!(plain, "10.1.2.3");
    install_try_sql();
    let err = try_sql(&format!("SELECT unmask_pii({}, {}, 'wrong')", quote(&token), quote(&encrypted)));
    assert!(err.starts_with("22023") && err.contains("passphrase"), "{err}");
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
    assert_eq!(one::<String>(&format!("SELECT unmask_pii({}, {})", quote(&t1), quote(&new_private))), "172.16.0.1");
    assert_eq!(one::<String>(&format!("SELECT unmask_pii({}, {})", quote(&t2), quote(&new_private))), "172.16.0.2");
    install_try_sql();
    assert!(try_sql(&format!("SELECT unmask_pii({}, {})", quote(&t1), quote(&old_private))).starts_with("28000"));
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
    assert_eq!(opt::<String>(&format!("SELECT unmask_pii({}, {})", quote(&t), quote(&private))), None);
    assert_eq!(
        one::<String>(&format!("SELECT outcome FROM sqs_loader.unmask_audit WHERE token = {} ORDER BY at DESC LIMIT 1", quote(&t))),
        "erased"
    );
    // The same value seen again keeps its token (GROUP BY still works) but is not stored again.
    assert_eq!(one::<String>("SELECT mask_pii('8.8.8.8')"), t);
    assert_eq!(one::<i64>(&format!("SELECT count(*) FROM sqs_loader.vault WHERE token = {}", quote(&t))), 0);
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
    assert_eq!(one::<String>(&format!("SELECT set_token_key(decode('{secret_hex}', 'hex'))")), kid);
    // A database restored without its token key: masking refuses instead of minting new tokens.
    run("ALTER TABLE sqs_loader.token_key DISABLE TRIGGER token_key_replace_unused");
    run("DELETE FROM sqs_loader.token_key");
    run("INSERT INTO sqs_loader.token_key(secret, key_id, origin) SELECT k, sqs_loader.token_key_id(k), 'generated' FROM sqs_loader.new_token_key() k");
    let err = try_sql("SELECT mask_pii('1.2.3.4')");
    assert!(err.starts_with("55000") && err.contains("not the one the vault was built with"), "{err}");
    run("DELETE FROM sqs_loader.token_key");
    let err = try_sql("SELECT mask_pii('1.2.3.4')");
    assert!(err.starts_with("55000: no token key"), "{err}");
    run("ALTER TABLE sqs_loader.token_key ENABLE TRIGGER token_key_replace_unused");
    // Restoring the key from backup repairs it.
    assert_eq!(one::<String>(&format!("SELECT set_token_key(decode('{secret_hex}', 'hex'))")), kid);
    one::<String>("SELECT mask_pii('1.2.3.4')");
}

// ------------------------------------------------------------------ privileges

#[pg_test]
fn unprivileged_roles_are_denied_every_path() {
    install_fresh_key();
    let token: String = one("SELECT mask_pii('203.0.113.9')");
    run("SET LOCAL sqs_loader.aws_secret_access_key = 'SUPERSECRETVALUE'");
    install_try_sql();
    let role = make_role("nobody");
    run(&format!("SET LOCAL ROLE {role}"));
    let denied = |sql: &str| {
        let r = try_sql(sql);
        assert!(r.starts_with("42501"), "{sql} => {r}");
        assert!(!r.contains("SUPERSECRETVALUE"));
    };
    denied(&format!("SELECT unmask_pii({}, 'k')", quote(&token)));
    denied(&format!("SELECT unmask_pii({}, 'k', 'p')", quote(&token)));
    denied("SELECT mask_pii('x')");
    denied("SELECT * FROM mask_pii_batch(ARRAY['x'])");
    denied("SELECT * FROM sqs_loader.vault");
    denied("SELECT * FROM sqs_loader.token_key");
    denied("SELECT * FROM sqs_loader.data_keys");
    denied("SELECT * FROM sqs_loader.rejected_messages");
    denied("SELECT * FROM sqs_loader.unmask_audit");
    denied("SELECT * FROM load_health");
    denied("SELECT sqs_loader.unseal('a', 'x', 'x', 'k', NULL)");
    denied("SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q', 1)");
    denied("SELECT sqs_send('http://localhost:4566/000000000000/q', ARRAY['x'])");
    denied("SELECT sqs_delete('http://localhost:4566/000000000000/q', ARRAY['x'])");
    denied("SELECT sqs_create_queue('q')");
    denied("SELECT sqs_queue_attributes('http://localhost:4566/000000000000/q')");
    denied("CALL load_user_logins('http://localhost:4566/000000000000/q')");
    denied(&format!("SELECT forget_pii({})", quote(&token)));
    denied("SELECT set_token_key(sqs_loader.new_token_key())");
    denied("SELECT set_rsa_public_key('x')");
    // The AWS secret: SHOW, current_setting, pg_settings, SET.
    denied("SHOW sqs_loader.aws_secret_access_key");
    denied("SELECT current_setting('sqs_loader.aws_secret_access_key')");
    denied("SET sqs_loader.aws_secret_access_key = 'x'");
    assert_eq!(
        one::<i64>("SELECT count(*) FROM pg_settings WHERE name LIKE 'sqs_loader.aws%' OR setting LIKE '%SUPERSECRET%'"),
        0
    );
    // Harmless functions stay usable.
    assert_eq!(one::<String>("SELECT app_version_text(2003000)"), "2.3.0");
    run("RESET ROLE");
}

#[pg_test]
fn a_granted_role_unmasks_without_any_privilege_on_the_vault() {
    let private = install_fresh_key();
    let token: String = one("SELECT mask_pii('198.51.100.7')");
    install_try_sql();
    let role = make_role("auditor");
    run(&format!("GRANT EXECUTE ON FUNCTION unmask_pii(text, text) TO {role}"));
    run(&format!("SET LOCAL ROLE {role}"));
    assert_eq!(
        one::<String>(&format!("SELECT unmask_pii({}, {})", quote(&token), quote(&private))),
        "198.51.100.7"
    );
    assert!(try_sql("SELECT * FROM sqs_loader.vault").starts_with("42501"));
    // The audit records who asked: the role, even through SECURITY DEFINER.
    run("RESET ROLE");
    assert_eq!(
        one::<String>(&format!("SELECT role_name FROM sqs_loader.unmask_audit WHERE token = {} AND outcome = 'ok'", quote(&token))),
        role
    );
    // The caller cannot alter audit rows.
    run(&format!("SET LOCAL ROLE {role}"));
    assert!(try_sql("DELETE FROM sqs_loader.unmask_audit").starts_with("42501"));
    run("RESET ROLE");
}

#[pg_test]
fn secrets_cannot_be_stored_where_every_role_can_read_them() {
    install_try_sql();
    let role = make_role("victim");
    let err = try_sql(&format!("ALTER ROLE {role} SET sqs_loader.aws_secret_access_key = 'x'"));
    assert!(err.starts_with("42501") && err.contains("ALTER DATABASE/ROLE"), "{err}");
    let err = try_sql("ALTER DATABASE pgrx_tests SET sqs_loader.aws_session_token = 'x'");
    assert!(err.starts_with("42501"), "{err}");
    let err = try_sql(
        "CREATE FUNCTION t_help.f() RETURNS int LANGUAGE sql SET sqs_loader.aws_secret_access_key = 'x' AS 'SELECT 1'",
    );
    assert!(err.starts_with("42501"), "{err}");
    // A superuser session may set it.
    assert_eq!(try_sql("SET LOCAL sqs_loader.aws_secret_access_key = 'x'"), "ok");
}

#[pg_test]
fn security_definer_functions_ignore_the_callers_search_path() {
    let private = install_fresh_key();
    let token: String = one("SELECT mask_pii('192.0.2.1')");
    install_try_sql();
    let role = make_role("attacker");
    run(&format!("GRANT EXECUTE ON FUNCTION unmask_pii(text, text), mask_pii(text), forget_pii(text) TO {role}"));
    run(&format!("CREATE SCHEMA evil AUTHORIZATION {role}"));
    run(&format!("SET LOCAL ROLE {role}"));
    // Shadow what the functions use: a table named like the vault and functions named like built-ins.
    run("CREATE TABLE evil.hits(what text)");
    run("CREATE TABLE evil.vault(token text, data_key_id bigint, sealed bytea)");
    for f in ["unnest(text[], bytea[])", "coalesce(text, text)", "exists(text)", "lower(text)"] {
        let name = f.split('(').next().unwrap();
        let _ = try_sql(&format!(
            "CREATE FUNCTION evil.{f} RETURNS SETOF record LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('{name}') RETURNING NULL::record $$"
        ));
    }
    run("SET LOCAL search_path = evil, public, pg_catalog");
    let again: String = one("SELECT public.mask_pii('192.0.2.1')");
    assert_eq!(again, token);
    assert_eq!(
        one::<String>(&format!("SELECT public.unmask_pii({}, {})", quote(&token), quote(&private))),
        "192.0.2.1"
    );
    assert_eq!(one::<i64>("SELECT count(*) FROM evil.hits"), 0, "no attacker object ran");
    assert_eq!(one::<i64>("SELECT count(*) FROM evil.vault"), 0);
    run("RESET ROLE");
    run("RESET search_path");
}

// ------------------------------------------------------------------ settings

#[pg_test]
fn settings_are_registered_with_defaults() {
    for (name, default) in [
        ("sqs_loader.region", "us-east-1"),
        ("sqs_loader.protocol", "json"),
        ("sqs_loader.max_parallel_requests", "8"),
        ("sqs_loader.batch_size", "500"),
        ("sqs_loader.max_seconds", "50"),
        ("sqs_loader.exit_when_empty", "on"),
        ("sqs_loader.dedup_retention_days", "15"),
    ] {
        assert_eq!(one::<String>(&format!("SELECT current_setting('{name}')")), default, "{name}");
    }
    install_try_sql();
    let e = try_sql("SET sqs_loader.no_such_setting = 1");
    assert!(e.starts_with("42602") && e.contains("invalid configuration parameter name"), "reserved prefix: {e}");
    assert!(try_sql("SET sqs_loader.dedup_retention_days = 3").starts_with("22023"), "must exceed 14 days");
}

// ------------------------------------------------------------------ SQS through SQL (LocalStack)

fn localstack() -> String {
    one("SELECT current_setting('sqs_loader_test.localstack')")
}

/// A fresh queue on LocalStack, with test credentials set for this transaction.
fn fresh_queue(prefix: &str) -> String {
    run("SET LOCAL sqs_loader.aws_access_key_id = 'test'");
    run("SET LOCAL sqs_loader.aws_secret_access_key = 'test'");
    run(&format!("SET LOCAL sqs_loader.endpoint = {}", quote(&localstack())));
    let name = format!("{prefix}-{:08x}", getrandom::u32().unwrap());
    let url: String = one(&format!("SELECT sqs_create_queue({})", quote(&name)));
    run("RESET sqs_loader.endpoint");
    url
}

fn send_n(url: &str, n: usize) {
    let sent: i32 = one(&format!(
        "SELECT sqs_send({}, ARRAY(SELECT '{{\"n\":' || i || '}}' FROM generate_series(1, {n}) i))",
        quote(url)
    ));
    assert_eq!(sent as usize, n);
}

fn pulled(url: &str, n: i32) -> i64 {
    one(&format!("SELECT count(*) FROM sqs_pull({}, {n})", quote(url)))
}

#[pg_test]
fn create_queue_is_idempotent() {
    let url = fresh_queue("t-create");
    let name = url.rsplit('/').next().unwrap().to_string();
    run(&format!("SET LOCAL sqs_loader.endpoint = {}", quote(&localstack())));
    assert_eq!(one::<String>(&format!("SELECT sqs_create_queue({})", quote(&name))), url);
    install_try_sql();
    assert!(try_sql("SELECT sqs_create_queue('bad name!')").starts_with("22023"));
}

#[pg_test]
fn pull_counts() {
    let url = fresh_queue("t-pull");
    assert_eq!(pulled(&url, 10), 0, "empty queue");
    send_n(&url, 136);
    assert_eq!(pulled(&url, 1), 1);
    assert_eq!(pulled(&url, 10), 10);
    assert_eq!(pulled(&url, 25), 25);
    assert_eq!(pulled(&url, 100), 100);
    // Received messages are invisible for their visibility timeout: nothing left.
    assert_eq!(pulled(&url, 10), 0);
    let depth: i64 = one(&format!(
        "SELECT (sqs_queue_attributes({}) ->> 'ApproximateNumberOfMessagesNotVisible')::bigint",
        quote(&url)
    ));
    assert_eq!(depth, 136);
}

#[pg_test]
fn visibility_timeout_brings_a_message_back_with_receive_count_2() {
    let url = fresh_queue("t-vis");
    send_n(&url, 1);
    let (id1, c1): (Option<String>, Option<i32>) =
        Spi::get_two(&format!("SELECT message_id, receive_count FROM sqs_pull({}, 1, 1)", quote(&url))).unwrap();
    assert_eq!(c1, Some(1));
    // Not deleted: it comes back once its 1 s visibility timeout has passed.
    let mut again = (None, None);
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let rows: Vec<(Option<String>, Option<i32>)> = Spi::connect(|c| {
            c.select(&format!("SELECT message_id, receive_count FROM sqs_pull({}, 1, 30)", quote(&url)), None, &[])
                .unwrap()
                .map(|r| (r.get::<String>(1).unwrap(), r.get::<i32>(2).unwrap()))
                .collect()
        });
        if let Some(r) = rows.into_iter().next() {
            again = r;
            break;
        }
    }
    let (id2, c2) = again;
    assert_eq!(id1, id2);
    assert_eq!(c2, Some(2));
}

#[pg_test]
fn delete_with_one_bad_receipt_handle() {
    let url = fresh_queue("t-del");
    send_n(&url, 12);
    let deleted: i32 = one(&format!(
        "SELECT sqs_delete({0}, array_append(ARRAY(SELECT receipt_handle FROM sqs_pull({0}, 12)), 'not-a-receipt-handle'))",
        quote(&url)
    ));
    assert_eq!(deleted, 12);
    let attrs: pgrx::JsonB = one(&format!("SELECT sqs_queue_attributes({})", quote(&url)));
    assert_eq!(attrs.0["ApproximateNumberOfMessages"], 0);
    assert_eq!(attrs.0["ApproximateNumberOfMessagesNotVisible"], 0);
}

fn round_trip(protocol: &str) {
    run(&format!("SET LOCAL sqs_loader.protocol = '{protocol}'"));
    let url = fresh_queue(&format!("t-rt-{protocol}"));
    let big = "x".repeat(200 * 1024);
    let bodies = [
        r#"{"q":"double \"quotes\" and 'single'"}"#.to_string(),
        "<xml attr=\"1\">&amp; & < > </xml>".to_string(),
        "unicode: é 漢字 🙂 \u{2028} tab\tnewline\n\r\ncr".to_string(),
        "]]> <![CDATA[ x ]]>".to_string(),
        big.clone(),
    ];
    let arr = format!("ARRAY[{}]", bodies.iter().map(|b| quote(b)).collect::<Vec<_>>().join(","));
    assert_eq!(one::<i32>(&format!("SELECT sqs_send({}, {arr})", quote(&url))), bodies.len() as i32);
    let got: Vec<String> = Spi::connect(|c| {
        c.select(&format!("SELECT body FROM sqs_pull({}, 10)", quote(&url)), None, &[])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
    });
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want = bodies.to_vec();
    want.sort();
    assert_eq!(got_sorted.len(), want.len(), "{protocol}");
    for (g, w) in got_sorted.iter().zip(&want) {
        assert_eq!(g, w, "{protocol}: body changed in transit");
    }
}

#[pg_test]
fn send_receive_round_trip_json() {
    round_trip("json");
}

#[pg_test]
fn send_receive_round_trip_query() {
    round_trip("query");
}

#[pg_test]
fn unknown_queue_and_unreachable_endpoint() {
    install_try_sql();
    run("SET LOCAL sqs_loader.aws_access_key_id = 'test'");
    run("SET LOCAL sqs_loader.aws_secret_access_key = 'test'");
    let ls = localstack();
    for protocol in ["json", "query"] {
        run(&format!("SET LOCAL sqs_loader.protocol = '{protocol}'"));
        let err = try_sql(&format!("SELECT * FROM sqs_pull('{ls}/000000000000/no-such-queue-here', 1)"));
        assert!(err.starts_with("42704") && err.contains("QueueDoesNotExist"), "{protocol}: {err}");
    }
    // A closed port: a clear I/O error after the retries, no secret in it.
    run("SET LOCAL sqs_loader.max_retries = 1");
    let err = try_sql("SELECT * FROM sqs_pull('http://127.0.0.1:9/000000000000/q', 1)");
    assert!(err.starts_with("58030") && err.contains("2 attempt(s)"), "{err}");
    // Hosts outside the allow-list are refused before any request.
    let err = try_sql("SELECT * FROM sqs_pull('http://169.254.169.254/000000000000/q', 1)");
    assert!(err.starts_with("42501") && err.contains("allowed_hosts"), "{err}");
    // Arguments are validated.
    assert!(try_sql(&format!("SELECT * FROM sqs_pull('{ls}/000000000000/q', -1)")).starts_with("22023"));
    assert!(try_sql(&format!("SELECT * FROM sqs_pull('{ls}/000000000000/q', 1, NULL, 21)")).starts_with("22023"));
    assert!(try_sql("SELECT * FROM sqs_pull('not a url', 1)").starts_with("22023"));
    assert!(try_sql(&format!("SELECT sqs_send('{ls}/000000000000/q', ARRAY[NULL])")).starts_with("22004"));
}

#[pg_test]
fn a_granted_role_cannot_send_requests_to_other_hosts() {
    install_try_sql();
    let role = make_role("sqsuser");
    run(&format!(
        "GRANT EXECUTE ON FUNCTION sqs_pull(text, integer, integer, integer), sqs_queue_attributes(text) TO {role}"
    ));
    run(&format!("SET LOCAL ROLE {role}"));
    // Instance metadata, directly or through the endpoint override (a user setting): refused
    // before any request, because the allow-list applies to wherever the request would go.
    let err = try_sql("SELECT * FROM sqs_pull('http://169.254.169.254/000000000000/q', 1)");
    assert!(err.starts_with("42501") && err.contains("169.254.169.254"), "{err}");
    run("SET LOCAL sqs_loader.endpoint = 'http://169.254.169.254'");
    let err = try_sql("SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q', 1)");
    assert!(err.starts_with("42501") && err.contains("allowed_hosts"), "{err}");
    run("SET LOCAL sqs_loader.endpoint = 'http://evil.example.com'");
    assert!(try_sql("SELECT sqs_queue_attributes('http://localhost:4566/000000000000/q')").starts_with("42501"));
    // The role can change neither the allow-list nor the credentials.
    assert!(try_sql("SET sqs_loader.allowed_hosts = '*'").starts_with("42501"));
    assert!(try_sql("SET sqs_loader.aws_access_key_id = 'x'").starts_with("42501"));
    run("RESET ROLE");
}

#[pg_test]
fn text_arguments_are_data_never_sql() {
    let private = install_fresh_key();
    install_try_sql();
    let injections = [
        "x'); DROP TABLE user_logins; --",
        "'; SELECT pg_sleep(30); --",
        "$$ || (SELECT secret FROM sqs_loader.token_key) || $$",
        "\\'; DROP SCHEMA sqs_loader CASCADE; --",
    ];
    for inj in injections {
        let q = quote(inj);
        assert!(
            try_sql(&format!("SELECT * FROM sqs_pull('http://localhost:4566/000000000000/' || {q}, 1)")).starts_with("22023"),
            "{inj}"
        );
        assert!(try_sql(&format!("SELECT sqs_create_queue({q})")).starts_with("22023"), "{inj}");
        assert_eq!(opt::<String>(&format!("SELECT unmask_pii({q}, {})", quote(&private))), None);
        assert_eq!(
            one::<String>(&format!("SELECT token FROM sqs_loader.unmask_audit WHERE token = {q} LIMIT 1")),
            inj,
            "audited verbatim"
        );
        assert!(!one::<bool>(&format!("SELECT forget_pii({q})")));
        assert_eq!(one::<String>(&format!("SELECT mask_pii({q})")).len(), 46);
        let body = serde_json::json!({"user_id": inj, "ip": "1.2.3.4", "device_id": inj, "app_version": "1"}).to_string();
        assert_eq!(one::<String>(&format!("SELECT user_id FROM sqs_loader.parse_login({})", quote(&body))), inj);
    }
    assert!(one::<bool>("SELECT to_regclass('public.user_logins') IS NOT NULL AND to_regclass('sqs_loader.vault') IS NOT NULL"));
}
