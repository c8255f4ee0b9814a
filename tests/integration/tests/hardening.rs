//! The second half of the outside review: the loader cannot be made to run other roles' code
//! as superuser; granted roles cannot use the server to reach loopback or read foreign replies;
//! secrets stored where every role reads them stop the extension; one row the table refuses
//! never stops its batch; what the parser accepts; the proxy is a superuser's setting.

use sqs_loader_it::*;
use std::time::Duration;

fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// Functions named like the built-ins a routine might call, each recording that it ran.
fn shadow_builtins(c: &mut postgres::Client, schema: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.hits(what text);
         GRANT INSERT ON {schema}.hits TO PUBLIC;
         CREATE FUNCTION {schema}.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS
           $$ INSERT INTO {schema}.hits VALUES ('clock_timestamp') RETURNING pg_catalog.now() $$;
         CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE sql AS
           $$ INSERT INTO {schema}.hits VALUES ('now') RETURNING pg_catalog.statement_timestamp() $$;
         CREATE FUNCTION {schema}.cardinality(text[]) RETURNS integer LANGUAGE sql AS
           $$ INSERT INTO {schema}.hits VALUES ('cardinality') RETURNING pg_catalog.cardinality($1) $$;
         CREATE FUNCTION {schema}.array_agg(text) RETURNS text[] LANGUAGE sql AS
           $$ INSERT INTO {schema}.hits VALUES ('array_agg') RETURNING ARRAY[$1] $$;
         CREATE FUNCTION {schema}.current_setting(text) RETURNS text LANGUAGE sql AS
           $$ INSERT INTO {schema}.hits VALUES ('current_setting') RETURNING pg_catalog.current_setting($1) $$;
         CREATE FUNCTION {schema}.make_interval(secs double precision) RETURNS interval LANGUAGE sql AS
           $$ INSERT INTO {schema}.hits VALUES ('make_interval') RETURNING pg_catalog.make_interval(secs => $1) $$;"
    ))
    .unwrap();
}

