//! Try hard to lose or duplicate a message: kill the loading backend at random points, restart
//! the server mid-run, put a faulty SQS endpoint in between, cancel during a stalled call.
//! Every test ends by checking the exact final state: each valid message loaded once, each
//! malformed one rejected once, the queue empty.

use sqs_loader_it::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn fifty_kills_at_random_points_lose_and_duplicate_nothing() {
    // SIGKILL of a backend makes the postmaster restart every backend: no other test may run.
    let _g = exclusive();
    let db = TestDb::new("kills");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-kills");
    let n = 5000;
    let (bodies, valid) = messages_with_rejects(n, "k");
    send(&mut c, &url, &bodies);
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET sqs_loader.visibility_timeout = 2; ALTER DATABASE {} SET sqs_loader.batch_size = 100",
        db.name, db.name
    ))
    .unwrap();
    drop(c);
    let k = kill_runs_at_random_points(&db.name, &url, 50);
    drain_until_done(&db.name, &url, n, Duration::from_secs(120));
    let mut c = db.client();
    assert_exact(&mut c, &url, n, valid);
    eprintln!(
        "kills: {} SIGKILL + {} pg_terminate_backend; {} after the run had committed batches",
        k.sigkills, k.terminates, k.mid_run
    );
    assert!(
        k.mid_run >= 10,
        "enough kills landed mid-run ({})",
        k.mid_run
    );
}

#[test]
fn immediate_shutdown_mid_run_loses_and_duplicates_nothing() {
    let _g = exclusive();
    let db = TestDb::new("restart");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-restart");
    let n = 2000;
    let (bodies, valid) = messages_with_rejects(n, "r");
    send(&mut c, &url, &bodies);
    c.batch_execute(&format!(
        "ALTER DATABASE {0} SET sqs_loader.visibility_timeout = 3; ALTER DATABASE {0} SET sqs_loader.batch_size = 50",
        db.name
    ))
    .unwrap();
    let (dbname, u) = (db.name.clone(), url.clone());
    let run = std::thread::spawn(move || {
        connect(&dbname)
            .query_one("CALL load_user_logins($1)", &[&u])
            .map(|_| ())
    });
    wait_until(Duration::from_secs(30), "a committed batch", || {
        count(&mut c, "SELECT count(*) FROM user_logins") > 0
    });
    drop(c);
    restart_cluster("immediate");
    assert!(run.join().unwrap().is_err(), "the run died with the server");
    wait_until(Duration::from_secs(60), "the server", || {
        server_is_up(&db.name)
    });
    let mut c = db.client();
    let partial = count(&mut c, "SELECT count(*) FROM user_logins") as usize;
    assert!(
        partial < valid,
        "the restart happened mid-run ({partial} rows)"
    );
    drain_until_done(&db.name, &url, n, Duration::from_secs(60));
    assert_exact(&mut c, &url, n, valid);
}

