//! Continuous loading with background workers: started and stopped from SQL, kept across
//! restarts and crashes, exactly once under kills while messages keep arriving, and visibility
//! heartbeats that keep a slow batch's messages from a second consumer.

use sqs_loader_it::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// The pids of this database's loader workers.
fn worker_pids(c: &mut postgres::Client) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sqs_loader worker' AND datname = current_database() ORDER BY pid",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn start_worker(c: &mut postgres::Client, url: &str, processes: i32) {
    c.query_one(
        "SELECT sqs_loader.start_worker($1, $2)",
        &[&url, &processes],
    )
    .unwrap();
}

/// Stop a queue's workers and wait until their processes (named after the queue's row of
/// sqs_loader.workers in pg_stat_activity) are gone.
fn stop_worker(c: &mut postgres::Client, url: &str) {
    let id: i64 = c
        .query_one(
            "SELECT id FROM sqs_loader.workers WHERE queue_url = $1",
            &[&url],
        )
        .unwrap()
        .get(0);
    let stopped: bool = c
        .query_one("SELECT sqs_loader.stop_worker($1)", &[&url])
        .unwrap()
        .get(0);
    assert!(stopped);
    wait_until(Duration::from_secs(60), "the workers to stop", || {
        count(
            c,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'sqs_loader worker {id}#%'"
            ),
        ) == 0
    });
}

#[test]
fn a_worker_loads_what_arrives_and_stops_cleanly() {
    let _g = shared();
    let db = TestDb::new("worker");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-worker");
    start_worker(&mut c, &url, 1);
    wait_until(Duration::from_secs(30), "a worker process", || {
        worker_pids(&mut c).len() == 1
    });
    send(&mut c, &url, &login_events(50, "w", 50));
    let mut bad = sample_messages();
    bad.truncate(1);
    send(
        &mut c,
        &url,
        &[r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#.to_string()],
    );
    wait_until(Duration::from_secs(30), "the messages to be loaded", || {
        count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages") == 51
    });
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 50);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.rejected_messages"),
        1
    );
    // stat_loaders: this queue, loaded by a worker that is running, with rates and a lag.
    let (mode, state, mps, lag): (String, String, Option<f64>, bool) = {
        let r = c
            .query_one(
                "SELECT mode, state, messages_per_second::float8, lag IS NOT NULL FROM sqs_loader.stat_loaders WHERE queue_url = $1",
                &[&url],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        (mode.as_str(), state.as_str(), lag),
        ("worker", "running", true)
    );
    assert!(mps.unwrap_or(0.0) > 0.0);
    stop_worker(&mut c, &url);
    wait_until(
        Duration::from_secs(10),
        "the run to be recorded as stopped",
        || {
            count(
            &mut c,
            "SELECT count(*) FROM sqs_loader.load_runs WHERE mode = 'worker' AND status = 'stopped'",
        ) == 1
        },
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM sqs_loader.load_runs WHERE status = 'running'"
        ),
        0
    );
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
}

#[test]
fn several_workers_in_several_databases() {
    let _g = shared();
    let a = TestDb::new("workers_a");
    let b = TestDb::new("workers_b");
    let mut ca = a.client();
    let mut cb = b.client();
    let urls_a = [
        create_queue(&mut ca, "it-wa1"),
        create_queue(&mut ca, "it-wa2"),
    ];
    let url_b = create_queue(&mut cb, "it-wb");
    start_worker(&mut ca, &urls_a[0], 2);
    start_worker(&mut ca, &urls_a[1], 1);
    start_worker(&mut cb, &url_b, 1);
    for (i, u) in urls_a.iter().enumerate() {
        send(&mut ca, u, &login_events(40, &format!("a{i}"), 40));
    }
    send(&mut cb, &url_b, &login_events(40, "b", 40));
    wait_until(Duration::from_secs(60), "every queue loaded", || {
        count(&mut ca, "SELECT count(*) FROM user_logins") == 80
            && count(&mut cb, "SELECT count(*) FROM user_logins") == 40
    });
    assert_eq!(worker_pids(&mut ca).len(), 3);
    assert_eq!(worker_pids(&mut cb).len(), 1);
    for u in &urls_a {
        stop_worker(&mut ca, u);
    }
    stop_worker(&mut cb, &url_b);
}

