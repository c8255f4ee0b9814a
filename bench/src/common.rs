//! What every benchmark shares: configuration from the environment, reproducible messages, the
//! database connection, and the results table.

use postgres::{Client, NoTls};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU16, Ordering};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `make bench`"))
}

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Clock `clock` now, in seconds (CPU time of this thread or process, or CLOCK_MONOTONIC).
pub fn clock_seconds(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// `perf` recording the whole machine in the background (`profile`, `sched`): started with
/// `args`, given half a second to attach, stopped (and its file written) by [`Perf::stop`].
pub struct Perf(std::process::Child);

impl Perf {
    pub fn start(args: &[&str]) -> Perf {
        let child = std::process::Command::new("perf")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf (apt install linux-perf)");
        std::thread::sleep(std::time::Duration::from_millis(500));
        Perf(child)
    }

    pub fn stop(mut self) {
        // SAFETY: signalling our own child, which writes its file on SIGINT.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        self.0.wait().unwrap();
    }
}

// ------------------------------------------------------------------ messages

/// xorshift64*: reproducible pseudo-random messages.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VERSIONS: &[&str] = &[
    "2.3.0", "0.96", "2.00", "0.2.6", "1.7", "3.1.4", "0.26", "2.6", "4.0.12", "1.21",
];
const LOCALES: &[&str] = &["RU", "PH", "US", "BR", "CN", "ID", "KE", "UA", "DE", "JP"];

/// Sample-shaped message bodies.
pub struct Messages {
    pub bodies: Vec<String>,
    /// How many of them are valid login events (the rest are the original malformed message).
    pub valid: usize,
}