#[test]
fn a_faulty_endpoint_gives_clear_errors_or_success_and_loses_nothing() {
    let _g = shared();
    let db = TestDb::new("faulty");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-faulty");
    let n = 1500;
    let (bodies, valid) = messages_with_rejects(n, "f");
    send(&mut c, &url, &bodies);
    // 12 % of the requests fail: 500, 503, throttling, dropped connections, stalls past the timeout.
    let proxy = fault_proxy(&env().localstack, 12, Duration::from_secs(3));
    c.batch_execute(&format!(
        "SET sqs_loader.endpoint = '{}'; SET sqs_loader.http_timeout_ms = 1000; SET sqs_loader.max_retries = 1;
         SET sqs_loader.visibility_timeout = 4; SET sqs_loader.batch_size = 50;",
        proxy.url
    ))
    .unwrap();
    let (mut ok, mut failed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    while count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages") < n as i64
        || queue_depth(&mut c, &url) != (0, 0)
    {
        assert!(
            Instant::now() < deadline,
            "not done after 240 s ({ok} runs succeeded, {failed} failed)"
        );
        match c.query_one("CALL load_user_logins($1)", &[&url]) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                // Retries exhausted: a clear I/O or service error, nothing else.
                assert!(
                    code == "58000" || code == "58030",
                    "unexpected error {code}: {e:?}"
                );
                assert!(format!("{e:?}").contains("attempt(s)"), "{e:?}");
            }
        }
    }
    assert_exact(&mut c, &url, n, valid);
    let s = &proxy.stats;
    eprintln!("fault proxy: {s:?}; runs: {ok} succeeded, {failed} failed with a clear error");
    for (kind, v) in [
        ("500", &s.http_500),
        ("503", &s.http_503),
        ("throttled", &s.throttled),
        ("dropped", &s.dropped),
        ("stalled", &s.stalled),
    ] {
        assert!(v.load(Ordering::SeqCst) > 0, "no {kind} fault was injected");
    }
    // The error path, on purpose: with every request failing a run ends with a clear error,
    // recorded with the run; the messages stay where they were.
    c.batch_execute("RESET sqs_loader.endpoint").unwrap();
    send(&mut c, &url, &login_events(20, "f-last", 20));
    c.batch_execute(&format!("SET sqs_loader.endpoint = '{}'", proxy.url))
        .unwrap();
    proxy.fault_percent.store(100, Ordering::SeqCst);
    let err = c
        .query_one("CALL load_user_logins($1)", &[&url])
        .expect_err("every request fails");
    let code = err.code().map(|c| c.code().to_string()).unwrap_or_default();
    assert!(code == "58000" || code == "58030", "{err:?}");
    assert!(format!("{err:?}").contains("attempt(s)"), "{err:?}");
    let (status, sqlstate): (String, String) = {
        let r = c
            .query_one(
                "SELECT status, sqlstate FROM sqs_loader.load_runs ORDER BY run_id DESC LIMIT 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), sqlstate), ("failed", code));
    // ... and the next run, with the endpoint healthy again, loads them.
    proxy.fault_percent.store(0, Ordering::SeqCst);
    let r = load(&mut c, &url);
    assert_eq!((r.received, r.loaded), (20, 20));
}

#[test]
fn cancelling_a_run_stuck_on_a_stalled_endpoint_loses_nothing() {
    let _g = shared();
    let db = TestDb::new("stall");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-stall");
    let n = 300;
    let (bodies, valid) = messages_with_rejects(n, "s");
    send(&mut c, &url, &bodies);
    let proxy = fault_proxy(&env().localstack, 0, Duration::from_secs(600));
    c.batch_execute(&format!(
        "SET sqs_loader.endpoint = '{}'; SET sqs_loader.http_timeout_ms = 600000; SET sqs_loader.visibility_timeout = 3;
         SET sqs_loader.batch_size = 50;",
        proxy.url
    ))
    .unwrap();
    // Let one batch through, then every request stalls.
    let r = c
        .query_one("CALL load_user_logins($1, max_messages => 50)", &[&url])
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 50);
    proxy.stall_all.store(true, Ordering::SeqCst);
    for (how, sql) in [
        ("statement_timeout", "SET statement_timeout = '1s'"),
        ("pg_cancel_backend", "RESET statement_timeout"),
    ] {
        c.batch_execute(sql).unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let canceller = (how == "pg_cancel_backend").then(|| {
            let dbname = db.name.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1000));
                connect(&dbname)
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .unwrap();
            })
        });
        let t = Instant::now();
        let err = c
            .query_one("CALL load_user_logins($1)", &[&url])
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.code().unwrap().code(), "57014", "{how}: {err:?}");
        assert!(
            took < Duration::from_secs(3),
            "{how} ended the run after {took:?}"
        );
        if let Some(h) = canceller {
            h.join().unwrap();
        }
    }
    c.batch_execute(
        "RESET statement_timeout; RESET sqs_loader.endpoint; RESET sqs_loader.http_timeout_ms",
    )
    .unwrap();
    drain_until_done(&db.name, &url, n, Duration::from_secs(60));
    assert_exact(&mut c, &url, n, valid);
}

#[test]
fn batches_commit_durably_even_with_synchronous_commit_off() {
    let _g = exclusive();
    let db = TestDb::new("durable");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-durable");
    let (bodies, valid) = messages_with_rejects(200, "d");
    send(&mut c, &url, &bodies);
    // Asynchronous commits sit in WAL buffers for up to 3 × wal_writer_delay: an immediate
    // shutdown loses them. The loader deletes messages right after committing them.
    let mut admin = connect("postgres");
    admin
        .batch_execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    c.batch_execute("SET synchronous_commit = off").unwrap();
    let r = load(&mut c, &url);
    assert_eq!(r.loaded as usize, valid);
    assert_eq!(
        queue_depth(&mut c, &url),
        (0, 0),
        "the messages are gone from the queue"
    );
    drop(c);
    drop(admin);
    restart_cluster("immediate");
    wait_until(Duration::from_secs(60), "the server", || {
        server_is_up(&db.name)
    });
    let mut admin = connect("postgres");
    admin
        .batch_execute("ALTER SYSTEM RESET wal_writer_delay")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut c = db.client();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM user_logins") as usize,
        valid,
        "no committed batch was lost"
    );
}
