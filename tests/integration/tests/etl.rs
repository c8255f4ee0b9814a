//! load_user_logins(): the procedure COMMITs per batch, so it is tested from client connections
//! against the real cluster and LocalStack.

use serde_json::Value;
use sqs_loader_it::*;
use std::time::Duration;

fn today_utc(c: &mut postgres::Client) -> String {
    c.query_one("SELECT ((now() AT TIME ZONE 'UTC')::date)::text", &[])
        .unwrap()
        .get(0)
}

#[test]
fn the_100_sample_messages_load_exactly() {
    let _g = shared();
    let db = TestDb::new("sample");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-sample");
    let before = today_utc(&mut c);
    send(&mut c, &url, &sample_messages());
    let r = load(&mut c, &url);
    let after = today_utc(&mut c);
    assert_eq!(
        r,
        RunCounts {
            received: 100,
            loaded: 99,
            rejected: 1,
            skipped: 0
        }
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 99);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM user_logins WHERE locale IS NULL"
        ),
        29
    );
    assert_eq!(queue_depth(&mut c, &url), (0, 0), "queue empty afterwards");
    let rej = c
        .query_one(
            "SELECT reason, body, sent_at IS NOT NULL FROM sqs_loader.rejected_messages",
            &[],
        )
        .unwrap();
    assert_eq!(rej.get::<_, String>(0), "missing_user_id");
    assert_eq!(
        rej.get::<_, String>(1),
        r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#
    );
    assert!(rej.get::<_, bool>(2));
    // app_version as specified: the first sample message is "2.3.0", device 593-47-5928, ip 199.172.111.135.
    let row = c
        .query_one(
            "SELECT app_version, app_version_text(app_version), create_date::text, masked_ip, masked_device_id
               FROM user_logins WHERE user_id = '424cdd21-063a-43a7-b91b-7ca1a833afae'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2_003_000);
    assert_eq!(row.get::<_, String>(1), "2.3.0");
    let create_date: String = row.get(2);
    assert!(
        create_date == before || create_date == after,
        "create_date {create_date} is the UTC send date"
    );
    let masked_ip: String = row.get(3);
    assert!(masked_ip.starts_with("v1.") && masked_ip.len() == 46);
    let ip: String = c
        .query_one("SELECT unmask_pii($1, $2)", &[&masked_ip, &db.private_key])
        .unwrap()
        .get(0);
    assert_eq!(ip, "199.172.111.135");
    let dev: String = c
        .query_one(
            "SELECT unmask_pii($1, $2)",
            &[&row.get::<_, String>(4), &db.private_key],
        )
        .unwrap()
        .get(0);
    assert_eq!(dev, "593-47-5928");
    // No two sample versions collide unless they are the same version spelled differently.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT app_version) FROM user_logins"
        ),
        94
    );
    // The run is recorded.
    let run = c
        .query_one("SELECT status, received, loaded, rejected, deleted, ended_at IS NOT NULL FROM sqs_loader.load_runs", &[])
        .unwrap();
    assert_eq!(run.get::<_, String>(0), "succeeded");
    assert_eq!(
        (
            run.get::<_, i64>(1),
            run.get::<_, i64>(2),
            run.get::<_, i64>(3),
            run.get::<_, i64>(4)
        ),
        (100, 99, 1, 100)
    );
    assert!(run.get::<_, bool>(5));
    // A second run finds nothing.
    assert_eq!(
        load(&mut c, &url),
        RunCounts {
            received: 0,
            loaded: 0,
            rejected: 0,
            skipped: 0
        }
    );
}