/// `n` sample-shaped bodies: about 10 % reuse an earlier IP, 1 % are the original malformed
/// message, 29 % of the valid ones have a null locale.
pub fn messages(n: usize, seed: u64) -> Messages {
    let mut r = Rng(seed | 1);
    let mut ips: Vec<String> = Vec::new();
    let mut bodies = Vec::with_capacity(n);
    let mut valid = 0;
    let repeats = std::env::var("BENCH_NO_REPEATS").is_err();
    for i in 0..n {
        if r.below(100) == 0 {
            bodies.push(r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#.to_string());
            continue;
        }
        let ip = if repeats && !ips.is_empty() && r.below(10) == 0 {
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
        bodies.push(format!(
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
    Messages { bodies, valid }
}

// ------------------------------------------------------------------ database

/// The server [`connect`] reaches: 0 for the benchmark cluster (BENCH_PGPORT), else this port
/// (the Citus coordinator, while the citus section runs).
static PORT: AtomicU16 = AtomicU16::new(0);

/// Point [`connect`] (in every thread) at another server; 0: back to the benchmark cluster.
pub fn use_port(port: u16) {
    PORT.store(port, Ordering::SeqCst);
}

pub fn connect(db: &str) -> Client {
    let port = match PORT.load(Ordering::SeqCst) {
        0 => env("BENCH_PGPORT"),
        p => p.to_string(),
    };
    Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={db} application_name=bench"),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("connect {db}: {e}"))
}

pub fn reset_tables(c: &mut Client) {
    c.batch_execute(
        "TRUNCATE user_logins; TRUNCATE sqs_loader.vault, sqs_loader.processed_messages, sqs_loader.rejected_messages, sqs_loader.load_runs;",
    )
    .unwrap();
}

/// Before a timed load: a CHECKPOINT, so that the load finds WAL segments to recycle (renamed,
/// not written) as on a server that has been loading; on a fresh one the committing backend
/// zero-fills each new 16 MB segment, about 50 ms of its time every 16,000 messages here,
/// while the emulator waits (docs/performance.md). `BENCH_NO_CHECKPOINT=1` leaves it out.
pub fn steady_wal(c: &mut Client) {
    if std::env::var("BENCH_NO_CHECKPOINT").is_err() {
        c.batch_execute("CHECKPOINT").unwrap();
    }
}

/// A session of database `bench` set up to drain a queue of `endpoint` (emulators name queues
/// after hosts that need not resolve: requests go to the emulator) with `parallel` requests in
/// flight, until the queue is empty; and its backend's pid.
pub fn loader_session(endpoint: &str, parallel: usize) -> (Client, i32) {
    let mut c = connect("bench");
    c.batch_execute(&format!(
        "SET sqs_loader.max_parallel_requests = {parallel}; SET sqs_loader.wait_seconds = 0;
         SET sqs_loader.max_seconds = 3600; SET sqs_loader.visibility_timeout = 300;
         SET sqs_loader.endpoint = '{endpoint}';"
    ))
    .unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    (c, pid)
}

/// Database `bench` with the extension, pgcrypto and the benchmark's RSA public key.
pub fn setup_db() {
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
    warm_wal(&mut c);
}

/// A fresh cluster has one WAL segment: every further one is created and zero-filled by the
/// backend that needs it. A server that has been running recycles old segments at each
/// checkpoint instead. Until the cluster has 5 segments (`min_wal_size`, 80 MB, keeps that
/// many for recycling), write about 100 MB of WAL and throw it away, then CHECKPOINT (which
/// recycles them), so that each drain ([`steady_wal`]) measures the loader as it runs on such
/// a server.
fn warm_wal(c: &mut Client) {
    let segments: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
            &[],
        )
        .unwrap()
        .get(0);
    if segments >= 5 {
        return;
    }
    c.batch_execute(
        "CREATE TABLE bench_wal_warmup AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 180000) g;
         DROP TABLE bench_wal_warmup; CHECKPOINT;",
    )
    .unwrap();
}

/// Whether the installed build defines setting `name` (a build from `BENCH_REV` may predate it).
pub fn has_setting(name: &str) -> bool {
    connect("bench")
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_settings WHERE name = $1)",
            &[&name],
        )
        .unwrap()
        .get(0)
}

pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

// ------------------------------------------------------------------ results

/// One measured configuration: a sample per run.
pub struct Row {
    pub name: String,
    pub unit: String,
    pub samples: Vec<f64>,
    pub note: String,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{:.0}", x)
    } else {
        format!("{x:.2}")
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MAX, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MIN, f64::max)
}

/// "median (min – max)" of `v`, with `digits` decimals; empty for no samples.
pub fn spread(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return String::new();
    }
    let (lo, hi) = (min(v), max(v));
    format!("{:.digits$} ({lo:.digits$} – {hi:.digits$})", median(v))
}

/// Sample by sample (round by round), `b` ÷ `a`.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| y / x).collect()
}

/// A results table: median of the runs with min–max.
#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn add(&mut self, name: &str, unit: &str, samples: Vec<f64>, note: String) {
        println!(
            "  {name}: median {} {unit} (min {} – max {}) {note}",
            fmt_rate(median(&samples)),
            fmt_rate(min(&samples)),
            fmt_rate(max(&samples))
        );
        self.rows.push(Row {
            name: name.into(),
            unit: unit.into(),
            samples,
            note,
        });
    }

    pub fn samples_of(&self, name: &str) -> &[f64] {
        &self
            .rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
            .samples
    }

    pub fn median_of(&self, name: &str) -> f64 {
        median(self.samples_of(name))
    }

    pub fn render(&self, title: &str) -> String {
        let mut s = format!("\n### {title}\n\n| measurement | median | min – max | runs | |\n|---|---:|---:|---:|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} {} | {} – {} | {} | {} |",
                r.name,
                fmt_rate(median(&r.samples)),
                r.unit,
                fmt_rate(min(&r.samples)),
                fmt_rate(max(&r.samples)),
                r.samples.len(),
                r.note
            );
        }
        s
    }
}

/// CPU time (user + system, in seconds) a process (all its threads, `PID`) or one thread
/// (`PID/task/TID`) has used so far.
pub fn cpu_seconds(proc_path: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{proc_path}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tck
}