#[test]
fn without_preloading_start_worker_says_what_is_missing() {
    let _g = shared();
    let name = format!("it_bare_{}", random_suffix());
    connect_bare("postgres")
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let mut c = connect_bare(&name);
    c.batch_execute("CREATE EXTENSION sqs_loader").unwrap();
    let e = c
        .query_one(
            "SELECT sqs_loader.start_worker('http://localhost:4566/000000000000/q')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e:?}");
    let db = e.as_db_error().unwrap();
    assert!(
        db.message()
            .contains("start_worker() needs sqs_loader in shared_preload_libraries"),
        "{}",
        db.message()
    );
    assert!(db
        .hint()
        .unwrap_or_default()
        .contains("shared_preload_libraries"));
    drop(c);
    connect_bare("postgres")
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn only_a_superuser_or_the_extension_owner_starts_workers() {
    let _g = shared();
    let db = TestDb::new("workerpriv");
    let mut c = db.client();
    let role = format!("op_{}", random_suffix());
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA sqs_loader TO {role};
         GRANT EXECUTE ON FUNCTION sqs_loader.start_worker(text, integer, integer, integer) TO {role};"
    ))
    .unwrap();
    let e = connect_as(&db.name, &role)
        .query_one(
            "SELECT sqs_loader.start_worker('http://localhost:4566/000000000000/q')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    // A queue URL a worker could not use is refused at once.
    let e = c
        .query_one(
            "SELECT sqs_loader.start_worker('http://169.254.169.254/000000000000/q')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    c.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

/// Slow down inserts of marked rows by `seconds` (a trigger on user_logins).
fn slow_marked_rows(c: &mut postgres::Client, seconds: f64) {
    c.batch_execute(&format!(
        "CREATE FUNCTION slow_marked() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.user_id LIKE 'slow-%' THEN PERFORM pg_sleep({seconds}); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow_marked BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION slow_marked();"
    ))
    .unwrap();
}

#[test]
fn a_batch_that_outlives_the_visibility_timeout_is_not_received_twice() {
    let _g = shared();
    let db = TestDb::new("heartbeat");
    let mut c = db.client();
    // Messages invisible for 3 s; the slow batch takes 8 s.
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET sqs_loader.visibility_timeout = 3; ALTER DATABASE {} SET sqs_loader.batch_size = 10",
        db.name, db.name
    ))
    .unwrap();
    slow_marked_rows(&mut c, 8.0);
    let url = create_queue(&mut c, "it-heartbeat");
    let mut bodies = login_events(30, "hb", 30);
    bodies[3] = bodies[3].replace("hb-3", "slow-1");
    send(&mut c, &url, &bodies);
    // Two workers on one queue: without heartbeats the second would receive the slow batch's
    // messages once their 3 s are up, block on their ids, then skip them.
    start_worker(&mut c, &url, 2);
    wait_until(Duration::from_secs(60), "every message loaded", || {
        count(&mut c, "SELECT count(*) FROM user_logins") == 30
    });
    stop_worker(&mut c, &url);
    assert_eq!(
        count(
            &mut c,
            "SELECT coalesce(sum(skipped), 0)::bigint FROM sqs_loader.load_runs"
        ),
        0,
        "no message was received a second time"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT coalesce(sum(received), 0)::bigint FROM sqs_loader.load_runs"
        ),
        30
    );
    // The same with two concurrent CALLs, on a queue of their own: a stopped worker's abandoned
    // long poll may still take messages that arrive, which come back after their timeout.
    let url = create_queue(&mut c, "it-heartbeat-call");
    let mut bodies = login_events(20, "call", 20);
    bodies[5] = bodies[5].replace("call-5", "slow-2");
    send(&mut c, &url, &bodies);
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (name, url) = (db.name.clone(), url.clone());
            std::thread::spawn(move || {
                let mut c = connect(&name);
                c.batch_execute("SET sqs_loader.batch_size = 10").unwrap();
                load(&mut c, &url)
            })
        })
        .collect();
    let mut total = RunCounts {
        received: 0,
        loaded: 0,
        rejected: 0,
        skipped: 0,
    };
    for r in runs {
        let r = r.join().unwrap();
        total.received += r.received;
        total.loaded += r.loaded;
        total.skipped += r.skipped;
    }
    assert_eq!((total.loaded, total.skipped), (20, 0), "{total:?}");
}

