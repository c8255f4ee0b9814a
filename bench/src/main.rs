//! `make bench`: every figure is a ratio measured in the same run on the same machine.
//!
//! 1. drain: messages/s draining a freshly filled queue — a bare receive+delete client (the
//!    ceiling, no database) at 1/4/16 parallel requests, load_user_logins() (one run, two and four
//!    concurrent runs) and a Python reference loader — against fauxqs and LocalStack;
//! 2. mask: inserting pre-received rows unmasked, through sqs_loader's masking, and through a
//!    pgcrypto-only equivalent; plus issue #3's figure: 100,000 distinct values through
//!    mask_pii_batch and through mask_pii one by one;
//! 3. memory: the loading backend's RSS during a 1,000,000-message load.
//!
//! Configuration comes from the environment (set by scripts/bench.sh). Prints tables (median of
//! the runs, with min–max) and writes them, with the raw samples, to bench/results/.

use postgres::{Client, NoTls};
use sqs_loader::sqs::credentials::Credentials;
use sqs_loader::sqs::endpoint::{self, Endpoint};
use sqs_loader::sqs::http::{self, CallOptions};
use sqs_loader::sqs::{Protocol, Request, Response};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `make bench`"))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ------------------------------------------------------------------ messages

/// xorshift64*: reproducible pseudo-random messages.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VERSIONS: &[&str] = &[
    "2.3.0", "0.96", "2.00", "0.2.6", "1.7", "3.1.4", "0.26", "2.6", "4.0.12", "1.21",
];
const LOCALES: &[&str] = &["RU", "PH", "US", "BR", "CN", "ID", "KE", "UA", "DE", "JP"];