#[test]
fn group_by_masked_ip_finds_a_duplicate() {
    let _g = shared();
    let db = TestDb::new("dup");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-dup");
    let mut bodies = sample_messages();
    bodies.push(
        r#"{"user_id":"dup-1","app_version":"1.0","device_type":"ios","ip":"199.172.111.135","locale":"RU","device_id":"000-00-0001"}"#
            .into(),
    );
    send(&mut c, &url, &bodies);
    load(&mut c, &url);
    let rows = c
        .query(
            "SELECT masked_ip, count(*) FROM user_logins GROUP BY masked_ip HAVING count(*) > 1",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(1), 2);
    let ip: String = c
        .query_one(
            "SELECT unmask_pii($1, $2)",
            &[&rows[0].get::<_, String>(0), &db.private_key],
        )
        .unwrap()
        .get(0);
    assert_eq!(ip, "199.172.111.135");
    // One vault entry per distinct value: 99 distinct IPs + 100 distinct device ids.
    assert_eq!(count(&mut c, "SELECT count(*) FROM sqs_loader.vault"), 199);
}

#[test]
fn committed_but_undeleted_messages_are_skipped_then_deleted() {
    let _g = shared();
    let db = TestDb::new("redeliver");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-redeliver");
    send(&mut c, &url, &login_events(30, "re", 30));
    // A loader that committed its rows and died before deleting: load the batch, commit, no delete.
    let mut t = c.transaction().unwrap();
    let n: i64 = t
        .query_one(
            "WITH p AS (SELECT * FROM sqs_pull($1, 30, 2))
             SELECT (sqs_loader.load_batch(NULL, $1, array_agg(message_id), array_agg(body), array_agg(sent_at))).loaded::bigint FROM p",
            &[&url],
        )
        .unwrap()
        .get(0);
    t.commit().unwrap();
    assert_eq!(n, 30);
    // After the visibility timeout the messages come back: recognised, skipped, deleted.
    std::thread::sleep(Duration::from_secs(3));
    let r = load(&mut c, &url);
    assert_eq!(
        r,
        RunCounts {
            received: 30,
            loaded: 0,
            rejected: 0,
            skipped: 30
        }
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 30);
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
}

#[test]
fn a_run_killed_mid_batch_loses_nothing() {
    let _g = shared();
    let db = TestDb::new("abort");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-abort");
    send(&mut c, &url, &login_events(2000, "ab", 2000));
    let mut watcher = db.client();
    let dbname = db.name.clone();
    let runner = std::thread::spawn(move || {
        let mut c = connect(&dbname);
        c.batch_execute("SET sqs_loader.batch_size = 20").unwrap();
        c.query_one("CALL load_user_logins($1)", &[&url])
            .map(|_| ())
    });
    wait_until(Duration::from_secs(30), "the first committed batch", || {
        count(&mut watcher, "SELECT count(*) FROM user_logins") > 0
    });
    watcher
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'CALL load_user_logins%'",
            &[],
        )
        .unwrap();
    let first = runner.join().unwrap();
    let partial = count(&mut watcher, "SELECT count(*) FROM user_logins");
    assert!(first.is_err(), "the run was terminated");
    assert!(partial < 2000, "terminated before the end ({partial} rows)");
    // The aborted run shows as aborted; a new run (after the visibility timeout) completes the load.
    let status: String = watcher
        .query_one("SELECT last_runs->0->>'status' FROM load_health", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "aborted");
    let url: String = watcher
        .query_one("SELECT queue_url FROM sqs_loader.load_runs", &[])
        .unwrap()
        .get(0);
    wait_until(Duration::from_secs(30), "every message loaded", || {
        load(&mut watcher, &url);
        count(&mut watcher, "SELECT count(*) FROM user_logins") >= 2000
    });
    assert_eq!(
        count(&mut watcher, "SELECT count(*) FROM user_logins"),
        2000
    );
    assert_eq!(
        count(
            &mut watcher,
            "SELECT count(DISTINCT user_id) FROM user_logins"
        ),
        2000
    );
    assert_eq!(queue_depth(&mut watcher, &url), (0, 0));
}

