//! Harness for the client-side integration tests: a throwaway PostgreSQL cluster (15 or 18) with
//! sqs_loader installed and pg_cron preloaded, and local SQS emulators, all on 127.0.0.1.
//! `scripts/test.sh` starts them and passes their coordinates in SQS_LOADER_IT_* variables.
//!
//! Each test gets its own database (and its own queues), so tests run in parallel. Tests that
//! restart or crash the server take the exclusive side of [`cluster_lock`].

use postgres::{Client, NoTls};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub struct Env {
    pub pgport: u16,
    /// A second cluster without sqs_loader in shared_preload_libraries.
    pub bare_pgport: u16,
    /// The PostgreSQL major the cluster runs (15 or 18).
    pub pg_major: u32,
    pub pgbin: String,
    pub pgdata: String,
    pub pg_os_user: String,
    pub cron_db: String,
    /// The cluster's name for scripts/pg.sh, and its server environment.
    pub cluster: String,
    pub server_env: String,
    pub localstack: String,
    pub moto: String,
    pub moto_key: String,
    pub moto_secret: String,
    /// STS temporary credentials (with a session token) for the same moto user.
    pub moto_temp: (String, String, String),
    pub root: String,
    /// Where scripts/ keep their state ($RUN_DIR), e.g. the upgrade fixture's key.
    pub run_dir: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through `make test` (scripts/test.sh)")
    })
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // The Citus suite (scripts/test_citus.sh) runs without moto: no credentials file.
        let creds = std::env::var("SQS_LOADER_IT_MOTO_CREDENTIALS")
            .ok()
            .map(|f| std::fs::read_to_string(f).expect("moto credentials file"));
        let get = |k: &str| match &creds {
            Some(creds) => creds
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing in moto credentials"))
                .to_string(),
            None => String::new(),
        };
        Env {
            pgport: var("SQS_LOADER_IT_PGPORT").parse().unwrap(),
            bare_pgport: var("SQS_LOADER_IT_BARE_PGPORT").parse().unwrap(),
            pg_major: var("SQS_LOADER_IT_PG_MAJOR").parse().unwrap(),
            pgbin: var("SQS_LOADER_IT_PGBIN"),
            pgdata: var("SQS_LOADER_IT_PGDATA"),
            pg_os_user: var("SQS_LOADER_IT_PG_OS_USER"),
            cron_db: var("SQS_LOADER_IT_CRON_DB"),
            cluster: var("SQS_LOADER_IT_CLUSTER"),
            server_env: var("SQS_LOADER_IT_PG_SERVER_ENV"),
            localstack: var("SQS_LOADER_IT_LOCALSTACK"),
            moto: var("SQS_LOADER_IT_MOTO"),
            moto_key: get("MOTO_ACCESS_KEY_ID"),
            moto_secret: get("MOTO_SECRET_ACCESS_KEY"),
            moto_temp: (
                get("MOTO_TEMP_ACCESS_KEY_ID"),
                get("MOTO_TEMP_SECRET_ACCESS_KEY"),
                get("MOTO_TEMP_SESSION_TOKEN"),
            ),
            root: var("SQS_LOADER_IT_ROOT"),
            run_dir: var("SQS_LOADER_IT_RUN_DIR"),
        }
    })
}

/// Shared by ordinary tests; exclusive for tests that stop or crash the server.
pub fn cluster_lock() -> &'static RwLock<()> {
    static L: RwLock<()> = RwLock::new(());
    &L
}

pub fn shared() -> RwLockReadGuard<'static, ()> {
    cluster_lock().read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    cluster_lock().write().unwrap_or_else(|e| e.into_inner())
}

pub fn connect(db: &str) -> Client {
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db} application_name=sqs_loader_it",
        env().pgport
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::connect(&conn, NoTls) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot connect to {db}: {e}"),
        }
    }
}