/// `n` sample-shaped bodies: about 10 % reuse an earlier IP, 1 % are the original malformed
/// message, 29 % of the valid ones have a null locale. Returns the bodies and how many are valid.
fn messages(n: usize, seed: u64) -> (Vec<String>, usize) {
    let mut r = Rng(seed | 1);
    let mut ips: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(n);
    let mut valid = 0;
    for i in 0..n {
        if r.below(100) == 0 {
            out.push(r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#.to_string());
            continue;
        }
        let ip = if !ips.is_empty() && r.below(10) == 0 {
            ips[r.below(ips.len() as u64) as usize].clone()
        } else {
            let ip = format!(
                "{}.{}.{}.{}",
                1 + r.below(223),
                r.below(256),
                r.below(256),
                r.below(256)
            );
            ips.push(ip.clone());
            ip
        };
        let locale = if r.below(100) < 29 {
            "null".to_string()
        } else {
            format!("\"{}\"", LOCALES[r.below(LOCALES.len() as u64) as usize])
        };
        out.push(format!(
            r#"{{"user_id": "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", "app_version": "{}", "device_type": "{}", "ip": "{ip}", "locale": {locale}, "device_id": "{:03}-{:02}-{:04}"}}"#,
            r.next() as u32,
            i as u16,
            r.below(4096),
            r.below(65536),
            r.next() & 0xffff_ffff_ffff,
            VERSIONS[r.below(VERSIONS.len() as u64) as usize],
            if r.below(2) == 0 { "ios" } else { "android" },
            r.below(1000),
            r.below(100),
            r.below(10_000)
        ));
        valid += 1;
    }
    (out, valid)
}

// ------------------------------------------------------------------ SQS (the extension's plain-Rust client)

#[derive(Clone)]
struct Sqs {
    base: String,
    ep: Endpoint,
    creds: Credentials,
    agent: ureq::Agent,
}

impl Sqs {
    fn new(base: &str) -> Sqs {
        Sqs {
            base: base.to_string(),
            ep: endpoint::for_service(Some(base), None, "us-east-1").unwrap(),
            creds: Credentials {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
                session_token: None,
                expires_at: None,
                provider: "bench",
            },
            agent: http::agent(),
        }
    }

    fn call(&self, req: Request) -> Response {
        let opts = CallOptions {
            protocol: Protocol::Json,
            timeout: Duration::from_secs(30),
            max_retries: 5,
        };
        http::call(&self.agent, &self.ep, &self.creds, &req, &opts)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn create(&self, name: &str) -> String {
        match self.call(Request::CreateQueue {
            name: name.into(),
            attributes: Default::default(),
        }) {
            Response::QueueUrl(u) => u,
            r => panic!("{r:?}"),
        }
    }

    fn depth(&self, url: &str) -> (usize, usize) {
        match self.call(Request::GetAttributes {
            queue_url: url.into(),
        }) {
            Response::Attributes(a) => {
                let g = |k: &str| a.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                (
                    g("ApproximateNumberOfMessages"),
                    g("ApproximateNumberOfMessagesNotVisible"),
                )
            }
            r => panic!("{r:?}"),
        }
    }

    fn fill(&self, url: &str, bodies: &[String]) {
        let chunks: Vec<Vec<(String, String)>> = bodies
            .chunks(10)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .map(|(i, b)| (i.to_string(), b.clone()))
                    .collect()
            })
            .collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(entries) = chunks.get(i) else { break };
                    match self.call(Request::SendBatch {
                        queue_url: url.into(),
                        entries: entries.clone(),
                    }) {
                        Response::Batch { failed, .. } => assert!(failed.is_empty(), "{failed:?}"),
                        r => panic!("{r:?}"),
                    }
                });
            }
        });
        let want = bodies.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.depth(url).0 < want {
            assert!(Instant::now() < deadline, "queue not filled");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send without waiting for the queue to show the messages.
    fn fill_no_wait(&self, url: &str, bodies: &[String]) {
        for chunk in bodies.chunks(1000) {
            let entries: Vec<Vec<(String, String)>> = chunk
                .chunks(10)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .map(|(i, b)| (i.to_string(), b.clone()))
                        .collect()
                })
                .collect();
            std::thread::scope(|s| {
                for e in entries.chunks(25) {
                    s.spawn(move || {
                        for entries in e {
                            self.call(Request::SendBatch {
                                queue_url: url.into(),
                                entries: entries.clone(),
                            });
                        }
                    });
                }
            });
        }
    }

    /// The ceiling: `threads` clients each receiving 10 and deleting them in a batch, no database.
    fn bare_drain(&self, url: &str, n: usize, threads: usize) -> Duration {
        let deleted = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while deleted.load(Ordering::SeqCst) < n {
                        let req = Request::Receive {
                            queue_url: url.into(),
                            max_messages: 10,
                            visibility_timeout: Some(120),
                            wait_seconds: 0,
                        };
                        let Response::Received(msgs) = self.call(req) else {
                            panic!()
                        };
                        if msgs.is_empty() {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        let entries = msgs
                            .iter()
                            .enumerate()
                            .map(|(i, m)| (i.to_string(), m.receipt_handle.clone()))
                            .collect();
                        let Response::Batch { successful, .. } = self.call(Request::DeleteBatch {
                            queue_url: url.into(),
                            entries,
                        }) else {
                            panic!()
                        };
                        deleted.fetch_add(successful.len(), Ordering::SeqCst);
                    }
                });
            }
        });
        start.elapsed()
    }
}

// ------------------------------------------------------------------ results

#[derive(Default)]
struct Table {
    rows: Vec<(String, String, Vec<f64>, String)>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{:.0}", x)
    } else {
        format!("{x:.2}")
    }
}

impl Table {
    fn add(&mut self, name: &str, unit: &str, samples: Vec<f64>, note: String) {
        println!(
            "  {name}: median {} {unit} (min {} – max {}) {note}",
            fmt_rate(median(&samples)),
            fmt_rate(samples.iter().cloned().fold(f64::MAX, f64::min)),
            fmt_rate(samples.iter().cloned().fold(f64::MIN, f64::max))
        );
        self.rows.push((name.into(), unit.into(), samples, note));
    }