#[test]
fn four_concurrent_runs_on_2000_messages() {
    let _g = shared();
    let db = TestDb::new("conc");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-conc");
    // 500 distinct IPs: concurrent runs mask the same new values at the same time.
    send(&mut c, &url, &login_events(2000, "cc", 500));
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (dbname, url) = (db.name.clone(), url.clone());
            std::thread::spawn(move || {
                let mut c = connect(&dbname);
                c.batch_execute("SET sqs_loader.batch_size = 100").unwrap();
                load(&mut c, &url)
            })
        })
        .collect();
    let counts: Vec<RunCounts> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    let loaded: i64 = counts.iter().map(|r| r.loaded).sum();
    assert!(
        counts.iter().filter(|r| r.received > 0).count() >= 2,
        "runs overlapped: {counts:?}"
    );
    assert_eq!(loaded, 2000, "{counts:?}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 2000);
    assert_eq!(
        count(&mut c, "SELECT count(DISTINCT user_id) FROM user_logins"),
        2000
    );
    assert_eq!(
        count(&mut c, "SELECT count(DISTINCT masked_ip) FROM user_logins"),
        500
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages"),
        2000
    );
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
}

#[test]
fn create_date_is_the_utc_date_of_the_sqs_sent_timestamp() {
    let _g = shared();
    let db = TestDb::new("date");
    let mut c = db.client();
    c.batch_execute("SET TimeZone = 'America/New_York'")
        .unwrap();
    let body = r#"{"user_id":"d1","app_version":"1","ip":"1.1.1.1","device_id":"x"}"#;
    let loaded: i32 = c
        .query_one(
            "SELECT loaded FROM sqs_loader.load_batch(NULL, 'q', ARRAY['m-date'], ARRAY[$1], ARRAY['2020-02-29 23:30:00-05'::timestamptz])",
            &[&body],
        )
        .unwrap()
        .get(0);
    assert_eq!(loaded, 1);
    let d: String = c
        .query_one("SELECT create_date::text FROM user_logins", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        d, "2020-03-01",
        "23:30 in New York on Feb 29 is March 1 in UTC"
    );
}

#[test]
fn every_hostile_body_gets_its_reason_and_its_neighbours_load() {
    let _g = shared();
    let db = TestDb::new("hostile");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-hostile");
    let corpus: Vec<Value> = std::fs::read_to_string(format!(
        "{}/tests/integration/data/hostile_bodies.jsonl",
        env().root
    ))
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert!(corpus.len() >= 50);
    let mut cases: Vec<(String, String, String)> = corpus
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().into(),
                v["body"].as_str().unwrap().into(),
                v["expect"].as_str().unwrap().into(),
            )
        })
        .collect();
    // A 256 KB body (the SQS maximum) of valid JSON that is not a login event.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(256 * 1024 - 10));
    cases.push(("256 KB body".into(), big, "missing_user_id".into()));
    // SQS bodies may not be empty: the empty-body case is covered by the parser unit tests.
    cases.retain(|(_, b, _)| !b.is_empty());
    // Give each loaded case a distinct user_id (same length, so limits still hold) to find it
    // again. Textually: some bodies hold JSON (huge numbers, deep nesting) that a round trip
    // through serde_json::Value would not keep as it is.
    let (bodies, uids): (Vec<String>, Vec<Option<String>>) = cases
        .iter()
        .enumerate()
        .map(|(i, (_, body, expect))| {
            if expect != "loaded" {
                return (body.clone(), None);
            }
            let start = body
                .find("\"user_id\": \"")
                .expect("a loaded case has a user_id")
                + 12;
            let end = start + body[start..].find('"').unwrap();
            // The user_id as decoded (it may hold escapes), tagged, encoded back.
            let uid: String =
                serde_json::from_str(&format!("\"{}\"", &body[start..end])).expect("a JSON string");
            let uid: Vec<char> = uid.chars().collect();
            let tag: Vec<char> = format!("#{i}").chars().collect();
            let keep = uid.len().saturating_sub(tag.len()).max(1);
            let tagged: String = uid[..keep].iter().chain(tag.iter()).collect();
            let literal = serde_json::to_string(&tagged).unwrap();
            (
                format!("{}{}{}", &body[..start - 1], literal, &body[end + 1..]),
                Some(tagged),
            )
        })
        .unzip();
    let mut neighbours = login_events(20, "nb", 20);
    let mut all = bodies.clone();
    all.append(&mut neighbours);
    send(&mut c, &url, &all);
    let r = load(&mut c, &url);
    for (((name, _, expect), body), uid) in cases.iter().zip(&bodies).zip(&uids) {
        if let Some(uid) = uid {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM user_logins WHERE user_id = $1",
                    &[&uid],
                )
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "{name}");
        } else {
            let got: Vec<String> = c
                .query(
                    "SELECT reason FROM sqs_loader.rejected_messages WHERE body = $1",
                    &[body],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(got, vec![expect.clone()], "{name}");
        }
    }
    // Each case first (a failure names it), then the totals.
    let want_loaded = cases.iter().filter(|c| c.2 == "loaded").count() as i64 + 20;
    assert_eq!(r.received, all.len() as i64);
    assert_eq!(r.loaded, want_loaded, "{r:?}");
    assert_eq!(r.rejected, all.len() as i64 - want_loaded);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM user_logins WHERE user_id LIKE 'nb-%'"
        ),
        20
    );
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
}

