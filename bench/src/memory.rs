//! 3. memory: the loading backend's RSS during a 1,000,000-message load (a feeder keeps the
//!    queue topped up), sampled from /proc.

use crate::common::{connect, count, env, messages, reset_tables};
use crate::sqs::Sqs;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Memory of a process, from /proc/PID/status, in kB.
#[derive(Debug, Clone, Copy)]
struct ProcMem {
    rss: u64,
    hwm: u64,
    anon: u64,
    shmem: u64,
}

/// One sample during the load.
struct Sample {
    seconds: f64,
    received: i64,
    mem: ProcMem,
}

fn proc_status(pid: i32) -> Option<ProcMem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcMem {
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
        anon: kb("RssAnon:"),
        shmem: kb("RssShmem:"),
    })
}

pub fn memory(sqs: &Sqs, n: usize) -> String {
    println!("\n== memory: the loading backend during a {n}-message load");
    // fauxqs slows down with a deep queue (its receive scans it), so a feeder keeps about 50,000
    // messages queued while one run of load_user_logins() loads all of them.
    const DEPTH: usize = 50_000;
    const CHUNK: usize = 10_000;
    let url = sqs.create(&format!("bench-memory-{}", std::process::id()));
    let mut valid = 0;
    let mut chunks = Vec::new();
    for i in 0..n.div_ceil(CHUNK) {
        let m = messages(CHUNK.min(n - i * CHUNK), 0x3e3 + i as u64);
        valid += m.valid;
        chunks.push(m.bodies);
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
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let done = Arc::new(AtomicBool::new(false));
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
                if let Some(mem) = proc_status(pid) {
                    samples.lock().unwrap().push(Sample {
                        seconds: start.elapsed().as_secs_f64(),
                        received,
                        mem,
                    });
                }
                // Top the queue up.
                if fed < chunks.len() && (fed * CHUNK).saturating_sub(received as usize) < DEPTH {
                    sqs.send(&url, &chunks[fed]);
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
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM user_logins") as usize,
        valid
    );
    let s = samples.lock().unwrap();
    let peak_rss = s.iter().map(|x| x.mem.rss).chain([end.rss]).max().unwrap();
    let peak_anon = s
        .iter()
        .map(|x| x.mem.anon)
        .chain([end.anon])
        .max()
        .unwrap();
    let mut csv =
        String::from("seconds,messages_received,vm_rss_kb,vm_hwm_kb,rss_anon_kb,rss_shmem_kb\n");
    for x in s.iter() {
        let m = x.mem;
        let _ = writeln!(
            csv,
            "{:.2},{},{},{},{},{}",
            x.seconds, x.received, m.rss, m.hwm, m.anon, m.shmem
        );
    }
    let dir = format!("{}/bench/results", env("BENCH_ROOT"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/memory.csv"), csv).unwrap();
    let mb = |kb: u64| kb as f64 / 1024.0;
    // Growth of private memory after the first 10 % of the load: flat means nothing accumulates.
    let tenth = s
        .iter()
        .find(|x| x.received as usize >= n / 10)
        .map(|x| x.mem.anon)
        .unwrap_or(base.anon);
    let mut out =
        format!("\n### Memory of the loading backend, {n} messages (fauxqs, one run)\n\n");
    let _ = writeln!(
        out,
        "| | before the load | peak during the load | growth |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| RSS (VmRSS) | {:.1} MB | {:.1} MB | {:.1} MB |",
        mb(base.rss),
        mb(peak_rss),
        mb(peak_rss - base.rss)
    );
    let _ = writeln!(
        out,
        "| private memory (RssAnon) | {:.1} MB | {:.1} MB | {:.1} MB |",
        mb(base.anon),
        mb(peak_anon),
        mb(peak_anon - base.anon)
    );
    let _ = writeln!(
        out,
        "| shared buffers mapped (RssShmem) | {:.1} MB | {:.1} MB | {:.1} MB |",
        mb(base.shmem),
        mb(end.shmem),
        mb(end.shmem.saturating_sub(base.shmem))
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