/// A connection to the cluster without sqs_loader preloaded, as postgres.
pub fn connect_bare(db: &str) -> Client {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} application_name=sqs_loader_it",
            env().bare_pgport
        ),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("cannot connect to {db} on the bare cluster: {e}"))
}

/// A connection as another role (trust authentication on 127.0.0.1).
pub fn connect_as(db: &str, user: &str) -> Client {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={} user={user} dbname={db} application_name=sqs_loader_it",
            env().pgport
        ),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("cannot connect to {db} as {user}: {e}"))
}

/// The cluster's server log, all of it.
pub fn server_log() -> String {
    let log = format!("{}/pg-{}/server.log", env().run_dir, env().cluster);
    std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log}: {e}"))
}

/// What the server logs each time it is ready, after a start or a crash recovery.
pub const READY: &str = "database system is ready to accept connections";

/// SIGKILL a server process and, if that made the postmaster restart every process (it logs
/// that the pid "was terminated by signal 9"), wait until its crash recovery is over (the log
/// says "ready" once more): a connection made before the postmaster noticed the kill would be
/// cut by the restart. A process that had already exited causes no restart. True when it did.
pub fn sigkill_and_wait_for_recovery(pid: i32) -> bool {
    let ready = server_log().matches(READY).count();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let crash_line = format!("(PID {pid}) was terminated by signal 9");
    let start = Instant::now();
    let mut crashed = false;
    wait_until(Duration::from_secs(60), "crash recovery", || {
        let log = server_log();
        crashed = log.contains(&crash_line);
        if crashed {
            log.matches(READY).count() > ready
        } else {
            // The postmaster reaps a killed child at once; none of its lines after 2 s means
            // the process was gone already.
            start.elapsed() > Duration::from_secs(2)
        }
    });
    crashed
}

pub fn random_suffix() -> String {
    format!("{:08x}", getrandom::u32().unwrap())
}

/// A database of its own with the extension created, an RSA key installed, and the cluster's
/// LocalStack as endpoint for queue creation. Dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub private_key: String,
}

impl TestDb {
    pub fn new(prefix: &str) -> TestDb {
        let name = format!("it_{prefix}_{}", random_suffix());
        Self::create(&name);
        let mut c = connect(&name);
        c.batch_execute("CREATE EXTENSION sqs_loader").unwrap();
        let (private, public) = keypair();
        c.execute("SELECT set_rsa_public_key($1)", &[&public])
            .unwrap();
        // Short visibility timeouts make redelivery quick to observe. Every run loads at once
        // (no cap on runs per queue): the tests of concurrent consumers mean concurrent
        // consumers; the cap has a test of its own (workers.rs).
        c.batch_execute(&format!(
            "ALTER DATABASE {name} SET sqs_loader.visibility_timeout = 5;
             ALTER DATABASE {name} SET sqs_loader.max_runs_per_queue = 0"
        ))
        .unwrap();
        TestDb {
            name,
            private_key: private,
        }
    }