#[test]
fn load_user_logins_runs_no_other_roles_code_as_superuser() {
    let _g = shared();
    let db = TestDb::new("hijack");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-hijack");
    c.execute(
        &format!(
            "ALTER DATABASE {} SET sqs_loader.queue_url = '{url}'",
            db.name
        ),
        &[],
    )
    .unwrap();
    let owner = format!("dbowner_{}", random_suffix());
    c.batch_execute(&format!(
        "CREATE ROLE {owner} LOGIN;
         ALTER DATABASE {0} OWNER TO {owner};
         -- (a) the state after pg_upgrade from PostgreSQL <= 14: everyone may create in public
         GRANT CREATE ON SCHEMA public TO PUBLIC;",
        db.name
    ))
    .unwrap();
    // (a) An attacker with CREATE on public shadows built-ins there (more specific types win).
    let mut owner_c = connect_as(&db.name, &owner);
    shadow_builtins(&mut owner_c, "public");
    // (b) The database's owner puts a schema of its own first in the database's search_path.
    owner_c
        .batch_execute(&format!(
            "CREATE SCHEMA evil; ALTER DATABASE {} SET search_path = evil, pg_catalog, public;",
            db.name
        ))
        .unwrap();
    shadow_builtins(&mut owner_c, "evil");
    for search_path in ["evil, pg_catalog, public", "\"$user\", public"] {
        let mut su = db.client();
        su.batch_execute(&format!("SET search_path = {search_path}"))
            .unwrap();
        send(
            &mut su,
            &url,
            &login_events(30, &format!("hj-{}", search_path.len()), 30),
        );
        su.batch_execute("SET sqs_loader.batch_size = 7").unwrap();
        let r = su.query_one("CALL load_user_logins()", &[]).unwrap();
        assert_eq!(r.get::<_, i64>(1), 30, "{search_path}: loaded");
        // The health view and the run bookkeeping, which superusers and cron jobs read too.
        su.query("SELECT * FROM load_health", &[]).unwrap();
    }
    let hits: Vec<String> = c
        .query(
            "SELECT what FROM evil.hits UNION ALL SELECT what FROM public.hits",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(hits.is_empty(), "attacker code ran as superuser: {hits:?}");
    c.batch_execute(&format!(
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER DATABASE {} OWNER TO postgres; DROP SCHEMA evil CASCADE;
         DROP TABLE public.hits; DROP FUNCTION public.clock_timestamp(), public.now(), public.cardinality(text[]),
           public.array_agg(text), public.current_setting(text), public.make_interval(double precision);
         DROP ROLE {owner};",
        db.name
    ))
    .unwrap();
}

/// An HTTP server on 127.0.0.1 that answers every request with a 500 and an HTML page.
fn internal_admin_page() -> String {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            // The whole request first: answering before it is read resets the connection.
            if read_request(&mut std::io::BufReader::new(&s)).is_none() {
                continue;
            }
            let body = "<html><h1>Internal admin</h1><p>db password: hunter2</p></html>";
            let _ = write!(
                s,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_granted_role_reads_no_foreign_reply_and_cannot_redirect_requests() {
    let _g = shared();
    let db = TestDb::new("ssrf");
    let mut c = db.client();
    let role = format!("sqsuser_{}", random_suffix());
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT EXECUTE ON FUNCTION sqs_pull(text, integer, integer, integer), sqs_queue_attributes(text) TO {role};"
    ))
    .unwrap();
    // 127.0.0.1 is allowed by this cluster's configuration (the superuser's explicit choice).
    let admin = internal_admin_page();
    let url = format!("{admin}/000000000000/q");
    let mut r = connect_as(&db.name, &role);
    r.batch_execute("SET sqs_loader.max_retries = 0").unwrap();
    let e = r
        .query("SELECT * FROM sqs_pull($1, 1)", &[&url])
        .unwrap_err();
    let shown = format!("{e:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("Internal admin"),
        "{shown}"
    );
    assert!(shown.contains("not an SQS error document"), "{shown}");
    // A superuser sees the reply, to debug an endpoint.
    c.batch_execute("SET sqs_loader.max_retries = 0").unwrap();
    let e = c
        .query("SELECT * FROM sqs_pull($1, 1)", &[&url])
        .unwrap_err();
    assert!(format!("{e:?}").contains("Internal admin"));
    // The role cannot point requests elsewhere, nor widen the allow-list.
    for sql in [
        "SET sqs_loader.endpoint = 'http://169.254.169.254'",
        "SET sqs_loader.allowed_hosts = '*'",
    ] {
        assert_eq!(
            sqlstate(&r.batch_execute(sql).unwrap_err()),
            "42501",
            "{sql}"
        );
    }
    // Instance metadata is not in the allow-list: refused before any request.
    let e = r
        .query(
            "SELECT * FROM sqs_pull('http://169.254.169.254/000000000000/q', 1)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    drop(r);
    c.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

#[test]
fn settings_and_secrets_in_sessions_that_did_not_load_the_library() {
    let _g = shared();
    // Preloaded: SHOW works in a fresh session, before any function of the extension ran.
    let v: String = connect("postgres")
        .query_one("SHOW sqs_loader.batch_size", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "500");
    // Not preloaded: it does not, until the database preloads it for its sessions.
    let name = format!("it_bare_{}", random_suffix());
    connect_bare("postgres")
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let e = connect_bare(&name)
        .query_one("SHOW sqs_loader.batch_size", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704", "{e:?}");
    connect_bare("postgres")
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET session_preload_libraries = 'sqs_loader'"
        ))
        .unwrap();
    let v: String = connect_bare(&name)
        .query_one("SHOW sqs_loader.batch_size", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "500");
    connect_bare("postgres")
        .batch_execute(&format!(
            "ALTER DATABASE {name} RESET session_preload_libraries"
        ))
        .unwrap();

    // A secret stored with ALTER ROLE SET in a session that never loaded the library (the
    // check hook cannot refuse it there): the extension finds it and refuses to work.
    let role = format!("victim_{}", random_suffix());
    let mut fresh = connect_bare(&name);
    fresh
        .batch_execute(&format!(
            "CREATE ROLE {role}; ALTER ROLE {role} SET sqs_loader.aws_secret_access_key = 'STOREDSECRET1234'"
        ))
        .expect("stored: the library is not loaded in this session");
    let mut c = connect_bare(&name);
    c.batch_execute("CREATE EXTENSION sqs_loader").unwrap();
    let refused = |c: &mut postgres::Client| {
        let e = c
            .query(
                "SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q', 1)",
                &[],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        let db = e.as_db_error().unwrap();
        assert!(
            db.message().contains("pg_db_role_setting") && db.message().contains(&role),
            "{}",
            db.message()
        );
        assert!(!format!("{e:?}").contains("STOREDSECRET"));
    };
    refused(&mut c);
    // A proxy's password likewise; a proxy without one is no secret.
    fresh
        .batch_execute(&format!(
            "ALTER ROLE {role} RESET sqs_loader.aws_secret_access_key;
             ALTER ROLE {role} SET sqs_loader.proxy = 'http://ops:STOREDSECRET5678@127.0.0.1:3128'"
        ))
        .expect("stored: the library is not loaded in this session");
    refused(&mut c);
    fresh
        .batch_execute(&format!(
            "ALTER ROLE {role} SET sqs_loader.proxy = 'http://127.0.0.1:3128'"
        ))
        .unwrap();
    let e = c
        .query(
            "SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q', 1)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704", "{e:?}");
    fresh
        .batch_execute(&format!(
            "ALTER ROLE {role} RESET sqs_loader.proxy; DROP ROLE {role}"
        ))
        .unwrap();
    // Removed: the extension works again (here: the queue does not exist).
    let e = c
        .query(
            "SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q', 1)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704", "{e:?}");
    drop((c, fresh));
    connect_bare("postgres")
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn a_row_the_table_refuses_is_rejected_and_its_neighbours_load() {
    let _g = shared();
    let name = format!("it_poison_{}", random_suffix());
    TestDb::create(&name);
    let mut c = connect(&name);
    // The owners' table, narrower than the parser's limits, with a CHECK and a trigger.
    c.batch_execute(
        "CREATE TABLE user_logins(user_id varchar(128), device_type varchar(8), masked_ip varchar(256),
                                  masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date,
                                  CHECK (app_version < 4000000));
         CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.user_id LIKE 'poison-trigger%' THEN RAISE EXCEPTION 'no poison here'; END IF;
           IF NEW.user_id LIKE 'transient%' THEN RAISE EXCEPTION 'try later' USING ERRCODE = '55P03'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION refuse_poison();
         CREATE EXTENSION sqs_loader;",
    )
    .unwrap();
    let (_, public) = keypair();
    c.execute("SELECT set_rsa_public_key($1)", &[&public])
        .unwrap();
    c.batch_execute(&format!("ALTER DATABASE {name} SET sqs_loader.visibility_timeout = 3; SET sqs_loader.batch_size = 10"))
        .unwrap();
    let url = create_queue(&mut c, "it-poison");
    let ev = |uid: &str, device_type: &str, version: &str| {
        format!(
            r#"{{"user_id":"{uid}","app_version":"{version}","device_type":"{device_type}","ip":"10.0.0.1","device_id":"d-{uid}"}}"#
        )
    };
    let mut bodies = login_events(25, "ok", 25);
    bodies.push(ev("poison-width", "android-tablet", "1.0"));
    bodies.push(ev("poison-check", "ios", "4.0.0"));
    bodies.push(ev("poison-trigger", "ios", "1.0"));
    send(&mut c, &url, &bodies);
    let r = load(&mut c, &url);
    assert_eq!((r.received, r.loaded, r.rejected), (28, 25, 3), "{r:?}");
    let rejects: Vec<(String, String)> = c
        .query(
            "SELECT reason, left(detail, 5) FROM sqs_loader.rejected_messages ORDER BY detail",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rejects,
        vec![
            ("insert_failed".into(), "22001".into()),
            ("insert_failed".into(), "23514".into()),
            ("insert_failed".into(), "P0001".into()),
        ]
    );
    let outcomes: i64 = c
        .query_one(
            "SELECT count(*) FROM sqs_loader.processed_messages WHERE outcome = 'rejected'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(outcomes, 3);
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
    // An error that is not about one row fails the batch; nothing of it is lost.
    send(&mut c, &url, &[ev("transient-1", "ios", "1.0")]);
    let e = c
        .query_one("CALL load_user_logins($1)", &[&url])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55P03");
    c.batch_execute("DROP TRIGGER refuse_poison ON user_logins")
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the message to come back and load",
        || {
            load(&mut c, &url);
            count(
                &mut c,
                "SELECT count(*) FROM user_logins WHERE user_id = 'transient-1'",
            ) == 1
        },
    );
    drop(c);
    connect("postgres")
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn failed_deletes_are_recorded_for_what_they_are_and_rejects_come_back_cleanly() {
    let _g = shared();
    let db = TestDb::new("delfail");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-delfail");
    let mut bodies = login_events(20, "df", 20);
    bodies.push(r#"{"foo": "oops_wrong_msg_type", "bar": "delfail"}"#.into());
    send(&mut c, &url, &bodies);
    // Deletes refused (a missing sqs:DeleteMessage permission): rows are in, the run says so.
    let proxy = fault_proxy(&env().localstack, 0, Duration::from_secs(1));
    *proxy.refuse_action.lock().unwrap() = Some("DeleteMessageBatch".into());
    c.batch_execute(&format!("SET sqs_loader.endpoint = '{}'", proxy.url))
        .unwrap();
    let e = c
        .query_one("CALL load_user_logins($1)", &[&url])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let (status, loaded, rejected, error): (String, i64, i64, String) = {
        let r = c
            .query_one("SELECT status, loaded, rejected, error FROM sqs_loader.load_runs ORDER BY run_id DESC LIMIT 1", &[])
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        (status.as_str(), loaded, rejected),
        ("delete_failed", 20, 1),
        "{error}"
    );
    assert!(error.contains("AccessDenied"), "{error}");
    // The reject's id is pruned from the bookkeeping (as after the retention), then everything
    // comes back: the loaded ones are skipped, the reject is recorded again, not a key clash.
    c.batch_execute(
        "DELETE FROM sqs_loader.processed_messages WHERE outcome = 'rejected'; RESET sqs_loader.endpoint",
    )
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the messages to come back and be deleted",
        || {
            load(&mut c, &url);
            queue_depth(&mut c, &url) == (0, 0)
        },
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 20);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.rejected_messages"),
        1
    );
    let failed: i64 = count(
        &mut c,
        "SELECT count(*) FROM sqs_loader.load_runs WHERE status = 'failed'",
    );
    assert_eq!(failed, 0, "no run failed");
}

#[test]
fn every_spelling_of_an_address_gets_one_token() {
    let _g = shared();
    let db = TestDb::new("ipv4mapped");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-mapped");
    let bodies: Vec<String> = ["203.0.113.7", "::ffff:203.0.113.7", "::FFFF:cb00:7107"]
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            format!(r#"{{"user_id":"m-{i}","app_version":"1","ip":"{ip}","device_id":"d"}}"#)
        })
        .collect();
    send(&mut c, &url, &bodies);
    assert_eq!(load(&mut c, &url).loaded, 3);
    assert_eq!(
        count(&mut c, "SELECT count(DISTINCT masked_ip) FROM user_logins"),
        1
    );
}

#[test]
fn the_proxy_is_the_superusers_choice_and_its_password_stays_hidden() {
    let _g = shared();
    let db = TestDb::new("proxy");
    let mut c = db.client();
    let role = format!("sqsuser_{}", random_suffix());
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT EXECUTE ON FUNCTION sqs_pull(text, integer, integer, integer) TO {role};"
    ))
    .unwrap();
    // A role can neither route requests through a host of its choice nor read the setting.
    let mut r = connect_as(&db.name, &role);
    for sql in [
        "SET sqs_loader.proxy = 'http://127.0.0.1:3128'",
        "SHOW sqs_loader.proxy",
    ] {
        let e = r.batch_execute(sql).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
    }
    // Checked when set; the password is never quoted.
    for bad in [
        "socks5://ops:s3cret@127.0.0.1:1080",
        "http://ops:s3cret@127.0.0.1:port",
    ] {
        let e = c
            .batch_execute(&format!("SET sqs_loader.proxy = '{bad}'"))
            .unwrap_err();
        let shown = format!("{e:?}");
        assert_eq!(sqlstate(&e), "22023", "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    // A password, or a user name alone (a token), is not stored where every role reads it,
    // and the refused statement's log line does not show it.
    for (url, secret) in [
        ("http://ops:pw4refused@127.0.0.1:3128", "pw4refused"),
        ("http://token4refused@127.0.0.1:3128", "token4refused"),
    ] {
        let e = c
            .batch_execute(&format!("ALTER ROLE {role} SET sqs_loader.proxy = '{url}'"))
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        assert!(!format!("{e:?}").contains(secret));
    }
    // A superuser's SET is masked in pg_stat_activity and in the log, statements logged.
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.batch_execute("SET log_statement = 'all'").unwrap();
    c.batch_execute("SET sqs_loader.proxy = 'http://ops:pw4activity@127.0.0.1:3128'")
        .unwrap();
    let seen: String = connect(&db.name)
        .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .unwrap()
        .get(0);
    assert!(
        seen.contains("sqs_loader.proxy") && !seen.contains("pw4activity"),
        "{seen}"
    );
    c.batch_execute("RESET sqs_loader.proxy; RESET log_statement")
        .unwrap();
    let log = server_log();
    for secret in ["pw4refused", "token4refused", "pw4activity"] {
        assert!(!log.contains(secret), "{secret} in the server log");
    }
    // What log_statement wrote, masked to the same length.
    let masked = format!(
        "sqs_loader.proxy = 'http://{}@127.0.0.1:3128'",
        "*".repeat(15)
    );
    assert!(
        log.contains(&masked),
        "the SET was logged, masked: {:?}",
        log.lines()
            .filter(|l| l.contains("proxy"))
            .collect::<Vec<_>>()
    );
    // A proxy without a secret may be stored for a role; the role still cannot read it.
    c.batch_execute(&format!(
        "ALTER ROLE {role} SET sqs_loader.proxy = 'http://127.0.0.1:3128'"
    ))
    .unwrap();
    let mut r = connect_as(&db.name, &role);
    for sql in [
        "SHOW sqs_loader.proxy",
        "SELECT current_setting('sqs_loader.proxy')",
    ] {
        let e = r.batch_execute(sql).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
    }
    assert_eq!(
        count(
            &mut r,
            "SELECT count(*) FROM pg_settings WHERE name = 'sqs_loader.proxy'"
        ),
        0
    );
    c.batch_execute(&format!("ALTER ROLE {role} RESET sqs_loader.proxy"))
        .unwrap();
    // It routes the requests: through a proxy nobody listens on, a pull fails; without, it works.
    let url = create_queue(&mut c, "proxy");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    c.batch_execute(&format!(
        "SET sqs_loader.max_retries = 0; SET sqs_loader.proxy = 'http://ops:s3cret@127.0.0.1:{closed}'"
    ))
    .unwrap();
    let e = c
        .query("SELECT * FROM sqs_pull($1, 1)", &[&url])
        .unwrap_err();
    let shown = format!("{e:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("ReceiveMessage"), "{shown}");
    c.batch_execute("RESET sqs_loader.proxy").unwrap();
    assert!(c
        .query("SELECT * FROM sqs_pull($1, 1)", &[&url])
        .unwrap()
        .is_empty());
    drop(r);
    c.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}