    fn median_of(&self, name: &str) -> f64 {
        median(
            &self
                .rows
                .iter()
                .find(|r| r.0 == name)
                .unwrap_or_else(|| panic!("no row {name}"))
                .2,
        )
    }

    fn render(&self, title: &str) -> String {
        let mut s = format!("\n### {title}\n\n| measurement | median | min – max | runs | |\n|---|---:|---:|---:|---|\n");
        for (name, unit, v, note) in &self.rows {
            let _ = writeln!(
                s,
                "| {name} | {} {unit} | {} – {} | {} | {note} |",
                fmt_rate(median(v)),
                fmt_rate(v.iter().cloned().fold(f64::MAX, f64::min)),
                fmt_rate(v.iter().cloned().fold(f64::MIN, f64::max)),
                v.len()
            );
        }
        s
    }
}

// ------------------------------------------------------------------ database

fn connect(db: &str) -> Client {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} application_name=bench",
            env("BENCH_PGPORT")
        ),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("connect {db}: {e}"))
}

fn reset_tables(c: &mut Client) {
    c.batch_execute(
        "TRUNCATE user_logins; TRUNCATE sqs_loader.vault, sqs_loader.processed_messages, sqs_loader.rejected_messages, sqs_loader.load_runs;",
    )
    .unwrap();
}

fn setup_db() {
    let mut admin = connect("postgres");
    admin
        .batch_execute("DROP DATABASE IF EXISTS bench WITH (FORCE)")
        .unwrap();
    admin.batch_execute("CREATE DATABASE bench").unwrap();
    let mut c = connect("bench");
    c.batch_execute("CREATE EXTENSION sqs_loader; CREATE EXTENSION pgcrypto;")
        .unwrap();
    let public = std::fs::read_to_string(format!("{}/public_key.pem", env("BENCH_KEYS"))).unwrap();
    c.execute("SELECT set_rsa_public_key($1)", &[&public])
        .unwrap();
}

// ------------------------------------------------------------------ 1. drain

#[derive(Clone, Copy)]
enum Drainer {
    Bare(usize),
    Loader { runs: usize, parallel: usize },
    Python,
}