    pub fn create(name: &str) {
        let mut admin = connect("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
    }

    pub fn client(&self) -> Client {
        connect(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Kept as it is, but its background workers (if any) stop.
            if let Ok(mut c) = Client::connect(
                &format!(
                    "host=127.0.0.1 port={} user=postgres dbname={}",
                    env().pgport,
                    self.name
                ),
                NoTls,
            ) {
                let _ = c.batch_execute(
                    "DO $$ BEGIN IF to_regclass('sqs_loader.workers') IS NOT NULL THEN DELETE FROM sqs_loader.workers; END IF; END $$",
                );
            }
            eprintln!(
                "keeping database {} for inspection (its workers stopped)",
                self.name
            );
            return;
        }
        if let Ok(mut admin) = Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                env().pgport
            ),
            NoTls,
        ) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh RSA key pair (PKCS#8 private, SPKI public) made with openssl.
pub fn keypair() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("sqs_loader_it_key_{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl failed");
    let out = (
        std::fs::read_to_string(&private).unwrap(),
        std::fs::read_to_string(&public).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// Create a queue on LocalStack through the extension; returns its URL.
pub fn create_queue(c: &mut Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", random_suffix());
    c.batch_execute(&format!("SET sqs_loader.endpoint = '{}'", env().localstack))
        .unwrap();
    let url: String = c
        .query_one("SELECT sqs_create_queue($1)", &[&name])
        .unwrap()
        .get(0);
    c.batch_execute("RESET sqs_loader.endpoint").unwrap();
    url
}

/// Send bodies through the extension (asserting they were all sent).
pub fn send(c: &mut Client, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(5000) {
        let n: i32 = c
            .query_one("SELECT sqs_send($1, $2)", &[&url, &chunk])
            .unwrap()
            .get(0);
        assert_eq!(n as usize, chunk.len(), "sqs_send");
    }
}

pub fn sample_messages() -> Vec<String> {
    std::fs::read_to_string(format!("{}/data/sample_login_messages.jsonl", env().root))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Valid login events with distinct user ids (and IPs drawn from `ip_space` addresses).
pub fn login_events(n: usize, tag: &str, ip_space: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ip = i % ip_space.max(1);
            format!(
                r#"{{"user_id":"{tag}-{i}","app_version":"2.{}.{}","device_type":"ios","ip":"10.{}.{}.{}","locale":"RU","device_id":"{:03}-{:02}-{:04}"}}"#,
                i % 10,
                i % 7,
                (ip >> 16) & 255,
                (ip >> 8) & 255,
                ip & 255,
                i % 1000,
                i % 100,
                i % 10_000
            )
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCounts {
    pub received: i64,
    pub loaded: i64,
    pub rejected: i64,
    pub skipped: i64,
}

/// CALL load_user_logins(url) and return its counts.
pub fn load(c: &mut Client, url: &str) -> RunCounts {
    let r = c.query_one("CALL load_user_logins($1)", &[&url]).unwrap();
    RunCounts {
        received: r.get(0),
        loaded: r.get(1),
        rejected: r.get(2),
        skipped: r.get(3),
    }
}

/// A session on `db` whose NOTICEs (and other notices) are collected, in order.
pub fn connect_with_notices(db: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let n2 = notices.clone();
    let mut config: postgres::Config = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        env().pgport
    )
    .parse()
    .unwrap();
    config.notice_callback(move |n| n2.lock().unwrap().push(n.message().to_string()));
    (config.connect(NoTls).unwrap(), notices)
}

pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Messages visible + in flight in a queue.
pub fn queue_depth(c: &mut Client, url: &str) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT (a->>'ApproximateNumberOfMessages')::bigint, (a->>'ApproximateNumberOfMessagesNotVisible')::bigint
               FROM sqs_queue_attributes($1) a",
            &[&url],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// A command run as the cluster's OS user.
pub fn as_pg_user(program: &str) -> std::process::Command {
    let e = env();
    let me = std::env::var("USER").unwrap_or_default();
    if me == e.pg_os_user {
        std::process::Command::new(program)
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-n", "-u", &e.pg_os_user, "--", program]);
        c
    }
}

/// A PostgreSQL client program of the cluster's major (psql, pg_dump, pg_restore) connecting
/// to the cluster as postgres; add the database and the rest.
pub fn pg_client(program: &str) -> std::process::Command {
    let e = env();
    let mut c = std::process::Command::new(format!("{}/{program}", e.pgbin));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &e.pgport.to_string(),
        "-U",
        "postgres",
    ]);
    c
}

/// Run pg_ctl as the cluster's OS user.
pub fn pg_ctl(args: &[&str]) {
    let e = env();
    let status = as_pg_user(&format!("{}/pg_ctl", e.pgbin))
        .args(["-D", &e.pgdata])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {args:?}");
}

/// Stop the cluster (`mode`: fast or immediate) and start it again as scripts/test.sh did.
pub fn restart_cluster(mode: &str) {
    let e = env();
    pg_ctl(&["-m", mode, "-w", "stop"]);
    let ok = std::process::Command::new("bash")
        .arg(format!("{}/scripts/pg.sh", e.root))
        .args(["start", &e.cluster, &e.pgport.to_string(), &e.cron_db])
        .env("PG_SERVER_ENV", &e.server_env)
        .env("PG", e.pg_major.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "restarting the cluster");
}

/// Wait until `f` returns true, polling; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a [`FaultProxy`] did, by kind.
#[derive(Default, Debug)]
pub struct FaultStats {
    pub forwarded: std::sync::atomic::AtomicUsize,
    pub http_500: std::sync::atomic::AtomicUsize,
    pub http_503: std::sync::atomic::AtomicUsize,
    pub throttled: std::sync::atomic::AtomicUsize,
    pub dropped: std::sync::atomic::AtomicUsize,
    pub stalled: std::sync::atomic::AtomicUsize,
}

/// An HTTP proxy on 127.0.0.1 in front of an SQS endpoint that fails `fault_percent` % of the
/// requests: HTTP 500, HTTP 503, throttling (400 ThrottlingException), a dropped connection, or
/// a stall (holds the request for `stall`, then drops it) — in equal shares. Which requests fail
/// is a fixed schedule, not a dice roll: request n fails when (n × percent) mod 100 < percent
/// (evenly spread), and the failing ones take the five kinds in turn, so every kind occurs
/// once enough requests went through; at 100 % every request fails.
pub struct FaultProxy {
    pub url: String,
    pub stats: std::sync::Arc<FaultStats>,
    pub fault_percent: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Every request of this SQS action (e.g. "DeleteMessageBatch") is refused with HTTP 400
    /// AccessDenied, whatever the schedule says.
    pub refuse_action: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Every request stalls (an endpoint that hangs), whatever the schedule says.
    pub stall_all: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

pub fn fault_proxy(upstream: &str, fault_percent: u32, stall: Duration) -> FaultProxy {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(FaultStats::default());
    let percent = Arc::new(AtomicU32::new(fault_percent));
    let (st, pc) = (stats.clone(), percent.clone());
    let refuse = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let refuse_in = refuse.clone();
    let stall_all = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stall_all_in = stall_all.clone();
    let sequence = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fault_turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (st, pc, upstream) = (st.clone(), pc.clone(), upstream.clone());
            let refuse = refuse_in.clone();
            let stall_all = stall_all_in.clone();
            let (seq, faults) = (sequence.clone(), fault_turn.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut head = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("connection:") {
                        continue;
                    }
                    if line == "\r\n" {
                        head.extend_from_slice(b"connection: close\r\n\r\n");
                        break;
                    }
                    head.extend_from_slice(line.as_bytes());
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let refused = refuse.lock().unwrap().clone().is_some_and(|a| {
                    String::from_utf8_lossy(&head)
                        .to_ascii_lowercase()
                        .contains(&format!("amazonsqs.{}", a.to_ascii_lowercase()))
                });
                if refused {
                    let body = r#"{"__type":"AccessDenied","message":"Access to the resource is denied (injected)"}"#;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                if stall_all.load(Ordering::SeqCst) {
                    st.stalled.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(stall);
                    return;
                }
                let n = seq.fetch_add(1, Ordering::SeqCst);
                let p = pc.load(Ordering::SeqCst) as usize;
                // `roll` lands in the fifth of [0, p) of the kind whose turn it is, or past p.
                let roll = if (n * p) % 100 < p {
                    let kind = faults.fetch_add(1, Ordering::SeqCst) % 5;
                    (kind as f64 + 0.5) * p as f64 / 5.0
                } else {
                    100.0
                };
                let p = p as f64;
                let reply = |conn: &mut std::net::TcpStream, status: &str, body: &str| {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                };
                if roll < p / 5.0 {
                    st.http_500.fetch_add(1, Ordering::SeqCst);
                    reply(
                        &mut conn,
                        "500 Internal Server Error",
                        r#"{"__type":"InternalError","message":"injected fault"}"#,
                    );
                } else if roll < 2.0 * p / 5.0 {
                    st.http_503.fetch_add(1, Ordering::SeqCst);
                    reply(
                        &mut conn,
                        "503 Service Unavailable",
                        r#"{"__type":"ServiceUnavailable","message":"injected fault"}"#,
                    );
                } else if roll < 3.0 * p / 5.0 {
                    st.throttled.fetch_add(1, Ordering::SeqCst);
                    reply(
                        &mut conn,
                        "400 Bad Request",
                        r#"{"__type":"ThrottlingException","message":"Rate exceeded (injected)"}"#,
                    );
                } else if roll < 4.0 * p / 5.0 {
                    st.dropped.fetch_add(1, Ordering::SeqCst);
                } else if roll < p {
                    st.stalled.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(stall);
                } else {
                    st.forwarded.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    if up
                        .write_all(&head)
                        .and_then(|_| up.write_all(&body))
                        .is_err()
                    {
                        return;
                    }
                    let mut resp = Vec::new();
                    let _ = up.read_to_end(&mut resp);
                    let _ = conn.write_all(&resp);
                }
            });
        }
    });
    FaultProxy {
        url,
        stats,
        fault_percent: percent,
        refuse_action: refuse,
        stall_all,
    }
}

