//! Catalog hygiene, app_version and the parser from SQL.

#[pgrx::pg_schema]
mod tests {
    #[allow(unused_imports)]
    use crate::pg_tests::*;

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
                         (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S')
                -- implicit types, extension members on PostgreSQL 18 (not 15): array types and
                -- the row types of tables and views
                AND NOT (d.classid = 'pg_type'::regclass AND EXISTS (
                         SELECT 1 FROM pg_type t
                          WHERE t.oid = d.objid
                            AND (t.typcategory = 'A'
                                 OR (t.typrelid <> 0 AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) <> 'c'))))",
        );
        assert_eq!(missing, None, "objects without COMMENT ON");
        // Triggers are not extension members but carry a comment too.
        assert!(opt::<String>(
            "SELECT obj_description(oid, 'pg_trigger') FROM pg_trigger WHERE tgname = 'token_key_replace_unused'"
        )
        .is_some());
    }

    /// A routine that runs SQL with the caller's search_path could be made to run the caller's
    /// (or a database owner's) functions and operators, as whoever called it — a superuser, a
    /// pg_cron job. Every routine pins its search_path, except the procedure (which cannot: it
    /// COMMITs; it refers only to schema-qualified functions, tested in tests/integration) and
    /// C functions that run no SQL at all, listed here.
    #[pg_test]
    fn every_routine_runs_with_a_pinned_search_path() {
        let unpinned: Option<String> = opt(
            "SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid::regprocedure::text)
               FROM pg_proc p
               JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
              WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sqs_loader')
                AND p.pronamespace::regnamespace::text <> 'tests' -- these #[pg_test]s themselves
                AND NOT coalesce((SELECT bool_or(c LIKE 'search_path=%') FROM unnest(p.proconfig) c), false)
                AND p.oid::regprocedure::text NOT IN (
                    'load_user_logins(text,integer,integer,bigint,bigint,bigint,bigint,bigint)',
                    -- C functions that run no SQL:
                    'app_version_int(text)', 'app_version_text(integer)',
                    'sqs_loader.parse_login(text)', 'sqs_loader.reject_reasons()', 'sqs_loader.version()',
                    'sqs_loader.loader_settings()', 'sqs_loader.new_token_key()', 'sqs_loader.token_key_id(bytea)',
                    'sqs_loader.rsa_key_info(text)', 'sqs_loader.private_key_fingerprint(text,text)',
                    'sqs_loader.unseal(text,bytea,bytea,text,text)', 'sqs_loader.rewrap(bytea,text,text,text)',
                    'sqs_loader.protect_statement(text[])', 'sqs_loader.require_caller(text,text)',
                    'sqs_loader.require_preloaded(text)', 'sqs_loader.batch_abandoned()',
                    'sqs_loader.launch_supervisor()',
                    -- runs no SQL here: a background worker writes the rows, with its own pinned path
                    'sqs_loader.audit_access(text,text[],text[])')",
        );
        assert_eq!(unpinned, None, "routines without a pinned search_path");
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

    #[pg_test]
    fn app_version_functions() {
        assert_eq!(one::<i32>("SELECT app_version_int('2.3.0')"), 2_003_000);
        assert_eq!(one::<i32>("SELECT app_version_int('0.96')"), 96_000);
        assert_eq!(one::<String>("SELECT app_version_text(2003000)"), "2.3.0");
        assert_eq!(
            one::<String>("SELECT app_version_text(app_version_int('2.00'))"),
            "2.0.0"
        );
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
        assert_eq!(
            one::<i64>("SELECT count(*) FROM sqs_loader.reject_reasons()"),
            16
        );
        // An event in an SNS envelope: unwrapped, with the envelope's kind and time.
        let sns = r#"{"Type":"Notification","TopicArn":"arn:aws:sns:eu-west-1:1:t","Timestamp":"2026-12-01T21:59:41.854Z","Message":"{\"user_id\":\"u\",\"app_version\":\"1\",\"ip\":\"1.2.3.4\",\"device_id\":\"d\"}"}"#;
        let r: String = one(&format!(
            "SELECT concat_ws('|', user_id, ip, envelope, to_char(event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'))
               FROM sqs_loader.parse_login({})",
            pgrx::spi::quote_literal(sns)
        ));
        assert_eq!(r, "u|1.2.3.4|sns|2026-12-01 21:59:41.854");
    }
}