#[test]
fn kills_and_restarts_while_messages_keep_arriving_lose_and_duplicate_nothing() {
    // Kills and a server restart: no other test may run.
    let _g = exclusive();
    let db = TestDb::new("workerkills");
    let mut c = db.client();
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET sqs_loader.visibility_timeout = 4; ALTER DATABASE {} SET sqs_loader.batch_size = 50",
        db.name, db.name
    ))
    .unwrap();
    let url = create_queue(&mut c, "it-workerkills");
    start_worker(&mut c, &url, 2);
    // A producer sends 3,000 messages (1 % malformed) over the whole test.
    let n = 3000;
    let mut bodies = login_events(n, "wk", n / 3);
    for (i, b) in bodies.iter_mut().enumerate() {
        if i % 100 == 99 {
            *b = format!(r#"{{"foo": "oops_wrong_msg_type", "bar": "wk-{i}"}}"#);
        }
    }
    let valid = n - n / 100;
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (name, url, done) = (db.name.clone(), url.clone(), done.clone());
        std::thread::spawn(move || {
            for chunk in bodies.chunks(100) {
                // The server may be restarting: retry until this chunk is sent.
                loop {
                    let sent = std::panic::catch_unwind(|| send(&mut connect(&name), &url, chunk));
                    if sent.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut sigkills, mut terminates) = (0, 0);
    let mut restarted = false;
    let start = Instant::now();
    while !done.load(Ordering::SeqCst) || start.elapsed() < Duration::from_secs(10) || !restarted {
        std::thread::sleep(Duration::from_millis(
            500 + (getrandom::u32().unwrap() % 1500) as u64,
        ));
        let mut admin = connect(&db.name);
        let pids = worker_pids(&mut admin);
        let Some(&pid) = pids.get((getrandom::u32().unwrap() as usize) % pids.len().max(1)) else {
            continue;
        };
        match (sigkills + terminates) % 3 {
            0 => {
                if sigkill_and_wait_for_recovery(pid) {
                    sigkills += 1;
                }
            }
            _ => {
                let _ = admin.execute("SELECT pg_terminate_backend($1)", &[&pid]);
                terminates += 1;
            }
        }
        if !restarted && sigkills + terminates == 6 {
            drop(admin);
            restart_cluster("immediate");
            restarted = true;
        }
    }
    producer.join().unwrap();
    // The workers come back after every kill and the restart, and finish the queue. A chunk
    // the producer sent again after a cut connection may be in the queue twice (as two
    // messages): what must hold is that each message is loaded once and no event is missing.
    let mut c = db.client();
    let rejected_events = n / 100;
    wait_until(
        Duration::from_secs(180),
        "every event loaded and the queue empty",
        || {
            count(&mut c, "SELECT count(DISTINCT user_id) FROM user_logins") as usize == valid
                && count(
                    &mut c,
                    "SELECT count(DISTINCT body) FROM sqs_loader.rejected_messages",
                ) as usize
                    == rejected_events
                && queue_depth(&mut c, &url) == (0, 0)
        },
    );
    stop_worker(&mut c, &url);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM user_logins"),
        count(
            &mut c,
            "SELECT count(*) FROM sqs_loader.processed_messages WHERE outcome = 'loaded'"
        ),
        "each message loaded once: one row per loaded message id"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.rejected_messages"),
        count(
            &mut c,
            "SELECT count(*) FROM sqs_loader.processed_messages WHERE outcome = 'rejected'"
        ),
    );
    let resent = count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages") as usize - n;
    eprintln!("messages sent twice by the producer after a cut connection: {resent}");
    eprintln!(
        "worker kills: {sigkills} SIGKILL, {terminates} pg_terminate_backend, 1 immediate restart"
    );
    assert!(restarted && sigkills >= 2 && terminates >= 2);
}

#[test]
fn a_visibility_timeout_too_short_for_the_heartbeat_is_warned_about() {
    let _g = shared();
    let db = TestDb::new("shortvis");
    let warnings = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let w2 = warnings.clone();
    let mut config: postgres::Config = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        env().pgport,
        db.name
    )
    .parse()
    .unwrap();
    config.notice_callback(move |n| {
        if n.severity() == "WARNING" {
            w2.lock().unwrap().push(n.message().to_string());
        }
    });
    let mut c = config.connect(postgres::NoTls).unwrap();
    let url = create_queue(&mut c, "it-shortvis");
    send(&mut c, &url, &login_events(5, "sv", 5));
    c.batch_execute("SET sqs_loader.visibility_timeout = 2")
        .unwrap();
    assert_eq!(load(&mut c, &url).loaded, 5);
    assert!(warnings.lock().unwrap().is_empty(), "2 s is enough");
    c.batch_execute("SET sqs_loader.visibility_timeout = 1")
        .unwrap();
    load(&mut c, &url);
    let w = warnings.lock().unwrap();
    assert!(
        w.iter()
            .any(|m| m.contains("too short for the visibility heartbeat")),
        "{w:?}"
    );
}

#[test]
fn a_stopped_worker_gives_back_what_its_last_long_poll_received() {
    let _g = shared();
    let db = TestDb::new("stop_poll");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-stop-poll");
    // Long visibility: a message the stopped worker kept would stay hidden for two minutes.
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET sqs_loader.visibility_timeout = 120",
        db.name
    ))
    .unwrap();
    c.query_one("SELECT sqs_loader.start_worker($1, 1, NULL, 20)", &[&url])
        .unwrap();
    wait_until(Duration::from_secs(30), "the worker to poll", || {
        count(
            &mut c,
            "SELECT count(*) FROM sqs_loader.load_runs WHERE mode = 'worker' AND status = 'running'",
        ) == 1
    });
    // Stopped while its 20 s long poll waits; messages sent right after must not vanish into the
    // poll the stopping worker gives up (what `make start` after `make demo` relies on).
    let stopped: bool = c
        .query_one("SELECT sqs_loader.stop_worker($1)", &[&url])
        .unwrap()
        .get(0);
    assert!(stopped);
    send(&mut c, &url, &login_events(5, "stop-poll", 100));
    wait_until(Duration::from_secs(40), "the worker to exit", || {
        worker_pids(&mut c).is_empty()
    });
    // Nothing hidden: each of the five is loaded (if the poll returned before the worker saw
    // the stop) or visible again at once, none left in flight for two minutes.
    wait_until(
        Duration::from_secs(5),
        "the five to be loaded or visible",
        || {
            let (visible, in_flight) = queue_depth(&mut c, &url);
            let loaded = count(&mut c, "SELECT count(*) FROM user_logins");
            in_flight == 0 && visible + loaded == 5
        },
    );
}

