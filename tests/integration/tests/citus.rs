//! The Citus suite (`make test-citus`, scripts/test_citus.sh): a coordinator and two workers on
//! 127.0.0.1 (scripts/citus.sh), the extension created by the recipe of docs/production.md.
//! Everything the single node guarantees, checked on the cluster: the samples, rejects, unmask
//! (online and offline), erasure, key rotation, exactly once under kills of the loading backend
//! and worker restarts, pg_cron and a background worker, dump and restore. The harness points
//! at the coordinator (SQS_LOADER_IT_PGPORT); tests run one at a time (they restart nodes).

use sqs_loader_it::*;
use std::collections::HashMap;
use std::time::Duration;

fn worker_ports() -> Vec<u16> {
    std::env::var("SQS_LOADER_CITUS_WORKER_PORTS")
        .expect("SQS_LOADER_CITUS_WORKER_PORTS: run through make test-citus")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn connect_worker(port: u16, db: &str) -> postgres::Client {
    postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
        postgres::NoTls,
    )
    .unwrap_or_else(|e| panic!("worker {port}: {e}"))
}

/// scripts/citus.sh with these arguments.
fn citus_sh(args: &[&str]) {
    let ok = std::process::Command::new("bash")
        .arg(format!("{}/scripts/citus.sh", env().root))
        .args(args)
        .env("PG", "15")
        .status()
        .unwrap()
        .success();
    assert!(ok, "scripts/citus.sh {args:?}");
}

/// The ```sql block of docs/production.md after the `<!-- not run ... {marker}` line.
fn doc_block(marker: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/docs/production.md", env().root)).unwrap();
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in docs/production.md"));
    let block = &text[start..];
    let open = block.find("```sql\n").unwrap() + "```sql\n".len();
    let len = block[open..].find("```").unwrap();
    block[open..open + len].to_string()
}

/// A database on every node (citus created, workers added) with the extension made by the
/// documented recipe and an RSA key; dropped on every node at the end.
struct CitusDb {
    name: String,
    private_key: String,
    public_key: String,
}

impl CitusDb {
    /// The database, without sqs_loader.
    fn bare(prefix: &str) -> CitusDb {
        let name = format!("citus_{prefix}_{}", random_suffix());
        citus_sh(&["createdb", &name]);
        let (private_key, public_key) = keypair();
        CitusDb {
            name,
            private_key,
            public_key,
        }
    }

    fn new(prefix: &str) -> CitusDb {
        let db = Self::bare(prefix);
        db.install();
        db
    }

    /// The recipe, a key, short visibility timeouts.
    fn install(&self) {
        let mut c = self.client();
        c.batch_execute(&doc_block("the Citus recipe")).unwrap();
        c.execute("SELECT set_rsa_public_key($1)", &[&self.public_key])
            .unwrap();
        c.batch_execute(&format!(
            "ALTER DATABASE {} SET sqs_loader.visibility_timeout = 5",
            self.name
        ))
        .unwrap();
    }

    fn client(&self) -> postgres::Client {
        connect(&self.name)
    }
}

impl Drop for CitusDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} for inspection", self.name);
            return;
        }
        citus_sh(&["dropdb", &self.name]);
    }
}