#[test]
fn progress_notices_and_draining_until_the_deadline() {
    let _g = shared();
    let db = TestDb::new("progress");
    let (mut c, notices) = connect_with_notices(&db.name);
    let url = create_queue(&mut c, "it-progress");
    send(&mut c, &url, &login_events(50, "pg", 50));
    c.batch_execute("SET sqs_loader.exit_when_empty = off; SET sqs_loader.progress_seconds = 1")
        .unwrap();
    let t = std::time::Instant::now();
    let r = c
        .query_one("CALL load_user_logins($1, max_seconds => 3)", &[&url])
        .unwrap();
    let took = t.elapsed();
    assert_eq!(r.get::<_, i64>(1), 50);
    assert!(
        took >= Duration::from_millis(2500),
        "kept draining until max_seconds ({took:?})"
    );
    let n = notices.lock().unwrap();
    assert!(
        n.iter()
            .any(|m| m.starts_with("load_user_logins: 50 received, 50 loaded")),
        "{n:?}"
    );
}

#[test]
fn pg_cron_schedule_runs_the_load() {
    let _g = shared();
    let e = env();
    let mut c = connect(&e.cron_db);
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_cron; CREATE EXTENSION IF NOT EXISTS sqs_loader",
    )
    .unwrap();
    let (_private, public) = keypair();
    c.execute("SELECT set_rsa_public_key($1)", &[&public])
        .unwrap();
    let url = create_queue(&mut c, "it-cron");
    send(&mut c, &url, &sample_messages());
    let before = count(&mut c, "SELECT count(*) FROM user_logins");
    let job = format!("it-load-{}", random_suffix());
    let cmd = format!("CALL load_user_logins('{url}')");
    // pg_cron 1.5+ (built for PostgreSQL 18 here) schedules every few seconds; Debian's 1.4.2
    // (PostgreSQL 15) by the minute, and refuses a seconds schedule.
    let cron: String = c
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'",
            &[],
        )
        .unwrap()
        .get(0);
    let v: Vec<u32> = cron.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    let seconds = (v[0], v.get(1).copied().unwrap_or(0)) >= (1, 5);
    let schedule = if seconds { "5 seconds" } else { "* * * * *" };
    if !seconds {
        assert!(c
            .query_one(
                "SELECT cron.schedule('it-seconds', '5 seconds', 'SELECT 1')",
                &[]
            )
            .is_err());
    }
    let jobid: i64 = c
        .query_one("SELECT cron.schedule($1, $2, $3)", &[&job, &schedule, &cmd])
        .unwrap()
        .get(0);
    let wait = Duration::from_secs(if seconds { 30 } else { 150 });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(wait, "the scheduled run", || {
            count(&mut c, "SELECT count(*) FROM user_logins") >= before + 99
        });
        wait_until(Duration::from_secs(60), "the job to finish", || {
            count(&mut c, &format!("SELECT count(*) FROM cron.job_run_details WHERE jobid = {jobid} AND status = 'succeeded'")) >= 1
        });
    }));
    c.execute("SELECT cron.unschedule($1)", &[&job]).unwrap();
    if let Err(p) = result {
        let details: Vec<String> = c
            .query("SELECT status || ': ' || coalesce(return_message, '') FROM cron.job_run_details WHERE jobid = $1", &[&jobid])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        eprintln!("cron.job_run_details: {details:?}");
        std::panic::resume_unwind(p);
    }
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM user_logins") - before,
        99
    );
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
}