/// The queue slots (sqs_loader.max_runs_per_queue) held in this database, by pid.
fn slot_holders(c: &mut postgres::Client) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE l.locktype = 'advisory' AND l.objsubid = 21329 AND l.granted AND d.datname = current_database()
          ORDER BY pid",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// With `max_runs_per_queue = 1` a second run of a queue receives nothing while the first
/// loads: it waits, says so, and takes over once the first ends (here: finds the queue empty).
/// With 0 both load at once. A run cancelled mid-batch gives its slot up at once, though its
/// session stays open: the next run loads instead of waiting for that session to end.
#[test]
fn runs_beyond_max_runs_per_queue_wait_and_a_cancelled_run_frees_its_slot() {
    let _g = shared();
    let db = TestDb::new("run_slots");
    let mut c = db.client();
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET sqs_loader.batch_size = 10",
        db.name
    ))
    .unwrap();
    // Every row takes 0.3 s to insert: a batch of 10, 3 s.
    slow_marked_rows(&mut c, 0.3);
    for (cap, tag) in [(1, "capped"), (0, "uncapped")] {
        let url = create_queue(&mut c, &format!("it-slots-{tag}"));
        let bodies: Vec<String> = login_events(30, tag, 30)
            .iter()
            .map(|b| b.replace("\"user_id\":\"", "\"user_id\":\"slow-"))
            .collect();
        send(&mut c, &url, &bodies);
        let run = |name: String, url: String| {
            std::thread::spawn(move || {
                let (mut s, notices) = connect_with_notices(&name);
                s.batch_execute(&format!("SET sqs_loader.max_runs_per_queue = {cap}"))
                    .unwrap();
                let r = load(&mut s, &url);
                let n = notices.lock().unwrap().clone();
                (r, n)
            })
        };
        let first = run(db.name.clone(), url.clone());
        // The first run receives its first batch and the next (20 messages), then holds the
        // slot while the first loads; 10 messages stay visible.
        wait_until(Duration::from_secs(30), "the first run to load", || {
            count(
                &mut c,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'",
            ) > 0
        });
        if cap == 1 {
            assert_eq!(slot_holders(&mut c).len(), 1, "one slot held");
        }
        let second = run(db.name.clone(), url.clone());
        if cap == 1 {
            // Shown waiting in pg_stat_activity.
            wait_until(Duration::from_secs(10), "the second run to wait", || {
                count(
                    &mut c,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Extension'",
                ) == 1
            });
        }
        let (a, _) = first.join().unwrap();
        let (b, notices) = second.join().unwrap();
        assert_eq!(a.loaded + b.loaded, 30, "{a:?} {b:?}");
        assert_eq!(a.skipped + b.skipped, 0, "{a:?} {b:?}");
        if cap == 1 {
            assert_eq!((a.received, b.received), (30, 0), "the second run waited");
            assert!(
                notices
                    .iter()
                    .any(|m| m.contains("this run waits for one to end")),
                "{notices:?}"
            );
        } else {
            assert!(b.received > 0, "both loaded at once: {a:?} {b:?}");
            assert!(notices.iter().all(|m| !m.contains("waits")), "{notices:?}");
        }
        assert_eq!(
            slot_holders(&mut c),
            Vec::<i32>::new(),
            "every slot given up"
        );
    }

    // Cancelled in its slow first batch (3 s), in a session that stays open.
    let url = create_queue(&mut c, "it-slots-cancel");
    let bodies: Vec<String> = login_events(10, "cancel", 10)
        .iter()
        .map(|b| b.replace("\"user_id\":\"", "\"user_id\":\"slow-"))
        .collect();
    send(&mut c, &url, &bodies);
    let mut s = db.client();
    s.batch_execute("SET sqs_loader.max_runs_per_queue = 1; SET statement_timeout = '1s'")
        .unwrap();
    let e = s
        .query_one("CALL load_user_logins($1)", &[&url])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    let pid: i32 = s.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert!(
        !slot_holders(&mut c).contains(&pid),
        "the cancelled run's session holds no slot"
    );
    // The next run, capped at 1 too, loads what the first gave back once its visibility timeout
    // (5 s) is up, instead of waiting for that session to end.
    c.batch_execute("SET sqs_loader.max_runs_per_queue = 1; SET sqs_loader.exit_when_empty = off")
        .unwrap();
    let r = c
        .query_one(
            "CALL load_user_logins($1, max_messages => 10, max_seconds => 30)",
            &[&url],
        )
        .unwrap();
    assert_eq!(r.get::<_, i64>(1), 10, "loaded after the cancelled run");
    drop(s);
}
