//! The privacy promise at its edges: a private key passed to the server reaches neither the log
//! nor pg_stat_activity, whatever goes wrong around it; erasure wins every interleaving; lookups
//! leave a trace; recovery works offline and under REPEATABLE READ.

use sqs_loader_it::*;
use std::time::Duration;

/// The base64 lines of a PEM key: none of them may appear anywhere they should not.
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

fn assert_no_key_material(where_: &str, text: &str, lines: &[String]) {
    for l in lines {
        assert!(
            !text.contains(l.as_str()) && !text.contains(&l[..32.min(l.len())]),
            "key material in {where_}: {l}"
        );
    }
}

/// A login role of its own for this test (trust authentication on 127.0.0.1).
fn login_role(prefix: &str) -> String {
    let name = format!("{prefix}_{}", random_suffix());
    connect("postgres")
        .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
        .unwrap();
    name
}

fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[test]
fn a_private_key_reaches_neither_the_log_nor_pg_stat_activity() {
    let _g = shared();
    let db = TestDb::new("keyleak");
    let mut c = db.client();
    let token: String = c
        .query_one(
            "SELECT (sqs_loader.mask_values(ARRAY['203.0.113.50']))[1]",
            &[],
        )
        .unwrap()
        .get(0);
    let key = &db.private_key;
    let lines = key_lines(key);
    let auditor = login_role("auditor");
    let stranger = login_role("stranger");
    let watcher = login_role("watcher");
    c.batch_execute(&format!(
        "GRANT sqs_loader_unmask TO {auditor}; GRANT SELECT ON user_logins TO {auditor}, {stranger};
         GRANT pg_read_all_stats TO {watcher};
         ALTER ROLE {auditor} SET log_min_duration_statement = 0;
         ALTER ROLE {auditor} SET log_parameter_max_length_on_error = -1;
         ALTER ROLE {stranger} SET log_statement = 'all';"
    ))
    .unwrap();
    let literal = key.replace('\'', "''");

    // 1. A role that may not unmask: refused (42501), with the key in the statement text.
    let mut s = connect_as(&db.name, &stranger);
    let e = s
        .batch_execute(&format!("SELECT unmask_pii('{token}', '{literal}')"))
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    // ... and with a table it may read, so that the statement is refused in the middle of a scan.
    let e = s
        .batch_execute(&format!("SELECT unmask_pii(masked_ip, '{literal}') FROM user_logins UNION ALL SELECT unmask_pii('{token}', '{literal}')"))
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");

    // 2. A member, whose statement fails after the function returned the value.
    let mut a = connect_as(&db.name, &auditor);
    let e = a
        .batch_execute(&format!(
            "SELECT unmask_pii('{token}', '{literal}')::inet::text::int"
        ))
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02", "{e:?}");
    // 3. Bind parameters with log_min_duration_statement = 0 (the duration line lists them), and
    //    an error after the call (the error lists them too).
    let v: String = a
        .query_one("SELECT unmask_pii($1, $2)", &[&token, key])
        .unwrap()
        .get(0);
    assert_eq!(v, "203.0.113.50");
    let e = a
        .query_one("SELECT unmask_pii($1, $2)::int", &[&token, key])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02", "{e:?}");

    // 4. pg_stat_activity, to a member of pg_read_all_stats: while the statement runs (after its
    //    parse analysis, which is where it is masked — docs/security.md says what the moment
    //    before can show), and once the session is idle.
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let (name, t, k) = (db.name.clone(), token.clone(), literal.clone());
    let auditor2 = auditor.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let slow = std::thread::spawn(move || {
        let mut a = connect_as(&name, &auditor2);
        let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        tx.send(pid).unwrap();
        // The marker comes first: pg_stat_activity keeps only the first 1,023 bytes. The sleep
        // runs first (FROM), then the call.
        let sql = format!("SELECT /* slow-unmask */ unmask_pii('{t}', '{k}') FROM pg_sleep(1.5)");
        (pid, a.batch_execute(&sql))
    });
    let slow_pid = rx.recv().unwrap();
    let mut w = connect_as(&db.name, &watcher);
    let activity_of = |w: &mut postgres::Client| -> Option<String> {
        w.query_opt(
            "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%slow-unmask%'",
            &[&slow_pid],
        )
        .unwrap()
        .map(|r| r.get(0))
    };
    wait_until(Duration::from_secs(10), "the statement to start", || {
        activity_of(&mut w).is_some()
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = Vec::new();
    while let Some(q) = activity_of(&mut w) {
        seen.push((slow_pid, q));
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, r) = slow.join().unwrap();
    r.unwrap();
    assert!(seen.len() > 10, "the watcher saw the running statement");
    let activity: String = seen
        .iter()
        .map(|(_, q)| q.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert_no_key_material("pg_stat_activity while running", &activity, &lines);
    // An idle session keeps showing its last statement: it shows the masked one.
    let idle: String = w
        .query_one(
            "SELECT string_agg(query, E'\\n') FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap()
        .get(0);
    assert_no_key_material("pg_stat_activity of an idle session", &idle, &lines);

    // The server log: nothing of the key, and yet the statements were logged.
    let log = server_log();
    assert_no_key_material("the server log", &log, &lines);
    assert!(log.contains("permission denied: unmask_pii() is for a member of sqs_loader_unmask"));
    assert!(
        log.contains("-----BEGIN PRIVATE KEY-----"),
        "the statements are logged, masked"
    );
}

#[test]
fn set_token_key_failing_does_not_log_the_key() {
    let _g = shared();
    let db = TestDb::new("tokenkey");
    let mut c = db.client();
    c.batch_execute("SELECT sqs_loader.mask_values(ARRAY['1.2.3.4'])")
        .unwrap();
    let key: String = c
        .query_one("SELECT encode(sqs_loader.new_token_key(), 'hex')", &[])
        .unwrap()
        .get(0);
    // A used token key cannot be replaced: refused, as a superuser, with the key as a literal.
    let e = c
        .batch_execute(&format!("SELECT set_token_key('\\x{key}'::bytea)"))
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e:?}");
    // ... and by a role that is not a superuser, with log_statement = 'all'.
    let stranger = login_role("stranger");
    c.batch_execute(&format!("ALTER ROLE {stranger} SET log_statement = 'all'"))
        .unwrap();
    let e = connect_as(&db.name, &stranger)
        .batch_execute(&format!("SELECT set_token_key(decode('{key}', 'hex'))"))
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let log = server_log();
    assert!(
        !log.to_lowercase().contains(&key),
        "the token key is in the log"
    );
}

#[test]
fn erasure_wins_every_interleaving() {
    let _g = shared();
    let db = TestDb::new("erasure");
    let unmask = |c: &mut postgres::Client, t: &str| -> Option<String> {
        c.query_one("SELECT unmask_pii($1, $2)", &[&t, &db.private_key])
            .unwrap()
            .get(0)
    };
    let token_of = |c: &mut postgres::Client, v: &str| -> String {
        c.query_one("SELECT mask_pii($1)", &[&v]).unwrap().get(0)
    };
    let mut c = db.client();

    // (a) A masks (uncommitted), B erases, A commits: B waits for A and erases what A stored.
    let mut a = db.client();
    a.batch_execute("BEGIN; SELECT sqs_loader.mask_values(ARRAY['10.9.0.1'])")
        .unwrap();
    let t = token_of(&mut c, "10.9.0.1");
    let (name, tt) = (db.name.clone(), t.clone());
    let b = std::thread::spawn(move || -> bool {
        connect(&name)
            .query_one("SELECT forget_pii($1)", &[&tt])
            .unwrap()
            .get(0)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !b.is_finished(),
        "forget_pii waits for the transaction that stores the value"
    );
    a.batch_execute("COMMIT").unwrap();
    assert!(b.join().unwrap(), "it erased the value that committed");
    assert_eq!(unmask(&mut c, &t), None);

    // (b) B erases (uncommitted), A masks the same value, B commits: A finds the tombstone.
    let t = token_of(&mut c, "10.9.0.2");
    c.batch_execute("SELECT sqs_loader.mask_values(ARRAY['10.9.0.2'])")
        .unwrap();
    let mut b = db.client();
    b.batch_execute(&format!("BEGIN; SELECT forget_pii('{t}')"))
        .unwrap();
    let name = db.name.clone();
    let a = std::thread::spawn(move || {
        connect(&name)
            .batch_execute("SELECT sqs_loader.mask_values(ARRAY['10.9.0.2'])")
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    b.batch_execute("COMMIT").unwrap();
    a.join().unwrap();
    assert_eq!(unmask(&mut c, &t), None);
    // Erased before it was ever stored: still never stored.
    let t = token_of(&mut c, "10.9.0.3");
    assert!(!c
        .query_one("SELECT forget_pii($1)", &[&t])
        .unwrap()
        .get::<_, bool>(0));
    c.batch_execute("SELECT sqs_loader.mask_values(ARRAY['10.9.0.3'])")
        .unwrap();
    assert_eq!(unmask(&mut c, &t), None);

    // (c) Concurrent loader runs re-masking the value while it is erased, again and again.
    let url = create_queue(&mut c, "it-erasure");
    let bodies: Vec<String> = (0..400)
        .map(|i| {
            format!(
                r#"{{"user_id":"e-{i}","app_version":"1.0","ip":"10.9.9.9","device_id":"d-{i}"}}"#
            )
        })
        .collect();
    send(&mut c, &url, &bodies);
    let t = token_of(&mut c, "10.9.9.9");
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (name, url) = (db.name.clone(), url.clone());
            std::thread::spawn(move || {
                let mut c = connect(&name);
                c.batch_execute("SET sqs_loader.batch_size = 20").unwrap();
                load(&mut c, &url)
            })
        })
        .collect();
    let mut erasures = 0;
    while !loaders.iter().all(|l| l.is_finished()) {
        c.query_one("SELECT forget_pii($1)", &[&t]).unwrap();
        erasures += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let loaded: i64 = loaders.into_iter().map(|l| l.join().unwrap().loaded).sum();
    assert_eq!(loaded, 400);
    assert!(erasures > 0);
    assert_eq!(unmask(&mut c, &t), None, "erased, whatever the loaders did");
    let sealed: i64 = c
        .query_one(
            "SELECT count(*) FROM sqs_loader.vault WHERE token = $1 AND sealed IS NOT NULL",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(sealed, 0);
}

/// Two loaders storing the same new token at once: the second one's plain INSERT waits for the
/// first; when that commits, the INSERT fails and is undone, and ON CONFLICT stores the rest
/// (never over the first's row); when it aborts, the plain INSERT stores its own.
#[test]
fn vault_store_waits_for_a_concurrent_store_of_the_same_token() {
    let _g = shared();
    let db = TestDb::new("vaultrace");
    let mut c = db.client();
    let sealed_of = |c: &mut postgres::Client, t: &str| -> Option<Vec<u8>> {
        c.query_opt(
            "SELECT sealed FROM sqs_loader.vault WHERE token = $1",
            &[&t],
        )
        .unwrap()
        .and_then(|r| r.get(0))
    };
    for (end, plain, expected_x) in [("COMMIT", false, vec![1u8]), ("ROLLBACK", true, vec![2u8])] {
        let (x, y) = (format!("v1.race-x-{end}"), format!("v1.race-y-{end}"));
        let mut a = db.client();
        a.batch_execute(&format!(
            "BEGIN; SELECT sqs_loader.vault_store(ARRAY[sqs_loader.token_id('{x}')], ARRAY['{x}'], 1, ARRAY['\\x01'::bytea], true)"
        ))
        .unwrap();
        let (name, bx, by) = (db.name.clone(), x.clone(), y.clone());
        let b = std::thread::spawn(move || -> bool {
            connect(&name)
                .query_one(
                    "SELECT sqs_loader.vault_store(ARRAY[sqs_loader.token_id($1), sqs_loader.token_id($2)], \
                     ARRAY[$1, $2], 1, ARRAY['\\x02'::bytea, '\\x03'], true)",
                    &[&bx, &by],
                )
                .unwrap()
                .get(0)
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!b.is_finished(), "the second store waits for the first");
        a.batch_execute(end).unwrap();
        assert_eq!(b.join().unwrap(), plain, "plain INSERT after {end}");
        assert_eq!(sealed_of(&mut c, &x), Some(expected_x), "after {end}");
        assert_eq!(sealed_of(&mut c, &y), Some(vec![3u8]), "after {end}");
    }
}

#[test]
fn unmasking_works_under_repeatable_read_with_a_truthful_audit() {
    let _g = shared();
    let db = TestDb::new("rr");
    let mut c = db.client();
    let t: String = c
        .query_one(
            "SELECT (sqs_loader.mask_values(ARRAY['192.0.2.77']))[1]",
            &[],
        )
        .unwrap()
        .get(0);
    for level in ["REPEATABLE READ", "SERIALIZABLE"] {
        let mut tx = c.build_transaction();
        tx = match level {
            "SERIALIZABLE" => tx.isolation_level(postgres::IsolationLevel::Serializable),
            _ => tx.isolation_level(postgres::IsolationLevel::RepeatableRead),
        };
        let mut tx = tx.start().unwrap();
        tx.query_one("SELECT 1", &[]).unwrap(); // the snapshot is taken
        let v: String = tx
            .query_one("SELECT unmask_pii($1, $2)", &[&t, &db.private_key])
            .unwrap()
            .get(0);
        assert_eq!(v, "192.0.2.77", "{level}");
        tx.rollback().unwrap();
    }
    let ok: i64 = c
        .query_one(
            "SELECT count(*) FROM sqs_loader.unmask_audit WHERE token = $1 AND outcome = 'ok'",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        ok, 2,
        "one truthful audit row per call, kept after ROLLBACK"
    );
}

#[test]
fn guesses_through_lookups_leave_a_trace_and_store_nothing() {
    let _g = shared();
    let db = TestDb::new("oracle");
    let mut c = db.client();
    let analyst = login_role("analyst");
    let investigator = login_role("investigator");
    c.batch_execute(&format!(
        "GRANT SELECT ON user_logins TO {analyst};
         GRANT SELECT ON user_logins TO {investigator};
         GRANT EXECUTE ON FUNCTION mask_pii(text), mask_pii_batch(text[]) TO {investigator};"
    ))
    .unwrap();
    // The analyst's grant (SELECT on user_logins) gives no way to test a guess.
    let mut an = connect_as(&db.name, &analyst);
    for sql in [
        "SELECT mask_pii('10.0.0.1')",
        "SELECT * FROM mask_pii_batch(ARRAY['10.0.0.1'])",
        "SELECT sqs_send('http://localhost:4566/000000000000/q', ARRAY['x'])",
        "SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q')",
    ] {
        assert_eq!(
            sqlstate(&an.batch_execute(sql).unwrap_err()),
            "42501",
            "{sql}"
        );
    }
    // The investigator's guesses: nothing stored, audited even inside a rolled-back transaction.
    let vault_before: i64 = c
        .query_one("SELECT count(*) FROM sqs_loader.vault", &[])
        .unwrap()
        .get(0);
    let mut inv = connect_as(&db.name, &investigator);
    inv.batch_execute(
        "BEGIN;
         SELECT count(*) FROM mask_pii_batch(ARRAY(SELECT '10.1.' || (i / 256) || '.' || (i % 256) FROM generate_series(0, 4095) i));
         SELECT mask_pii('10.2.0.1');
         ROLLBACK;",
    )
    .unwrap();
    let vault_after: i64 = c
        .query_one("SELECT count(*) FROM sqs_loader.vault", &[])
        .unwrap()
        .get(0);
    assert_eq!(vault_after, vault_before, "lookups store nothing");
    let (calls, values): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), coalesce(sum(value_count), 0) FROM sqs_loader.unmask_audit
                  WHERE action = 'mask' AND role_name = $1",
                &[&investigator],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (calls, values),
        (2, 4097),
        "both calls audited, with how many values"
    );
    // The security officer's view names who can do what.
    let rows: Vec<(String, bool, bool)> = c
        .query(
            "SELECT role, can_look_up_tokens, can_unmask FROM sqs_loader.pii_access WHERE role IN ($1, $2)",
            &[&analyst, &investigator],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![(investigator.clone(), true, false)],
        "the analyst is not listed"
    );
}

#[test]
fn offline_recovery_keeps_the_key_on_the_client() {
    let _g = shared();
    let db = TestDb::new("offline");
    let mut c = db.client();
    let values = ["198.51.100.10", "2001:db8::10", "593-47-5928"];
    let tokens: Vec<String> = c
        .query_one("SELECT sqs_loader.mask_values($1)", &[&values.to_vec()])
        .unwrap()
        .get::<_, Vec<Option<String>>>(0)
        .into_iter()
        .flatten()
        .collect();
    c.query_one("SELECT forget_pii($1)", &[&tokens[2]]).unwrap();
    let auditor = login_role("auditor");
    c.batch_execute(&format!("GRANT sqs_loader_unmask TO {auditor}"))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("it-offline-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("private.pem");
    std::fs::write(&key, &db.private_key).unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user={auditor} dbname={}",
        env().pgport,
        db.name
    );
    let tool = |args: &[&str], stdin: Option<&str>| -> (i32, String, String) {
        use std::io::Write;
        let mut cmd =
            std::process::Command::new(format!("{}/target/debug/sqs_loader_unmask", env().root));
        cmd.args(["--db", &conninfo]).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("target/debug/sqs_loader_unmask (built by make test)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let key_s = key.to_string_lossy().to_string();
    let (code, out, err) = tool(
        &[
            "--key", &key_s, &tokens[0], &tokens[1], &tokens[2], "v1.nope", &tokens[0],
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "token,value,outcome\n{},198.51.100.10,ok\n{},2001:db8::10,ok\n{},,erased\nv1.nope,,unknown_token\n",
            tokens[0], tokens[1], tokens[2]
        )
    );
    // Tokens on stdin, and from a CSV column.
    let (code, out, _) = tool(
        &["--key", &key_s, "-"],
        Some(&format!("{}\n\n{}\n", tokens[1], tokens[0])),
    );
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3);
    let csv = dir.join("rows.csv");
    std::fs::write(&csv, format!("user_id,masked_ip\nu1,{}\n", tokens[0])).unwrap();
    let (_, out, _) = tool(
        &[
            "--key",
            &key_s,
            "--csv",
            &csv.to_string_lossy(),
            "--column",
            "masked_ip",
        ],
        None,
    );
    assert!(
        out.ends_with(&format!("{},198.51.100.10,ok\n", tokens[0])),
        "{out}"
    );
    // An encrypted key with its passphrase from a file; a wrong key.
    let enc = dir.join("enc.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:tr0ub4dor&3",
            "-in",
            &key_s,
            "-out",
        ])
        .arg(&enc)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let pass = dir.join("pass");
    std::fs::write(&pass, "tr0ub4dor&3\n").unwrap();
    let (code, out, err) = tool(
        &[
            "--key",
            &enc.to_string_lossy(),
            "--passphrase-file",
            &pass.to_string_lossy(),
            &tokens[0],
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(",198.51.100.10,ok"), "{out}");
    let other = dir.join("other.pem");
    std::fs::write(&other, keypair().0).unwrap();
    let (_, out, _) = tool(&["--key", &other.to_string_lossy(), &tokens[0]], None);
    assert!(out.ends_with(",,wrong_key\n"), "{out}");
    // A role that may not unmask gets nothing.
    let stranger = login_role("stranger");
    let e = connect_as(&db.name, &stranger)
        .query("SELECT * FROM sealed_values(ARRAY['x'])", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Every token handed out is audited as exported, by the auditor.
    let exported: i64 = c
        .query_one(
            "SELECT count(*) FROM sqs_loader.unmask_audit WHERE action = 'export' AND role_name = $1",
            &[&auditor],
        )
        .unwrap()
        .get(0);
    assert!(exported >= 8, "{exported}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_preloading_unmask_pii_refuses_and_offline_recovery_still_works() {
    let _g = shared();
    let name = format!("it_bare_{}", random_suffix());
    let mut admin = connect_bare("postgres");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let mut c = connect_bare(&name);
    let (private, public) = keypair();
    c.batch_execute("CREATE EXTENSION sqs_loader").unwrap();
    c.execute("SELECT set_rsa_public_key($1)", &[&public])
        .unwrap();
    let t: String = c
        .query_one(
            "SELECT (sqs_loader.mask_values(ARRAY['192.0.2.99']))[1]",
            &[],
        )
        .unwrap()
        .get(0);
    // Not every session would mask the key in the log: refused before anything is decrypted.
    let e = c
        .query_one("SELECT unmask_pii($1, $2)", &[&t, &private])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e:?}");
    let db = e.as_db_error().unwrap();
    assert!(
        db.message().contains("shared_preload_libraries"),
        "{}",
        db.message()
    );
    assert!(db.hint().unwrap_or_default().contains("sqs_loader_unmask"));
    // The export for offline recovery takes no key, so it works anywhere.
    let outcome: String = c
        .query_one("SELECT outcome FROM sealed_values(ARRAY[$1::text])", &[&t])
        .unwrap()
        .get(0);
    assert_eq!(outcome, "exported");
    drop(c);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

/// The role recipe of docs/security.md, run as written (with this test's role names): each role
/// gets exactly the PII capabilities the recipe's table says, and no more.
#[test]
fn the_documented_role_recipe_gives_what_it_says() {
    let _g = shared();
    let db = TestDb::new("recipe");
    let mut c = db.client();
    let doc = std::fs::read_to_string(format!("{}/docs/security.md", env().root)).unwrap();
    let recipe = doc
        .split("```sql")
        .find(|b| b.contains("GRANT sqs_loader_unmask TO auditor"))
        .and_then(|b| b.split("```").next())
        .expect("the role recipe in docs/security.md");
    let suffix = random_suffix();
    let roles = [
        "analyst",
        "auditor",
        "privacy_officer",
        "sqs_operator",
        "security_officer",
    ];
    let mut sql = recipe.to_string();
    for r in roles {
        c.batch_execute(&format!("CREATE ROLE {r}_{suffix}"))
            .unwrap();
        sql = sql.replace(&format!(" {r};"), &format!(" {r}_{suffix};"));
    }
    c.batch_execute(&sql).unwrap();
    let caps: Vec<(String, bool, bool, bool, bool, bool)> = c
        .query(
            "SELECT role, can_unmask, can_read_raw_bodies, can_look_up_tokens, can_send_messages, can_erase
               FROM sqs_loader.pii_access WHERE role LIKE '%\\_' || $1 ORDER BY role",
            &[&suffix],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        caps,
        vec![
            (
                format!("auditor_{suffix}"),
                true,
                false,
                false,
                false,
                false
            ),
            (
                format!("privacy_officer_{suffix}"),
                false,
                false,
                true,
                false,
                true
            ),
        ],
        "analyst, operator and security officer can neither see nor infer PII"
    );
    for r in roles {
        c.batch_execute(&format!(
            "DROP OWNED BY {r}_{suffix}; DROP ROLE {r}_{suffix}"
        ))
        .unwrap();
    }
}

/// A backend skips storing values it knows are in the vault (sqs_loader.known_tokens): it must
/// never skip one whose row is not there — stored by a transaction or savepoint that rolled back,
/// or in a vault that was emptied since.
#[test]
fn a_value_known_to_the_backend_is_stored_again_whenever_its_row_is_gone() {
    let _g = shared();
    let db = TestDb::new("known");
    let mut c = db.client();
    let stored = |c: &mut postgres::Client, v: &str| -> bool {
        c.query_one(
            "SELECT EXISTS (SELECT 1 FROM sqs_loader.vault WHERE token = mask_pii($1) AND sealed IS NOT NULL)",
            &[&v],
        )
        .unwrap()
        .get(0)
    };
    let mask = |c: &mut postgres::Client, v: &str| {
        c.execute("SELECT sqs_loader.mask_values(ARRAY[$1])", &[&v])
            .unwrap();
    };
    // A transaction that rolls back.
    c.batch_execute("BEGIN").unwrap();
    mask(&mut c, "10.8.0.1");
    assert!(stored(&mut c, "10.8.0.1"));
    c.batch_execute("ROLLBACK").unwrap();
    assert!(!stored(&mut c, "10.8.0.1"));
    mask(&mut c, "10.8.0.1");
    assert!(stored(&mut c, "10.8.0.1"), "stored again after a rollback");
    // A savepoint that rolls back, inside a transaction that commits (a failed batch of a run).
    c.batch_execute("BEGIN; SAVEPOINT batch").unwrap();
    mask(&mut c, "10.8.0.2");
    c.batch_execute("ROLLBACK TO SAVEPOINT batch; COMMIT")
        .unwrap();
    assert!(!stored(&mut c, "10.8.0.2"));
    mask(&mut c, "10.8.0.2");
    assert!(stored(&mut c, "10.8.0.2"), "stored again after ROLLBACK TO");
    // A savepoint released into a transaction that rolls back.
    c.batch_execute("BEGIN; SAVEPOINT s").unwrap();
    mask(&mut c, "10.8.0.3");
    c.batch_execute("RELEASE SAVEPOINT s; ROLLBACK").unwrap();
    mask(&mut c, "10.8.0.3");
    assert!(stored(&mut c, "10.8.0.3"));
    // A vault emptied by another session.
    db.client()
        .batch_execute("TRUNCATE sqs_loader.vault")
        .unwrap();
    mask(&mut c, "10.8.0.1");
    assert!(stored(&mut c, "10.8.0.1"), "stored again after TRUNCATE");
    // And a value it knows is not stored twice (ON CONFLICT would not either), with its token
    // unchanged: the skip is invisible but for the time.
    let before: String = c
        .query_one("SELECT (sqs_loader.mask_values(ARRAY['10.8.0.1']))[1]", &[])
        .unwrap()
        .get(0);
    let after: String = c
        .query_one("SELECT mask_pii('10.8.0.1')", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM sqs_loader.vault", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}
