//! Privileges: what an unprivileged or a granted role can and cannot do; settings.

#[pgrx::pg_schema]
mod tests {
    #[allow(unused_imports)]
    use crate::pg_tests::*;

    #[pg_test]
    fn unprivileged_roles_are_denied_every_path() {
        install_fresh_key();
        let token = store("203.0.113.9");
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
        let token = store("198.51.100.7");
        install_try_sql();
        let role = make_role("auditor");
        run(&format!("GRANT sqs_loader_unmask TO {role}"));
        run(&format!("SET LOCAL ROLE {role}"));
        assert_eq!(unmask(&token, &private).unwrap(), "198.51.100.7");
        assert!(try_sql("SELECT * FROM sqs_loader.vault").starts_with("42501"));
        // The audit records who asked: the role, even through SECURITY DEFINER.
        run("RESET ROLE");
        assert_eq!(
            one::<String>(&format!(
                "SELECT role_name FROM sqs_loader.unmask_audit WHERE token = {} AND outcome = 'ok'",
                quote(&token)
            )),
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
        let err = try_sql(&format!(
            "ALTER ROLE {role} SET sqs_loader.aws_secret_access_key = 'x'"
        ));
        assert!(
            err.starts_with("42501") && err.contains("ALTER DATABASE/ROLE"),
            "{err}"
        );
        let err = try_sql("ALTER DATABASE pgrx_tests SET sqs_loader.aws_session_token = 'x'");
        assert!(err.starts_with("42501"), "{err}");
        let err = try_sql(
            "CREATE FUNCTION t_help.f() RETURNS int LANGUAGE sql SET sqs_loader.aws_secret_access_key = 'x' AS 'SELECT 1'",
        );
        assert!(err.starts_with("42501"), "{err}");
        // A superuser session may set it.
        assert_eq!(
            try_sql("SET LOCAL sqs_loader.aws_secret_access_key = 'x'"),
            "ok"
        );
    }

    #[pg_test]
    fn security_definer_functions_ignore_the_callers_search_path() {
        let private = install_fresh_key();
        let token = store("192.0.2.1");
        install_try_sql();
        let role = make_role("attacker");
        run(&format!(
            "GRANT EXECUTE ON FUNCTION mask_pii(text), forget_pii(text) TO {role}"
        ));
        run(&format!("GRANT sqs_loader_unmask TO {role}"));
        run(&format!("CREATE SCHEMA evil AUTHORIZATION {role}"));
        run(&format!("SET LOCAL ROLE {role}"));
        // Shadow what the functions use: a table named like the vault and functions named like built-ins.
        run("CREATE TABLE evil.hits(what text)");
        run("CREATE TABLE evil.vault(token text, data_key_id bigint, sealed bytea)");
        for f in [
            "unnest(text[], bytea[])",
            "coalesce(text, text)",
            "exists(text)",
            "lower(text)",
        ] {
            let name = f.split('(').next().unwrap();
            let _ = try_sql(&format!(
                "CREATE FUNCTION evil.{f} RETURNS SETOF record LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('{name}') RETURNING NULL::record $$"
            ));
        }
        run("SET LOCAL search_path = evil, public, pg_catalog");
        let again: String = one("SELECT public.mask_pii('192.0.2.1')");
        assert_eq!(again, token);
        assert_eq!(
            one::<String>(&format!(
                "SELECT public.unmask_pii({}, {})",
                quote(&token),
                quote(&private)
            )),
            "192.0.2.1"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM evil.hits"),
            0,
            "no attacker object ran"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM evil.vault"), 0);
        run("RESET ROLE");
        run("RESET search_path");
    }

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
            assert_eq!(
                one::<String>(&format!("SELECT current_setting('{name}')")),
                default,
                "{name}"
            );
        }
        install_try_sql();
        let e = try_sql("SET sqs_loader.no_such_setting = 1");
        assert!(
            e.starts_with("42602") && e.contains("invalid configuration parameter name"),
            "reserved prefix: {e}"
        );
        assert!(
            try_sql("SET sqs_loader.dedup_retention_days = 3").starts_with("22023"),
            "must exceed 14 days"
        );
    }
}