/// Rows of user_logins per worker port, counted in the shards themselves.
fn rows_per_worker(c: &mut postgres::Client) -> HashMap<i32, i64> {
    c.query(
        "SELECT s.nodeport, sum(r.result::bigint)::bigint
           FROM run_command_on_shards('user_logins', 'SELECT count(*) FROM %s') r
           JOIN citus_shards s USING (shardid)
          GROUP BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Send the first sample's IP again, from another user, and load it: (the IP, its token as
/// found by GROUP BY masked_ip HAVING count(*) > 1).
fn send_duplicate(c: &mut postgres::Client, url: &str) -> (String, String) {
    let ip = "199.172.111.135";
    assert!(sample_messages()[0].contains(ip));
    send(
        c,
        url,
        &[format!(
            r#"{{"user_id":"duplicate-user","app_version":"2.3.0","device_type":"ios","ip":"{ip}","locale":"US","device_id":"000-00-0000"}}"#
        )],
    );
    assert_eq!(load(c, url).loaded, 1);
    let token: String = c
        .query_one(
            "SELECT masked_ip FROM user_logins GROUP BY 1 HAVING count(*) > 1",
            &[],
        )
        .unwrap()
        .get(0);
    (ip.to_string(), token)
}

/// psql on the coordinator: (stdout, stderr) of these commands in one session.
fn psql(db: &str, commands: &[&str]) -> (String, String) {
    let mut cmd = pg_client("psql");
    cmd.args(["-X", "-d", db, "-v", "ON_ERROR_STOP=1"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().unwrap();
    let (o, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "psql {commands:?}: {err}");
    (o, err)
}

#[test]
fn the_recipe_keeps_secrets_on_the_coordinator_and_the_samples_load_as_on_one_node() {
    let db = CitusDb::bare("samples");
    let mut c = db.client();
    // With DDL propagation on (the default), CREATE EXTENSION is refused with the recipe.
    let err = c.batch_execute("CREATE EXTENSION sqs_loader").unwrap_err();
    let e = err.as_db_error().expect("a server error");
    assert_eq!(e.code().code(), "55000", "{e}");
    assert!(e
        .hint()
        .unwrap()
        .contains("citus.enable_ddl_propagation = off"));
    db.install();
    assert_eq!(
        c.query_one(
            "SELECT distribution_column FROM citus_tables WHERE table_name = 'user_logins'::regclass",
            &[]
        )
        .unwrap()
        .get::<_, String>(0),
        "user_id"
    );
    // Nothing of the extension on a worker: no extension, no schema, so no token key or vault.
    for port in worker_ports() {
        let mut w = connect_worker(port, &db.name);
        let r = w
            .query_one(
                "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'sqs_loader'),
                        to_regnamespace('sqs_loader') IS NULL, to_regclass('public.user_logins') IS NOT NULL",
                &[],
            )
            .unwrap();
        assert_eq!(r.get::<_, i64>(0), 0, "sqs_loader on worker {port}");
        assert!(r.get::<_, bool>(1), "schema sqs_loader on worker {port}");
        assert!(
            r.get::<_, bool>(2),
            "the shell of user_logins on worker {port}"
        );
    }

    let url = create_queue(&mut c, "citus-samples");
    send(&mut c, &url, &sample_messages());
    let run = load(&mut c, &url);
    assert_eq!((run.received, run.loaded, run.rejected), (100, 99, 1));
    let per_worker = rows_per_worker(&mut c);
    assert_eq!(per_worker.values().sum::<i64>(), 99, "{per_worker:?}");
    assert_eq!(per_worker.len(), 2, "rows on both workers: {per_worker:?}");
    assert!(per_worker.values().all(|&n| n > 0), "{per_worker:?}");
    let reason: String = c
        .query_one("SELECT reason FROM sqs_loader.rejected_messages", &[])
        .unwrap()
        .get(0);
    assert!(!reason.is_empty());

    // The first sample's IP sent again by another user (as make demo does): GROUP BY finds the
    // duplicate across shards, and it unmasks.
    let (dup_ip, token) = send_duplicate(&mut c, &url);
    let value: String = c
        .query_one("SELECT unmask_pii($1, $2)", &[&token, &db.private_key])
        .unwrap()
        .get(0);
    assert_eq!(value, dup_ip);

    // Offline recovery: the tool reads sealed values from the coordinator. CREATE EXTENSION
    // citus turned TLS on with a self-signed certificate, which the tool (verifying
    // certificates) refuses: on loopback it connects without TLS.
    assert_eq!(
        c.query_one("SHOW ssl", &[]).unwrap().get::<_, String>(0),
        "on"
    );
    let dir = std::env::temp_dir().join(format!("it-citus-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("private.pem");
    std::fs::write(&key, &db.private_key).unwrap();
    let out = std::process::Command::new(format!("{}/target/debug/sqs_loader_unmask", env().root))
        .args([
            "--db",
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={} sslmode=disable",
                env().pgport,
                db.name
            ),
            "--key",
            &key.to_string_lossy(),
            &token,
        ])
        .output()
        .expect("target/debug/sqs_loader_unmask (built by make test-citus)");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("token,value,outcome\n{token},{dup_ip},ok\n")
    );

    // Key rotation: the new key opens, the old one no longer does.
    let (new_private, new_public) = keypair();
    let n: i64 = c
        .query_one(
            "SELECT rotate_rsa_key($1, $2)",
            &[&new_public, &db.private_key],
        )
        .unwrap()
        .get(0);
    assert!(n >= 1);
    let value: String = c
        .query_one("SELECT unmask_pii($1, $2)", &[&token, &new_private])
        .unwrap()
        .get(0);
    assert_eq!(value, dup_ip);
    let err = c
        .query_one("SELECT unmask_pii($1, $2)", &[&token, &db.private_key])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "28000", "{err}");

    // Erasure: the value is gone, and a later message with it stores nothing again.
    let erased: bool = c
        .query_one("SELECT forget_pii($1)", &[&token])
        .unwrap()
        .get(0);
    assert!(erased);
    assert_eq!(
        c.query_one("SELECT unmask_pii($1, $2)", &[&token, &new_private])
            .unwrap()
            .get::<_, Option<String>>(0),
        None
    );
    let again = format!(
        r#"{{"user_id":"after-erasure","app_version":"2.3.0","device_type":"ios","ip":"{dup_ip}","locale":"RU","device_id":"111-22-3333"}}"#
    );
    send(&mut c, &url, &[again]);
    assert_eq!(load(&mut c, &url).loaded, 1);
    let r = c
        .query_one(
            "SELECT u.masked_ip = $1, v.sealed IS NULL
               FROM user_logins u JOIN sqs_loader.vault v ON v.token = u.masked_ip
              WHERE u.user_id = 'after-erasure'",
            &[&token],
        )
        .unwrap();
    assert!(r.get::<_, bool>(0), "same token");
    assert!(r.get::<_, bool>(1), "still a tombstone");
}

#[test]
fn batches_commit_with_two_phase_commit_over_one_connection_per_worker() {
    let db = CitusDb::new("twopc");
    let mut c = db.client();
    // A batch of one row, then one of 40 (rows for both workers, in all likelihood).
    for (n, tag) in [(1, "one"), (40, "forty")] {
        let url = create_queue(&mut c, "citus-2pc");
        send(&mut c, &url, &login_events(n, tag, n));
        let (_, notices) = psql(
            &db.name,
            &[
                "SET citus.log_remote_commands = on",
                &format!("CALL load_user_logins('{url}')"),
            ],
        );
        let batches = count(
            &mut c,
            &format!("SELECT batches FROM sqs_loader.load_runs WHERE queue_url = '{url}'"),
        );
        let begins = notices.matches("issuing BEGIN TRANSACTION").count() as i64;
        let prepares = notices.matches("issuing PREPARE TRANSACTION").count() as i64;
        let commits = notices.matches("issuing COMMIT PREPARED").count() as i64;
        assert!(
            begins >= 1 && prepares == begins && commits == begins,
            "every remote transaction prepared, then committed:\n{notices}"
        );
        assert!(
            begins <= 2 * batches,
            "at most one connection per worker and batch ({begins} for {batches} batches)"
        );
        assert!(!notices.contains("issuing COMMIT\n"), "no one-phase commit");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 41);
}

/// Load until every message is processed, then let Citus finish any two-phase commit a crash
/// left prepared, and check the exact end state with nothing left prepared on a worker.
fn drain_and_assert_exact(db: &str, url: &str, n: usize, valid: usize) {
    drain_until_done(db, url, n, Duration::from_secs(180));
    let mut c = connect(db);
    c.query("SELECT recover_prepared_transactions()", &[])
        .unwrap();
    for port in worker_ports() {
        let mut w = connect_worker(port, db);
        assert_eq!(
            count(&mut w, "SELECT count(*) FROM pg_prepared_xacts"),
            0,
            "prepared transactions left on worker {port}"
        );
    }
    assert_exact(&mut c, url, n, valid);
}

/// A queue of `n` messages (1 % malformed) for `db`, with short visibility timeouts and small
/// batches for runs that are cut: (url, valid count).
fn filled_queue(db: &CitusDb, tag: &str, n: usize) -> (String, usize) {
    let mut c = db.client();
    let url = create_queue(&mut c, &format!("citus-{tag}"));
    let (bodies, valid) = messages_with_rejects(n, tag);
    send(&mut c, &url, &bodies);
    c.batch_execute(&format!(
        "ALTER DATABASE {0} SET sqs_loader.visibility_timeout = 2; ALTER DATABASE {0} SET sqs_loader.batch_size = 50",
        db.name
    ))
    .unwrap();
    (url, valid)
}

#[test]
fn twenty_kills_of_the_loading_backend_lose_and_duplicate_nothing() {
    let db = CitusDb::new("kills");
    let (url, valid) = filled_queue(&db, "kills", 2000);
    // A SIGKILL restarts the coordinator; its prepared work on the workers is then committed
    // or rolled back by Citus's recovery.
    let k = kill_runs_at_random_points(&db.name, &url, 20);
    drain_and_assert_exact(&db.name, &url, 2000, valid);
    eprintln!(
        "kills: {} SIGKILL restarts, {} pg_terminate_backend, {} mid-run",
        k.restarts, k.terminates, k.mid_run
    );
    assert!(k.restarts >= 5, "enough SIGKILLs restarted the coordinator");
    assert!(
        k.mid_run >= 5,
        "enough kills landed mid-run ({})",
        k.mid_run
    );
}

#[test]
fn worker_restarts_mid_run_lose_and_duplicate_nothing() {
    let db = CitusDb::new("restart");
    let n = 3000;
    let (url, valid) = filled_queue(&db, "restart", n);
    let mut c = db.client();
    let mut failed = 0;
    for i in 0..4 {
        let (_pid, run) = spawn_load(&db.name, &url);
        let before = count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages");
        wait_for_progress(&mut c, before, Duration::from_secs(10));
        citus_sh(&["restart-worker", &(i % 2 + 1).to_string()]);
        if let Err(e) = run.join().unwrap() {
            failed += 1;
            eprintln!("run {i}: {e}");
        }
    }
    drop(c);
    drain_and_assert_exact(&db.name, &url, n, valid);
    assert!(failed >= 1, "a restart failed a run mid-way ({failed})");
}

#[test]
fn pg_cron_and_a_background_worker_load_from_the_coordinator() {
    // A background worker, in a database of its own.
    let db = CitusDb::new("worker");
    let mut c = db.client();
    let url = create_queue(&mut c, "citus-worker");
    send(&mut c, &url, &sample_messages());
    c.query_one(
        "SELECT sqs_loader.start_worker($1, wait_seconds => 1)",
        &[&url],
    )
    .unwrap();
    wait_until(Duration::from_secs(60), "the worker's rows", || {
        count(&mut c, "SELECT count(*) FROM user_logins") == 99
    });
    c.query_one("SELECT sqs_loader.stop_worker($1)", &[&url])
        .unwrap();
    assert_eq!(rows_per_worker(&mut c).values().sum::<i64>(), 99);

    // pg_cron, in the database it runs in (cron.database_name), by the minute (pg_cron 1.4).
    let e = env();
    let mut c = connect(&e.cron_db);
    let installed = count(
        &mut c,
        "SELECT count(*) FROM pg_extension WHERE extname = 'sqs_loader'",
    );
    if installed == 0 {
        c.batch_execute(&doc_block("the Citus recipe")).unwrap();
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            .unwrap();
        c.execute("SELECT set_rsa_public_key($1)", &[&db.public_key])
            .unwrap();
    }
    let url = create_queue(&mut c, "citus-cron");
    send(&mut c, &url, &sample_messages());
    let before = count(&mut c, "SELECT count(*) FROM user_logins");
    let job = format!("citus-load-{}", random_suffix());
    let jobid: i64 = c
        .query_one(
            "SELECT cron.schedule($1, '* * * * *', $2)",
            &[&job, &format!("CALL load_user_logins('{url}')")],
        )
        .unwrap()
        .get(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(Duration::from_secs(150), "the scheduled run", || {
            count(&mut c, "SELECT count(*) FROM user_logins") >= before + 99
        });
        wait_until(Duration::from_secs(60), "the job to succeed", || {
            count(
                &mut c,
                &format!("SELECT count(*) FROM cron.job_run_details WHERE jobid = {jobid} AND status = 'succeeded'"),
            ) >= 1
        });
    }));
    c.execute("SELECT cron.unschedule($1)", &[&job]).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert_eq!(
        rows_per_worker(&mut c).values().sum::<i64>(),
        count(&mut c, "SELECT count(*) FROM user_logins")
    );
}

#[test]
fn a_dump_of_the_coordinator_restores_with_the_documented_steps() {
    let db = CitusDb::new("dump");
    let mut c = db.client();
    let url = create_queue(&mut c, "citus-dump");
    send(&mut c, &url, &sample_messages());
    assert_eq!(load(&mut c, &url).loaded, 99);
    let (ip, token) = send_duplicate(&mut c, &url);
    let dump = std::env::temp_dir().join(format!("it-citus-{}.sql", random_suffix()));
    let ok = pg_client("pg_dump")
        .args(["-f", &dump.to_string_lossy(), &db.name])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg_dump");
    let text = std::fs::read_to_string(&dump).unwrap();
    // All rows of user_logins are in it (read from the shards), the vault too; the
    // distribution is not.
    let rows = text
        .split("COPY public.user_logins ")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| *l != "\\.")
        .count();
    assert_eq!(rows, 100);
    assert!(text.contains("COPY sqs_loader.vault "));
    assert!(!text.contains("create_distributed_table"));

    let restored = CitusDb::bare("restored");
    let out = pg_client("psql")
        .args(["-X", "-q", "-d", &restored.name, "-v", "ON_ERROR_STOP=1"])
        .arg("-f")
        .arg(&dump)
        .env("PGOPTIONS", "-c citus.enable_ddl_propagation=off")
        .output()
        .unwrap();
    std::fs::remove_file(&dump).unwrap();
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = restored.client();
    assert_eq!(
        count(
            &mut r,
            "SELECT count(*) FROM citus_tables WHERE table_name = 'user_logins'::regclass"
        ),
        0,
        "restored as a local table"
    );
    r.batch_execute(&doc_block("the Citus restore")).unwrap();
    assert_eq!(rows_per_worker(&mut r).values().sum::<i64>(), 100);
    assert_eq!(count(&mut r, "SELECT count(*) FROM user_logins"), 100);
    let value: String = r
        .query_one("SELECT unmask_pii($1, $2)", &[&token, &db.private_key])
        .unwrap()
        .get(0);
    assert_eq!(value, ip);
    // And it loads on, from the same bookkeeping: the old messages are known.
    let url2 = create_queue(&mut r, "citus-restored");
    send(&mut r, &url2, &sample_messages()[..10]);
    let run = load(&mut r, &url2);
    assert_eq!(run.received, 10);
    assert_eq!(
        run.loaded + run.rejected,
        10,
        "new message ids load: {run:?}"
    );
}