#[test]
fn existing_table_is_used_as_is_and_survives_drop_extension() {
    let _g = shared();
    let name = format!("it_existing_{}", random_suffix());
    TestDb::create(&name);
    let mut c = connect(&name);
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS user_logins(user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
             masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date);
         INSERT INTO user_logins(user_id) VALUES ('already-here');
         CREATE EXTENSION sqs_loader;",
    )
    .unwrap();
    c.batch_execute("DROP EXTENSION sqs_loader").unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM user_logins WHERE user_id = 'already-here'"
        ),
        1
    );
    // A table of another shape is refused with a clear error.
    c.batch_execute("DROP TABLE user_logins; CREATE TABLE user_logins(id int)")
        .unwrap();
    let err = c.batch_execute("CREATE EXTENSION sqs_loader").unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P16");
    drop(c);
    connect("postgres")
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn pg_dump_and_restore_keep_tokens_and_recovery() {
    let _g = shared();
    let e = env();
    let db = TestDb::new("dump");
    let mut c = db.client();
    let t1: String = c
        .query_one(
            "SELECT (sqs_loader.mask_values(ARRAY['203.0.113.77']))[1]",
            &[],
        )
        .unwrap()
        .get(0);
    let dump = std::env::temp_dir().join(format!("sqs_loader_it_{}.dump", random_suffix()));
    let ok = pg_client("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(&db.name)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg_dump");
    let restore = |target: &str, extra: &[&str]| {
        TestDb::create(target);
        let out = pg_client("pg_restore")
            .args(["-d", target])
            .args(extra)
            .arg(&dump)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // A full restore: same tokens, values recoverable with the same private key.
    let full = format!("{}_full", db.name);
    let errors = restore(&full, &["--exit-on-error"]);
    assert!(errors.is_empty(), "pg_restore: {errors}");
    let mut r = connect(&full);
    assert_eq!(
        r.query_one("SELECT mask_pii('203.0.113.77')", &[])
            .unwrap()
            .get::<_, String>(0),
        t1
    );
    assert_eq!(
        r.query_one("SELECT unmask_pii($1, $2)", &[&t1, &db.private_key])
            .unwrap()
            .get::<_, String>(0),
        "203.0.113.77"
    );
    drop(r);
    // A restore without the token key's data: masking fails loudly instead of minting other tokens.
    let partial = format!("{}_nokey", db.name);
    let list = std::process::Command::new(format!("{}/pg_restore", e.pgbin))
        .arg("-l")
        .arg(&dump)
        .output()
        .unwrap();
    let toc: String = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !(l.contains("TABLE DATA sqs_loader token_key")))
        .map(|l| format!("{l}\n"))
        .collect();
    let toc_file = dump.with_extension("toc");
    std::fs::write(&toc_file, toc).unwrap();
    restore(&partial, &["-L", toc_file.to_str().unwrap()]);
    let mut p = connect(&partial);
    let err = p
        .query_one("SELECT mask_pii('203.0.113.77')", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000", "{err:?}");
    assert!(
        format!("{err:?}").contains("not the one the vault was built with"),
        "{err:?}"
    );
    drop(p);
    let mut admin = connect("postgres");
    for d in [&full, &partial] {
        admin
            .batch_execute(&format!("DROP DATABASE {d} WITH (FORCE)"))
            .unwrap();
    }
    let _ = std::fs::remove_file(&dump);
    let _ = std::fs::remove_file(&toc_file);
}

#[test]
fn queue_urls_are_data_never_sql() {
    let _g = shared();
    let db = TestDb::new("inject");
    let mut c = db.client();
    for url in [
        "http://localhost:4566/000000000000/q'); DROP TABLE user_logins; --",
        "x' OR '1'='1",
        "http://localhost:4566/000000000000/q$$; DROP SCHEMA sqs_loader CASCADE; $$",
    ] {
        let err = c
            .query_one("CALL load_user_logins($1)", &[&url])
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "22023", "{url}: {err:?}");
        c.execute(
            "SELECT set_config('sqs_loader.queue_url', $1, false)",
            &[&url],
        )
        .unwrap();
        let err = c.query_one("CALL load_user_logins()", &[]).unwrap_err();
        assert_eq!(err.code().unwrap().code(), "22023", "{url}: {err:?}");
        // Recorded verbatim, as data.
        let n: i64 = c
            .query_one("SELECT count(*) FROM sqs_loader.load_runs WHERE queue_url = $1 AND status = 'failed'", &[&url])
            .unwrap()
            .get(0);
        assert_eq!(n, 2);
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_class WHERE oid IN ('user_logins'::regclass, 'sqs_loader.vault'::regclass)"), 2);
}

#[test]
fn bookkeeping_is_pruned_after_the_retention() {
    let _g = shared();
    let db = TestDb::new("prune");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-prune");
    c.batch_execute(
        "INSERT INTO sqs_loader.processed_messages(message_id, outcome, processed_at) VALUES
           ('old-1', 'loaded', now() - interval '16 days'),
           ('old-2', 'rejected', now() - interval '30 days'),
           ('recent', 'loaded', now() - interval '14 days')",
    )
    .unwrap();
    load(&mut c, &url);
    let left: Vec<String> = c
        .query(
            "SELECT message_id FROM sqs_loader.processed_messages ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        vec!["recent".to_string()],
        "ids older than sqs_loader.dedup_retention_days (15) are pruned"
    );
}

#[test]
fn create_extension_at_once_in_several_databases_of_a_new_cluster() {
    let _g = shared();
    let e = env();
    // A cluster of its own: the role sqs_loader_unmask (cluster-wide) does not exist there yet.
    let port = e.pgport + 20;
    let name = format!("roles{}", random_suffix());
    let script = format!("{}/scripts/pg.sh", e.root);
    let start = std::process::Command::new("bash")
        .args([&script, "start", &name, &port.to_string(), "postgres"])
        .env("PG", e.pg_major.to_string())
        .env("PG_SERVER_ENV", &e.server_env)
        .status()
        .unwrap();
    assert!(start.success());
    let result = std::panic::catch_unwind(|| {
        let conn = |db: &str| {
            postgres::Client::connect(
                &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
                postgres::NoTls,
            )
            .unwrap()
        };
        let mut admin = conn("postgres");
        for round in 0..3 {
            let dbs: Vec<String> = (0..4).map(|i| format!("r{round}_{i}")).collect();
            for db in &dbs {
                admin
                    .batch_execute(&format!("CREATE DATABASE {db}"))
                    .unwrap();
            }
            // All at once: each CREATE EXTENSION finds no role and makes it.
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(dbs.len()));
            let threads: Vec<_> = dbs
                .iter()
                .map(|db| {
                    let (db, barrier) = (db.clone(), barrier.clone());
                    let mut c = conn(&db);
                    std::thread::spawn(move || {
                        barrier.wait();
                        c.batch_execute("CREATE EXTENSION sqs_loader")
                    })
                })
                .collect();
            for (db, t) in dbs.iter().zip(threads) {
                let r = t.join().unwrap();
                assert!(r.is_ok(), "round {round}, {db}: {r:?}");
            }
            // Back to a cluster without the role, for the next round.
            for db in &dbs {
                admin.batch_execute(&format!("DROP DATABASE {db}")).unwrap();
            }
            admin.batch_execute("DROP ROLE sqs_loader_unmask").unwrap();
        }
    });
    let _ = std::process::Command::new("bash")
        .args([&script, "destroy", &name])
        .status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
