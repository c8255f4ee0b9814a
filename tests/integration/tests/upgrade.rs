//! ALTER EXTENSION sqs_loader UPDATE from the 0.1.0 release: scripts/upgrade_fixture.sh built
//! 0.1.0 from git history and made database upgrade_from_0_1_0 with it (the 100 sample messages
//! loaded, one value erased); the current version was installed over it. After the update the
//! catalog must be exactly a fresh install's, and tokens, unmasking and loading must go on.

use sqs_loader_it::*;

/// Every object of the extension with what defines it, one line each, sorted: functions with
/// their full definition (body, SET clauses, SECURITY DEFINER), ACLs and comments; tables with
/// columns, constraints, indexes, triggers; views; types; the config-dump list. ACL entries are
/// sorted: GRANT order is not part of the meaning.
const CATALOG: &str = r#"
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'sqs_loader'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
lines AS (
    SELECT 'object ' || pg_describe_object(m.classid, m.objid, 0)
           || ' comment=' || coalesce(obj_description(m.objid, m.classid::regclass::text), '-') AS line
      FROM members m
    UNION ALL
    SELECT 'function ' || pg_get_functiondef(p.oid)
           || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) a), '-')
      FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    SELECT 'column ' || c.oid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
           || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
           || ' collation=' || coalesce(nullif(a.attcollation, 0)::regcollation::text, '-')
           || ' #' || a.attnum
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text
           || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(c.relacl) a), '-')
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
    UNION ALL
    SELECT 'constraint ' || con.conrelid::regclass || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
      FROM members m JOIN pg_constraint con ON m.classid = 'pg_class'::regclass AND con.conrelid = m.objid
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM members m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' comment=' || coalesce(obj_description(t.oid, 'pg_trigger'), '-')
      FROM members m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid AND NOT t.tgisinternal
    UNION ALL
    SELECT 'view ' || c.oid::regclass || ' ' || pg_get_viewdef(c.oid)
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid AND c.relkind = 'v'
    UNION ALL
    SELECT 'config ' || x::regclass
      FROM pg_extension e, unnest(e.extconfig) x WHERE e.extname = 'sqs_loader'
)
SELECT string_agg(line, E'\n' ORDER BY line) FROM lines
"#;

fn catalog(c: &mut postgres::Client) -> String {
    c.query_one(CATALOG, &[]).unwrap().get(0)
}

#[test]
fn alter_extension_update_from_0_1_0_keeps_data_and_matches_a_fresh_install() {
    let _g = shared();
    let e = env();
    let private_key = std::fs::read_to_string(format!("{}/upgrade/private_key.pem", e.run_dir))
        .expect("scripts/upgrade_fixture.sh wrote the fixture's key");
    let mut c = connect("upgrade_from_0_1_0");
    let v: String = c
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'sqs_loader'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, "0.1.0", "the fixture is the 0.1.0 release");
    // What 0.1.0 left: rows, a reject, tokens, an erased value.
    let before: (i64, i64, String, String) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM user_logins), (SELECT count(*) FROM sqs_loader.rejected_messages),
                        (SELECT masked_ip FROM user_logins WHERE user_id = '424cdd21-063a-43a7-b91b-7ca1a833afae'),
                        (SELECT token FROM sqs_loader.erased LIMIT 1)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!((before.0, before.1), (99, 1));

    c.batch_execute("ALTER EXTENSION sqs_loader UPDATE")
        .unwrap();
    let (v, default): (String, String) = {
        let r = c
            .query_one(
                "SELECT e.extversion, a.default_version FROM pg_extension e
                   JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'sqs_loader'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(v, default, "updated to the installed version");
    assert_ne!(
        v, "0.1.0",
        "the current version is installed over the fixture"
    );

    // The catalog is exactly a fresh install's.
    let fresh = TestDb::new("upgrade_fresh");
    let want = catalog(&mut fresh.client());
    let got = catalog(&mut c);
    if want != got {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
        let missing: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).collect();
        let extra: Vec<&&str> = g.iter().filter(|l| !w.contains(l)).collect();
        panic!("upgraded catalog differs from a fresh install\n--- only in a fresh install:\n{missing:#?}\n--- only after the upgrade:\n{extra:#?}");
    }

    // Tokens are unchanged: the same IP masks to the token 0.1.0 stored.
    let token: String = c
        .query_one("SELECT mask_pii('199.172.111.135')", &[])
        .unwrap()
        .get(0);
    let stored: i64 = c
        .query_one(
            "SELECT count(*) FROM user_logins WHERE masked_ip = $1",
            &[&token],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        stored, 1,
        "the IP of the first sample message keeps its token"
    );
    // Values 0.1.0 sealed are recovered with its key; the erased one stays erased.
    let ip: String = c
        .query_one("SELECT unmask_pii($1, $2)", &[&before.2, &private_key])
        .unwrap()
        .get(0);
    assert_eq!(ip, "199.172.111.135");
    let erased: Option<String> = c
        .query_one("SELECT unmask_pii($1, $2)", &[&before.3, &private_key])
        .unwrap()
        .get(0);
    assert_eq!(erased, None);
    // Loading goes on through the upgraded procedure, into the same table, exactly once.
    let url: String = c
        .query_one("SELECT current_setting('sqs_loader.queue_url')", &[])
        .unwrap()
        .get(0);
    send(&mut c, &url, &login_events(50, "after-upgrade", 50));
    let r = load(&mut c, &url);
    assert_eq!((r.received, r.loaded, r.rejected), (50, 50, 0));
    let total: i64 = c
        .query_one("SELECT count(*) FROM user_logins", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 149);
    let runs: i64 = c
        .query_one(
            "SELECT count(*) FROM sqs_loader.load_runs WHERE status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 2, "the 0.1.0 run and the new one");
}
