//! 4. latency: end-to-end latency — SQS SentTimestamp to the commit of the message's row — at a
//!    steady offered load, for a background worker and for pg_cron-style CALL runs (one a minute,
//!    each long-polling for max_seconds); and what an idle worker costs.
//!
//! Commit times come from `pg_xact_commit_timestamp(xmin)` of each message's row of
//! sqs_loader.processed_messages (scripts/bench.sh turns on track_commit_timestamp); SentTimestamp
//! is the emulator's. Everything runs on one machine, on one clock.

use crate::common::{connect, count, messages, reset_tables};
use crate::proxy::CountingProxy;
use crate::sqs::Sqs;
use postgres::Client;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The settings a background worker in database `bench` reads when it connects (the endpoint
/// also for this session: start_worker() checks the queue URL as a request would go).
pub fn worker_settings(c: &mut Client, endpoint: &str, parallel: usize) {
    c.batch_execute(&format!(
        "ALTER DATABASE bench SET sqs_loader.endpoint = '{endpoint}';
         ALTER DATABASE bench SET sqs_loader.max_parallel_requests = {parallel};
         SET sqs_loader.endpoint = '{endpoint}';"
    ))
    .unwrap();
}

/// Start one worker on `url` and wait until it polls (its run is recorded).
pub fn start_worker(c: &mut Client, url: &str) {
    c.query_one("SELECT sqs_loader.start_worker($1)", &[&url])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        c,
        "SELECT count(*) FROM sqs_loader.load_runs WHERE mode = 'worker' AND status = 'running'",
    ) == 0
    {
        assert!(Instant::now() < deadline, "the worker did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop the workers of `url` and wait until their processes are gone.
pub fn stop_worker(c: &mut Client, url: &str) {
    c.query_one("SELECT sqs_loader.stop_worker($1)", &[&url])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !worker_pids(c, "sqs_loader worker").is_empty() {
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worker_pids(c: &mut Client, backend_type: &str) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = $1 AND datname = 'bench'",
        &[&backend_type],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Send `bodies` at `rate` messages/s, in batches of 10, from 4 threads; the achieved rate.
fn produce(sqs: &Sqs, url: &str, bodies: &[String], rate: usize) -> f64 {
    let chunks: Vec<&[String]> = bodies.chunks(10).collect();
    let every = Duration::from_secs_f64(10.0 / rate as f64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let chunks = &chunks;
            s.spawn(move || {
                for (k, chunk) in chunks.iter().enumerate().skip(t).step_by(4) {
                    let due = start + every * k as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    sqs.send(url, chunk);
                }
            });
        }
    });
    bodies.len() as f64 / start.elapsed().as_secs_f64()
}

/// p50, p99 and max of SentTimestamp → commit over every processed message, in seconds.
fn latencies(c: &mut Client) -> (f64, f64, f64) {
    let r = c
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l)
               FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - sent_at)::float8 AS l
                       FROM sqs_loader.processed_messages) x",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn wait_processed(c: &mut Client, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while count(c, "SELECT count(*) FROM sqs_loader.processed_messages") < n as i64 {
        assert!(Instant::now() < deadline, "not every message was loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a queue is loaded while the producer sends.
#[derive(Clone, Copy)]
enum Mode {
    Worker,
    /// `CALL load_user_logins(max_seconds => run)` every `every`, exit_when_empty off.
    Cron {
        every: Duration,
        run: u64,
    },
}

struct Sample {
    offered: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

fn measure(sqs: &Sqs, mode: Mode, rate: usize, seconds: u64, seed: u64) -> Sample {
    let n = rate * seconds as usize;
    let m = messages(n, seed);
    let url = sqs.create(&format!("bench-lat-{}-{seed:x}", std::process::id()));
    let mut c = connect("bench");
    reset_tables(&mut c);
    worker_settings(&mut c, &sqs.base, 4);
    let done = Arc::new(AtomicBool::new(false));
    let scheduler = match mode {
        Mode::Worker => {
            start_worker(&mut c, &url);
            None
        }
        Mode::Cron { every, run } => {
            let (url, done) = (url.clone(), done.clone());
            Some(std::thread::spawn(move || {
                let mut c = connect("bench");
                c.batch_execute(&format!(
                    "SET sqs_loader.exit_when_empty = off; SET sqs_loader.max_seconds = {run};"
                ))
                .unwrap();
                let start = Instant::now();
                let mut k = 0u32;
                while !done.load(Ordering::SeqCst) {
                    if let Some(wait) = (start + every * k).checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    c.query_one("CALL load_user_logins($1)", &[&url]).unwrap();
                    k += 1;
                }
            }))
        }
    };
    let offered = produce(sqs, &url, &m.bodies, rate);
    wait_processed(&mut c, n, Duration::from_secs(600));
    done.store(true, Ordering::SeqCst);
    match scheduler {
        Some(h) => h.join().unwrap(),
        None => stop_worker(&mut c, &url),
    }
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM user_logins") as usize,
        m.valid,
        "the load is exact"
    );
    let (p50, p99, max) = latencies(&mut c);
    Sample {
        offered,
        p50,
        p99,
        max,
    }
}

/// What one latency section measures.
pub struct LatencyPlan<'a> {
    pub label: &'a str,
    pub rates: &'a [usize],
    /// Seconds of offered load per measurement.
    pub seconds: u64,
    /// The CALL schedule: every `every` a run of `run` seconds (pg_cron: 60 and 50).
    pub every: Duration,
    pub run: u64,
}

pub fn latency(sqs: &Sqs, p: &LatencyPlan) -> String {
    println!(
        "\n== latency on {}: {} s of steady load at {:?} msg/s",
        p.label, p.seconds, p.rates
    );
    let mut s = format!(
        "\n### End-to-end latency, {} (SentTimestamp → row committed; {} s of steady offered load, one run each)\n\n\
         | offered msg/s (achieved) | loaded by | p50 s | p99 s | max s |\n|---:|---|---:|---:|---:|\n",
        p.label, p.seconds
    );
    let modes = [
        ("background worker (1 process)".to_string(), Mode::Worker),
        (
            format!(
                "CALL every {} s, max_seconds {} (pg_cron style)",
                p.every.as_secs(),
                p.run
            ),
            Mode::Cron {
                every: p.every,
                run: p.run,
            },
        ),
    ];
    let mut seed = 0x1a7e_0000_u64 + p.label.len() as u64 * 100;
    for &rate in p.rates {
        for (name, mode) in &modes {
            seed += 1;
            let r = measure(sqs, *mode, rate, p.seconds, seed);
            println!(
                "  {rate} msg/s ({:.0} achieved), {name}: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                r.offered, r.p50, r.p99, r.max
            );
            let _ = writeln!(
                s,
                "| {rate} ({:.0}) | {name} | {:.3} | {:.3} | {:.3} |",
                r.offered, r.p50, r.p99, r.max
            );
        }
    }
    s
}

/// An idle worker on an empty queue for `seconds`: CPU of the worker and of the database's
/// supervisor, and the requests it sends (counted by a proxy in front of the emulator).
pub fn idle(sqs: &Sqs, seconds: u64) -> String {
    println!("\n== an idle worker for {seconds} s");
    let proxy = CountingProxy::start(&sqs.base);
    let url = sqs.create(&format!("bench-idle-{}", std::process::id()));
    let mut c = connect("bench");
    reset_tables(&mut c);
    worker_settings(&mut c, &proxy.url, 4);
    start_worker(&mut c, &url);
    std::thread::sleep(Duration::from_secs(5));
    let worker = worker_pids(&mut c, "sqs_loader worker")[0];
    let supervisor = worker_pids(&mut c, "sqs_loader supervisor")[0];
    let (w0, s0, r0) = (
        crate::common::cpu_seconds(&worker.to_string()),
        crate::common::cpu_seconds(&supervisor.to_string()),
        proxy.requests(),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (w1, s1, r1) = (
        crate::common::cpu_seconds(&worker.to_string()),
        crate::common::cpu_seconds(&supervisor.to_string()),
        proxy.requests(),
    );
    stop_worker(&mut c, &url);
    worker_settings(&mut c, &sqs.base, 4);
    let pct = |a: f64, b: f64| 100.0 * (b - a) / seconds as f64;
    let per_min = (r1 - r0) as f64 * 60.0 / seconds as f64;
    println!(
        "  worker {:.3} % of a core, supervisor {:.3} %, {per_min:.1} requests/min",
        pct(w0, w1),
        pct(s0, s1)
    );
    format!(
        "\n### An idle background worker ({seconds} s, empty queue, LocalStack)\n\n\
         | process | CPU, % of one core | SQS requests per minute |\n|---|---:|---:|\n\
         | worker (long polls of 20 s) | {:.3} | {per_min:.1} |\n\
         | its database's supervisor (checks sqs_loader.workers every second) | {:.3} | 0 |\n",
        pct(w0, w1),
        pct(s0, s1)
    )
}