fn drain_once(sqs: &Sqs, d: Drainer, n: usize, seed: u64) -> f64 {
    let (bodies, valid) = messages(n, seed);
    let name = format!("bench-{}-{seed:x}", std::process::id());
    let url = sqs.create(&name);
    sqs.fill(&url, &bodies);
    let mut c = connect("bench");
    reset_tables(&mut c);
    let took = match d {
        Drainer::Bare(k) => sqs.bare_drain(&url, n, k),
        Drainer::Loader { runs, parallel } => {
            let barrier = Arc::new(Barrier::new(runs));
            let start = Instant::now();
            let handles: Vec<_> = (0..runs)
                .map(|_| {
                    let (url, barrier, base) = (url.clone(), barrier.clone(), sqs.base.clone());
                    std::thread::spawn(move || {
                        let mut c = connect("bench");
                        // Emulators name queues after hosts that need not resolve: send to the emulator.
                        c.batch_execute(&format!(
                            "SET sqs_loader.max_parallel_requests = {parallel}; SET sqs_loader.wait_seconds = 0;
                             SET sqs_loader.max_seconds = 3600; SET sqs_loader.visibility_timeout = 300;
                             SET sqs_loader.endpoint = '{base}';"
                        ))
                        .unwrap();
                        barrier.wait();
                        c.query_one("CALL load_user_logins($1)", &[&url]).unwrap();
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let took = start.elapsed();
            let rows: i64 = c
                .query_one("SELECT count(*) FROM user_logins", &[])
                .unwrap()
                .get(0);
            let rejected: i64 = c
                .query_one("SELECT count(*) FROM sqs_loader.rejected_messages", &[])
                .unwrap()
                .get(0);
            assert_eq!(
                (rows as usize, rejected as usize),
                (valid, n - valid),
                "the load is exact"
            );
            took
        }
        Drainer::Python => {
            let out =
                std::process::Command::new(format!("{}/pyref/bin/python", env("BENCH_TOOLS")))
                    .arg(format!("{}/bench/reference_loader.py", env("BENCH_ROOT")))
                    .args(["--endpoint", &sqs.base, "--queue-url", &url, "--public-key"])
                    .arg(format!("{}/public_key.pem", env("BENCH_KEYS")))
                    .arg("--dsn")
                    .arg(format!(
                        "host=127.0.0.1 port={} user=postgres dbname=bench",
                        env("BENCH_PGPORT")
                    ))
                    .output()
                    .unwrap();
            assert!(
                out.status.success(),
                "reference loader: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            let rows: i64 = c
                .query_one("SELECT count(*) FROM user_logins", &[])
                .unwrap()
                .get(0);
            assert_eq!(
                rows as usize, valid,
                "the reference loader loaded every valid message"
            );
            Duration::from_secs_f64(secs)
        }
    };
    assert_eq!(sqs.depth(&url), (0, 0), "queue drained");
    n as f64 / took.as_secs_f64()
}

fn drain(sqs: &Sqs, label: &str, n: usize, n_python: usize, runs: usize, full: bool) -> String {
    println!("\n== drain on {label}: {n} messages per run ({n_python} for the Python loader), {runs} runs each");
    let mut t = Table::default();
    let mut seed = 0x5eed_0000_u64 + label.len() as u64 * 1000;
    let mut measure = |t: &mut Table, name: &str, d: Drainer, n: usize, note: String| {
        let v: Vec<f64> = (0..runs)
            .map(|_| {
                seed += 1;
                drain_once(sqs, d, n, seed)
            })
            .collect();
        t.add(name, "msg/s", v, note);
    };
    let bare: &[usize] = if full { &[1, 4, 16] } else { &[1, 4] };
    for &k in bare {
        measure(
            &mut t,
            &format!("bare client, {k} parallel"),
            Drainer::Bare(k),
            n,
            "ceiling: receive 10 + delete batch, no database".into(),
        );
    }
    measure(
        &mut t,
        "load_user_logins(), 1 run, 4 parallel",
        Drainer::Loader {
            runs: 1,
            parallel: 4,
        },
        n,
        String::new(),
    );
    if full {
        measure(
            &mut t,
            "load_user_logins(), 1 run, 16 parallel",
            Drainer::Loader {
                runs: 1,
                parallel: 16,
            },
            n,
            String::new(),
        );
        measure(
            &mut t,
            "load_user_logins(), 2 concurrent runs × 8",
            Drainer::Loader {
                runs: 2,
                parallel: 8,
            },
            n,
            String::new(),
        );
        measure(
            &mut t,
            "load_user_logins(), 4 concurrent runs × 4",
            Drainer::Loader {
                runs: 4,
                parallel: 4,
            },
            n,
            String::new(),
        );
    }
    measure(
        &mut t,
        "Python reference loader (boto3 + psycopg2)",
        Drainer::Python,
        n_python,
        format!("{n_python} messages"),
    );
    let mut ratios = String::new();
    let b4 = t.median_of("bare client, 4 parallel");
    let l4 = t.median_of("load_user_logins(), 1 run, 4 parallel");
    let py = t.median_of("Python reference loader (boto3 + psycopg2)");
    let _ = writeln!(ratios, "\n{label}: load_user_logins() at 4 parallel = {:.0} % of the bare client at 4 (target ≥ 90 %)", 100.0 * l4 / b4);
    if full {
        let b16 = t.median_of("bare client, 16 parallel");
        for name in [
            "load_user_logins(), 1 run, 16 parallel",
            "load_user_logins(), 2 concurrent runs × 8",
            "load_user_logins(), 4 concurrent runs × 4",
        ] {
            let _ = writeln!(
                ratios,
                "{label}: {name} = {:.0} % of the bare client at 16 (target ≥ 90 %)",
                100.0 * t.median_of(name) / b16
            );
        }
    }
    let best = t
        .rows
        .iter()
        .filter(|r| r.0.starts_with("load_user_logins"))
        .map(|r| median(&r.2))
        .fold(0.0, f64::max);
    let _ = writeln!(ratios, "{label}: fastest load_user_logins() configuration = {:.1}× the Python reference loader (target ≥ 5×)", best / py);
    print!("{ratios}");
    format!(
        "{}{}",
        t.render(&format!("Drain rate, {label}")),
        ratios.replace('\n', "\n\n")
    )
}

// ------------------------------------------------------------------ 2. masking

fn mask(rows: usize, pgcrypto_rows: usize, runs: usize) -> String {
    println!("\n== masking cost without network: {rows} rows ({pgcrypto_rows} for pgcrypto), {runs} runs each");
    let mut c = connect("bench");
    let (bodies, _) = messages(rows, 0xfeed);
    c.batch_execute(
        "DROP TABLE IF EXISTS bench_bodies, bench_rows, bench_rows_small, pgc_vault;
         CREATE TABLE bench_bodies(body text);
         CREATE TABLE pgc_vault(token text PRIMARY KEY, sealed bytea);",
    )
    .unwrap();
    let mut w = c.copy_in("COPY bench_bodies(body) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')").unwrap();
    use std::io::Write;
    for b in &bodies {
        writeln!(w, "{b}").unwrap();
    }
    w.finish().unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE bench_rows AS SELECT p.* FROM bench_bodies, sqs_loader.parse_login(body) p WHERE p.reject_reason IS NULL;
         CREATE TABLE bench_rows_small AS SELECT * FROM bench_rows LIMIT {pgcrypto_rows};
         ANALYZE bench_rows, bench_rows_small;"
    ))
    .unwrap();
    let n_rows: i64 = c
        .query_one("SELECT count(*) FROM bench_rows", &[])
        .unwrap()
        .get(0);
    let pgp_pub = std::fs::read_to_string(format!("{}/pgp_public.asc", env("BENCH_KEYS"))).unwrap();
    let hmac_key = "bench-hmac-key-0123456789abcdef0123456789abcdef";
    let unmasked = |src: &str| {
        format!(
            "INSERT INTO user_logins SELECT user_id, device_type, ip, device_id, locale, app_version, current_date FROM {src}"
        )
    };
    // What load_batch() does: one mask_values() call on the aligned ip and device_id arrays.
    let ours = |src: &str| {
        format!(
            "WITH r AS (SELECT *, row_number() OVER () AS ord FROM {src}),
                  a AS (SELECT array_agg(ip ORDER BY ord) AS ips, array_agg(device_id ORDER BY ord) AS devs, count(*)::int AS n FROM r),
                  m AS (SELECT sqs_loader.mask_values(ips || devs) AS tok, n FROM a),
                  t AS (SELECT u.* FROM m, unnest(m.tok[1:m.n], m.tok[m.n + 1:2 * m.n]) WITH ORDINALITY AS u(t_ip, t_dev, ord))
             INSERT INTO user_logins
             SELECT r.user_id, r.device_type, t.t_ip, t.t_dev, r.locale, r.app_version, current_date
               FROM r JOIN t ON t.ord = r.ord"
        )
    };
    let pgcrypto = |src: &str| {
        format!(
            "WITH v AS (SELECT ip AS x FROM {src} UNION SELECT device_id FROM {src}),
                  ins AS (INSERT INTO pgc_vault
                          SELECT encode(hmac(x, '{hmac_key}', 'sha256'), 'base64'), pgp_pub_encrypt(x, dearmor($1))
                            FROM v ON CONFLICT DO NOTHING)
             INSERT INTO user_logins
             SELECT user_id, device_type, encode(hmac(ip, '{hmac_key}', 'sha256'), 'base64'),
                    encode(hmac(device_id, '{hmac_key}', 'sha256'), 'base64'), locale, app_version, current_date
               FROM {src}"
        )
    };
    let mut t = Table::default();
    let time = |c: &mut Client, sql: &str, param: Option<&str>, n: i64| -> f64 {
        reset_tables(c);
        c.batch_execute("TRUNCATE pgc_vault").unwrap();
        let start = Instant::now();
        match param {
            Some(p) => {
                c.execute(sql, &[&p]).unwrap();
            }
            None => c.batch_execute(sql).unwrap(),
        }
        let took = start.elapsed().as_secs_f64();
        let loaded: i64 = c
            .query_one("SELECT count(*) FROM user_logins", &[])
            .unwrap()
            .get(0);
        assert_eq!(loaded, n);
        took * 1e6 / n as f64
    };
    let small: i64 = c
        .query_one("SELECT count(*) FROM bench_rows_small", &[])
        .unwrap()
        .get(0);
    let a: Vec<f64> = (0..runs)
        .map(|_| time(&mut c, &unmasked("bench_rows"), None, n_rows))
        .collect();
    t.add("(a) insert unmasked", "µs/row", a, format!("{n_rows} rows"));
    let b: Vec<f64> = (0..runs)
        .map(|_| time(&mut c, &ours("bench_rows"), None, n_rows))
        .collect();
    t.add(
        "(b) insert through sqs_loader masking (tokens + vault)",
        "µs/row",
        b,
        format!("{n_rows} rows"),
    );
    let b_small: Vec<f64> = (0..runs)
        .map(|_| time(&mut c, &ours("bench_rows_small"), None, small))
        .collect();
    t.add(
        "(b') the same, on the pgcrypto subset",
        "µs/row",
        b_small,
        format!("{small} rows"),
    );
    let pc: Vec<f64> = (0..runs)
        .map(|_| time(&mut c, &pgcrypto("bench_rows_small"), Some(&pgp_pub), small))
        .collect();
    t.add(
        "(c) insert through pgcrypto (hmac + pgp_pub_encrypt per value)",
        "µs/row",
        pc,
        format!("{small} rows"),
    );
    let mut ratios = String::new();
    let _ = writeln!(
        ratios,
        "\nmasking: (b)/(a) = {:.2} (target ≤ 2.0)",
        t.median_of("(b) insert through sqs_loader masking (tokens + vault)")
            / t.median_of("(a) insert unmasked")
    );
    let _ = writeln!(
        ratios,
        "masking: (c)/(b') = {:.1} (target ≥ 10)",
        t.median_of("(c) insert through pgcrypto (hmac + pgp_pub_encrypt per value)")
            / t.median_of("(b') the same, on the pgcrypto subset")
    );
    // Issue #3: 100,000 distinct values, bulk path and one by one.
    let mut u = Table::default();
    let mut run = 0;
    let mut values_per_s = |c: &mut Client, sql: &str| -> f64 {
        run += 1;
        reset_tables(c);
        let sql = sql.replace("{run}", &run.to_string());
        let start = Instant::now();
        let n: i64 = c.query_one(&sql, &[]).unwrap().get(0);
        let took = start.elapsed().as_secs_f64();
        assert_eq!(n, 100_000);
        n as f64 / took
    };
    let bulk: Vec<f64> = (0..runs)
        .map(|_| values_per_s(&mut c, "SELECT count(*) FROM mask_pii_batch(ARRAY(SELECT 'b{run}-' || i FROM generate_series(1, 100000) i))"))
        .collect();
    u.add(
        "mask_pii_batch(): 100,000 distinct values",
        "values/s",
        bulk,
        "one backend (one core)".into(),
    );
    let single: Vec<f64> = (0..runs)
        .map(|_| {
            values_per_s(
                &mut c,
                "SELECT count(mask_pii('s{run}-' || i)) FROM generate_series(1, 100000) i",
            )
        })
        .collect();
    u.add(
        "mask_pii() one by one: 100,000 distinct values",
        "values/s",
        single,
        "one backend (one core)".into(),
    );
    let _ = writeln!(
        ratios,
        "masking: mask_pii_batch() = {:.0} distinct values/s on one core (target ≥ 50,000)",
        u.median_of("mask_pii_batch(): 100,000 distinct values")
    );
    print!("{ratios}");
    format!(
        "{}{}{}",
        t.render("Masking cost without network (lower is better)"),
        u.render("Masking throughput"),
        ratios.replace('\n', "\n\n")
    )
}

// ------------------------------------------------------------------ 3. memory

fn proc_status(pid: i32) -> Option<(u64, u64, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((kb("VmRSS:"), kb("VmHWM:"), kb("RssAnon:"), kb("RssShmem:")))
}

fn memory(sqs: &Sqs, n: usize) -> String {
    println!("\n== memory: the loading backend during a {n}-message load");
    // fauxqs slows down with a deep queue (its receive scans it), so a feeder keeps about 50,000
    // messages queued while one run of load_user_logins() loads all of them.
    const DEPTH: usize = 50_000;
    const CHUNK: usize = 10_000;
    let url = sqs.create(&format!("bench-memory-{}", std::process::id()));
    let mut valid = 0;
    let mut chunks = Vec::new();
    for i in 0..n.div_ceil(CHUNK) {
        let (b, v) = messages(CHUNK.min(n - i * CHUNK), 0x3e3 + i as u64);
        valid += v;
        chunks.push(b);
    }
    sqs.fill(&url, &chunks[0]);
    let mut c = connect("bench");
    reset_tables(&mut c);
    let mut loader = connect("bench");
    loader
        .batch_execute(&format!(
            "SET sqs_loader.wait_seconds = 1; SET sqs_loader.max_seconds = 3600; SET sqs_loader.visibility_timeout = 600;
             SET sqs_loader.exit_when_empty = off; SET sqs_loader.endpoint = '{}';",
            sqs.base
        ))
        .unwrap();
    let pid: i32 = loader
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // Warm up: load the library and its settings, so the baseline is a ready backend.
    loader
        .query_one("SELECT sqs_loader.version()", &[])
        .unwrap();
    let base = proc_status(pid).unwrap();
    let samples = Arc::new(Mutex::new(Vec::<(f64, i64, (u64, u64, u64, u64))>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (samples, done, sqs, url) = (samples.clone(), done.clone(), sqs.clone(), url.clone());
        std::thread::spawn(move || {
            let mut c = connect("bench");
            let start = Instant::now();
            let mut fed = 1;
            while !done.load(Ordering::SeqCst) {
                let received: i64 = c
                    .query_one(
                        "SELECT coalesce(max(received), 0) FROM sqs_loader.load_runs",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                if let Some(st) = proc_status(pid) {
                    samples
                        .lock()
                        .unwrap()
                        .push((start.elapsed().as_secs_f64(), received, st));
                }
                // Top the queue up.
                if fed < chunks.len() && (fed * CHUNK).saturating_sub(received as usize) < DEPTH {
                    sqs.fill_no_wait(&url, &chunks[fed]);
                    fed += 1;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let start = Instant::now();
    loader
        .query_one(
            "CALL load_user_logins($1, max_messages => $2)",
            &[&url, &(n as i32)],
        )
        .unwrap();
    let took = start.elapsed().as_secs_f64();
    let end = proc_status(pid).unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let rows: i64 = c
        .query_one("SELECT count(*) FROM user_logins", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, valid);
    let s = samples.lock().unwrap();
    let peak_rss = s.iter().map(|x| x.2 .0).chain([end.0]).max().unwrap();
    let peak_anon = s.iter().map(|x| x.2 .2).chain([end.2]).max().unwrap();
    let mut csv =
        String::from("seconds,messages_received,vm_rss_kb,vm_hwm_kb,rss_anon_kb,rss_shmem_kb\n");
    for (t, r, (rss, hwm, anon, shm)) in s.iter() {
        let _ = writeln!(csv, "{t:.2},{r},{rss},{hwm},{anon},{shm}");
    }
    let dir = format!("{}/bench/results", env("BENCH_ROOT"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/memory.csv"), csv).unwrap();
    let mb = |kb: u64| kb as f64 / 1024.0;
    // Growth of private memory after the first 10 % of the load: flat means nothing accumulates.
    let tenth = s
        .iter()
        .find(|x| x.1 as usize >= n / 10)
        .map(|x| x.2 .2)
        .unwrap_or(base.2);
    let mut out =
        format!("\n### Memory of the loading backend, {n} messages (fauxqs, one run)\n\n");
    let _ = writeln!(
        out,
        "| | before the load | peak during the load | growth |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| RSS (VmRSS) | {:.1} MB | {:.1} MB | {:.1} MB |",
        mb(base.0),
        mb(peak_rss),
        mb(peak_rss - base.0)
    );
    let _ = writeln!(
        out,
        "| private memory (RssAnon) | {:.1} MB | {:.1} MB | {:.1} MB |",
        mb(base.2),
        mb(peak_anon),
        mb(peak_anon - base.2)
    );
    let _ = writeln!(
        out,
        "| shared buffers mapped (RssShmem) | {:.1} MB | {:.1} MB | {:.1} MB |",
        mb(base.3),
        mb(end.3),
        mb(end.3.saturating_sub(base.3))
    );
    let _ = writeln!(
        out,
        "\n{n} messages loaded in {took:.0} s ({:.0} msg/s). Private memory after the first 10 % of the load: {:.1} MB; at the peak: {:.1} MB. Curve: bench/results/memory.csv, memory.png.",
        n as f64 / took,
        mb(tenth),
        mb(peak_anon)
    );
    println!("{out}");
    out
}

// ------------------------------------------------------------------ main

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let runs = env_or("BENCH_RUNS", 3);
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    let fauxqs = Sqs::new(&env("BENCH_FAUXQS"));
    let localstack = Sqs::new(&env("BENCH_LOCALSTACK"));
    setup_db();
    let started = Instant::now();
    let mut report = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap().trim().to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "Machine: {} cores ({cpu}); PostgreSQL 15, sqs_loader release build; emulators and PostgreSQL on 127.0.0.1.",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    if want("drain") {
        let (n, npy) = if quick {
            (5_000, 1_000)
        } else {
            (
                env_or("BENCH_DRAIN_N", 50_000),
                env_or("BENCH_PY_N", 10_000),
            )
        };
        report += &drain(&fauxqs, "fauxqs", n, npy, runs, true);
        let (n, npy) = if quick {
            (1_000, 500)
        } else {
            (env_or("BENCH_LS_N", 10_000), env_or("BENCH_LS_PY_N", 3_000))
        };
        report += &drain(&localstack, "LocalStack", n, npy, runs, !quick);
    }
    if want("mask") {
        let (rows, small) = if quick {
            (20_000, 2_000)
        } else {
            (200_000, 20_000)
        };
        report += &mask(rows, small, runs);
    }
    if want("memory") {
        report += &memory(
            &fauxqs,
            if quick {
                50_000
            } else {
                env_or("BENCH_MEMORY_N", 1_000_000)
            },
        );
    }
    let _ = writeln!(
        report,
        "\nTotal benchmark time: {:.1} min.",
        started.elapsed().as_secs_f64() / 60.0
    );
    let dir = format!("{}/bench/results", env("BENCH_ROOT"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/results.md"), &report).unwrap();
    println!("\n================ results (also in bench/results/results.md)\n{report}");
}