/// One SNS API call (query protocol) on LocalStack, through curl: LocalStack routes it by the
/// service in the credential scope and does not check the signature. Returns the response XML.
pub fn sns_call(region: &str, params: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "-m", "30", &env().localstack, "-H"])
        .arg(format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=test/20261201/{region}/sns/aws4_request, SignedHeaders=host, Signature=00"
        ))
        .args(["--data-urlencode", "Version=2010-03-31"]);
    for (k, v) in params {
        cmd.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let out = cmd.output().expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "SNS {params:?}: {body}");
    body
}

/// The text of the first `<tag>` of an XML document.
pub fn xml_tag(xml: &str, tag: &str) -> String {
    let start = xml
        .find(&format!("<{tag}>"))
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + tag.len()
        + 2;
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_string()
}

/// `CALL load_user_logins(url)` on a connection of its own, in a thread: the backend's pid (once
/// connected, e.g. to kill it) and the thread, whose result is the CALL's.
pub fn spawn_load(
    db: &str,
    url: &str,
) -> (i32, std::thread::JoinHandle<Result<(), postgres::Error>>) {
    let (db, url) = (db.to_string(), url.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    let run = std::thread::spawn(move || {
        let mut c = connect(&db);
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        tx.send(pid).unwrap();
        c.query_one("CALL load_user_logins($1)", &[&url])
            .map(|_| ())
    });
    (rx.recv().expect("the loader connected"), run)
}

/// Read one HTTP/1.1 request from `r`: its header lines (request line first, without CRLF) and
/// its body (content-length bytes). None when the peer closed first. A server that answers
/// before it has read the whole request makes the client's kernel see a reset, not the answer.
pub fn read_request(r: &mut impl std::io::BufRead) -> Option<(Vec<String>, Vec<u8>)> {
    let mut lines = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        lines.push(line);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((lines, body))
}

// ---------------------------------------------------------------- fault tests (faults.rs, citus.rs)

/// `n` login events with distinct user ids, 1 % of them malformed: (bodies, valid count).
pub fn messages_with_rejects(n: usize, tag: &str) -> (Vec<String>, usize) {
    let mut bodies = login_events(n, tag, n / 3);
    let mut malformed = 0;
    for (i, b) in bodies.iter_mut().enumerate() {
        if i % 100 == 99 {
            *b = format!(r#"{{"foo": "oops_wrong_msg_type", "bar": "{tag}-{i}"}}"#);
            malformed += 1;
        }
    }
    (bodies, n - malformed)
}

/// The exact end state, once every message has been processed: each of the `valid` messages
/// loaded once, each malformed one rejected once, the queue empty.
pub fn assert_exact(c: &mut Client, url: &str, n: usize, valid: usize) {
    assert_eq!(
        count(c, "SELECT count(*) FROM user_logins") as usize,
        valid,
        "each valid message loaded"
    );
    assert_eq!(
        count(c, "SELECT count(DISTINCT user_id) FROM user_logins") as usize,
        valid,
        "none twice"
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM sqs_loader.rejected_messages") as usize,
        n - valid,
        "each malformed one rejected"
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM sqs_loader.processed_messages") as usize,
        n
    );
    assert_eq!(queue_depth(c, url), (0, 0), "queue empty");
}

/// Run loads until every message is processed (redeliveries wait out their visibility timeout).
pub fn drain_until_done(db: &str, url: &str, n: usize, timeout: Duration) {
    let mut c = connect(db);
    wait_until(timeout, "every message processed", || {
        let _ = c.query("CALL load_user_logins($1)", &[&url]);
        count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages") as usize >= n
            && queue_depth(&mut c, url) == (0, 0)
    });
}

/// Whether the server accepts a connection to `db` now (no retries).
pub fn server_is_up(db: &str) -> bool {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            env().pgport
        ),
        NoTls,
    )
    .and_then(|mut c| c.simple_query("SELECT 1"))
    .is_ok()
}

/// Poll until sqs_loader.processed_messages holds more than `before` rows, or `timeout`.
pub fn wait_for_progress(c: &mut Client, before: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline
        && count(c, "SELECT count(*) FROM sqs_loader.processed_messages") == before
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What [`kill_runs_at_random_points`] did.
pub struct Kills {
    /// SIGKILLs sent, and how many of them made the postmaster restart every process.
    pub sigkills: usize,
    pub restarts: usize,
    pub terminates: usize,
    /// Kills of a run that had committed batches and then failed.
    pub mid_run: usize,
}

/// `kills` runs of `CALL load_user_logins(url)` in `db`, each killed at a random point of the
/// run: before, during or between batches, every other one only once the run has committed a
/// batch (so that enough land mid-run whatever the timing). Even ones by SIGKILL (waiting for
/// the crash recovery it causes), odd ones by pg_terminate_backend.
pub fn kill_runs_at_random_points(db: &str, url: &str, kills: usize) -> Kills {
    let processed = |c: &mut Client| count(c, "SELECT count(*) FROM sqs_loader.processed_messages");
    let mut k = Kills {
        sigkills: 0,
        restarts: 0,
        terminates: 0,
        mid_run: 0,
    };
    for i in 0..kills {
        let (pid, run) = spawn_load(db, url);
        let mut admin = connect(db);
        let before = processed(&mut admin);
        if i % 4 < 2 {
            wait_for_progress(&mut admin, before, Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_millis(
            (getrandom::u32().unwrap() % 200) as u64,
        ));
        if i % 2 == 0 {
            // The server goes through crash recovery: wait for it to be over (its log says
            // "ready" once more) before connecting; a connection made before the postmaster
            // noticed the kill would be cut by the restart.
            k.restarts += sigkill_and_wait_for_recovery(pid) as usize;
            k.sigkills += 1;
        } else {
            // (::integer: Citus adds a bigint overload.)
            admin
                .execute("SELECT pg_terminate_backend($1::integer)", &[&pid])
                .unwrap();
            k.terminates += 1;
        }
        drop(admin);
        let result = run.join().unwrap();
        wait_until(
            Duration::from_secs(60),
            "the server to accept connections",
            || server_is_up(db),
        );
        let mut admin = connect(db);
        if result.is_err() && processed(&mut admin) > before {
            k.mid_run += 1;
        }
    }
    k
}
