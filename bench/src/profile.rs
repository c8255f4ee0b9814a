//! 5. profile (only when asked: `make bench ARGS=profile`): one `CALL load_user_logins()` at 4
//!    parallel requests draining 50,000 sample-shaped messages from fauxqs, with `perf record -g
//!    -a` running; prints the loading backend's CPU per message, the rows inserted and undone
//!    (a failed plain INSERT) per table, the WAL per message and by record type, and its top
//!    symbols, and leaves the profile in bench/results/perf.data (`perf report -i …` to browse it).
//!    `BENCH_PROFILE_RUNS=2 BENCH_PROFILE_PARALLEL=8` profiles two concurrent runs at 8 instead.
//!    The measured load follows one of the same size and a checkpoint (the steady state of a
//!    server that has been loading); `BENCH_PROFILE_COLD=1` profiles the first load instead.

use crate::common::{connect, env, env_or, loader_session, messages, reset_tables, Perf};
use crate::sqs::Sqs;
use postgres::Client;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

pub fn profile(sqs: &Sqs) -> String {
    let n = env_or("BENCH_PROFILE_N", 50_000);
    // Concurrent runs of the same queue (what the drain's "2 × 8" and "4 × 4" rows do).
    let runs = env_or("BENCH_PROFILE_RUNS", 1);
    let parallel = env_or("BENCH_PROFILE_PARALLEL", 4);
    println!(
        "\n== profile: {runs} load_user_logins() at {parallel} parallel, {n} messages on fauxqs, perf attached"
    );
    let m = messages(n, 0x9f0f);
    let url = sqs.create(&format!("bench-profile-{}", std::process::id()));
    sqs.fill(&url, &m.bodies);
    let mut c = connect("bench");
    // A server that has been loading for a while has its shared buffers mapped and old WAL
    // segments to recycle; a fresh one zero-fills every new 16 MB segment inside the committing
    // backend and clears each buffer page it touches first (in the kernel). One load of the same
    // size before the measured one, then a checkpoint (which recycles its segments), so the
    // profile shows the loader's steady state. BENCH_PROFILE_COLD=1 profiles the first load.
    let warm = std::env::var("BENCH_PROFILE_COLD").is_err();
    if warm {
        let w = messages(n, 0x9f0e);
        let wurl = sqs.create(&format!("bench-profile-warm-{}", std::process::id()));
        sqs.fill(&wurl, &w.bodies);
        loader_session(&sqs.base, parallel)
            .0
            .query_one("CALL load_user_logins($1)", &[&wurl])
            .unwrap();
    }
    reset_tables(&mut c);
    if warm {
        c.batch_execute("CHECKPOINT").unwrap();
    }
    let inserted_before = inserted(&mut c);
    let wal_before = wal(&mut c);
    let lsn_before = lsn(&mut c);
    let mut loaders: Vec<(Client, i32)> = (0..runs)
        .map(|_| loader_session(&sqs.base, parallel))
        .collect();
    let pids: Vec<i32> = loaders.iter().map(|l| l.1).collect();
    let dir = format!("{}/bench/results", env("BENCH_ROOT"));
    // perf writes here while the load runs; the tables' directory is made only at the end.
    std::fs::create_dir_all(&dir).unwrap();
    let data = format!("{dir}/perf.data");
    // System-wide: `-p` misses most of the short-lived I/O threads, which do half the work.
    let perf = Perf::start(&["record", "-F", "997", "-g", "-a", "-o", &data]);
    // The processes (with their I/O threads, also those that ended) and their own threads.
    let cpu = |pids: &[i32]| -> (f64, f64) {
        pids.iter()
            .map(|p| {
                (
                    crate::common::cpu_seconds(&p.to_string()),
                    crate::common::cpu_seconds(&format!("{p}/task/{p}")),
                )
            })
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let before = cpu(&pids);
    // Thread ids come from the pid counter: how many threads (and processes) were started.
    let last_pid = || -> i64 {
        std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let pid_max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids_before = last_pid();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (l, _) in loaders.iter_mut() {
            let url = &url;
            s.spawn(move || l.query_one("CALL load_user_logins($1)", &[url]).unwrap());
        }
    });
    // (At most one wrap-around of the counter in one load, checked by the count of threads.)
    let started = (last_pid() - pids_before).rem_euclid(pid_max);
    let took = start.elapsed().as_secs_f64();
    let after = cpu(&pids);
    let (used, used_main) = (after.0 - before.0, after.1 - before.1);
    perf.stop();
    let rows: i64 = c
        .query_one("SELECT count(*) FROM user_logins", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, m.valid, "the load is exact");
    // Rows inserted and undone: a plain vault INSERT that met a token stored meanwhile by
    // another run is rolled back whole (then stored with ON CONFLICT). The loaders' statistics
    // reach the cumulative views when their sessions end.
    drop(loaders);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let undone = inserted(&mut c)
        .into_iter()
        .zip(&inserted_before)
        .map(|((table, ins, rows), (_, ins_before, rows_before))| {
            format!(
                "{table}: {} rows inserted, {} undone",
                ins - ins_before,
                (ins - ins_before) - (rows - rows_before)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let w = wal(&mut c);
    let records = wal_records(&mut c, &lsn_before);
    let per = |i: usize| (w[i] - wal_before[i]) as f64 / n as f64;
    let wal_line = format!(
        "WAL per message (the whole cluster's, from pg_stat_wal): {:.0} bytes in {:.1} records, {:.2} full-page images; \
         {:.3} writes by a backend because the WAL buffers were full",
        per(0),
        per(1),
        per(2),
        per(3)
    );
    let pid_list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let report = Command::new("perf")
        .args([
            "report",
            "-i",
            &data,
            "--no-children",
            "--pid",
            &pid_list,
            "--sort",
            "comm,dso,symbol",
            "--percentage",
            "relative",
            "--stdio",
            "-g",
            "none",
            "--percent-limit",
            "1",
        ])
        .output()
        .unwrap();
    let top: String = String::from_utf8_lossy(&report.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(30)
        .map(|l| format!("    {l}\n"))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Profile: {runs} load_user_logins() at {parallel} parallel, {n} messages, fauxqs, {}\n\n\
         {:.0} msg/s; the loading backends and their I/O threads used {:.2} s of CPU: **{:.1} µs per message**, \
         of which the backends' own threads {:.1} µs and their I/O threads (HTTP, JSON, signing) {:.1} µs; \
         {started} threads or processes were started on the machine meanwhile. {undone}. {wal_line}.\n\n\
         The WAL by record type (`pg_waldump --stats=record`, ≥ 2 % of the records):\n\n{records}\n\
         the top symbols of the loading backends and their I/O threads (self time, ≥ 1 % of their samples; `perf report -i bench/results/perf.data --pid {pid_list}`):\n\n{top}",
        if warm {
            "after a load of the same size and a checkpoint"
        } else {
            "the first load on a fresh cluster (BENCH_PROFILE_COLD)"
        },
        n as f64 / took,
        used,
        used * 1e6 / n as f64,
        used_main * 1e6 / n as f64,
        (used - used_main) * 1e6 / n as f64
    );
    print!("{out}");
    out
}

/// The cluster's WAL so far: bytes, records, full-page images, writes because the buffers were full.
fn wal(c: &mut Client) -> [i64; 4] {
    let r = c
        .query_one(
            "SELECT wal_bytes::bigint, wal_records, wal_fpi, wal_buffers_full FROM pg_stat_wal",
            &[],
        )
        .unwrap();
    [r.get(0), r.get(1), r.get(2), r.get(3)]
}

fn lsn(c: &mut Client) -> String {
    c.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0)
}

/// `pg_waldump --stats=record` from `start` to now: the record types with ≥ 2 % of the records.
fn wal_records(c: &mut Client, start: &str) -> String {
    let end = lsn(c);
    let r = c
        .query_one(
            "SELECT (SELECT setting FROM pg_config WHERE name = 'BINDIR'), current_setting('data_directory')",
            &[],
        )
        .unwrap();
    let (bindir, data): (String, String) = (r.get(0), r.get(1));
    let out = Command::new(format!("{bindir}/pg_waldump"))
        .args([
            "--stats=record",
            "-p",
            &format!("{data}/pg_wal"),
            "-s",
            start,
            "-e",
            &end,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            // "Heap/INSERT  N  ( 12.34)  record size ..." rows: the header and the frequent types.
            let share = l
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .and_then(|(p, _)| p.trim().parse::<f64>().ok());
            l.starts_with("Type") || share.is_some_and(|p| p >= 2.0)
        })
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// For the tables a load inserts into: rows inserted since the server started (committed or
/// not) and rows in the table now.
fn inserted(c: &mut Client) -> Vec<(String, i64, i64)> {
    ["sqs_loader.vault", "sqs_loader.processed_messages", "user_logins"]
        .iter()
        .map(|t| {
            let r = c
                .query_one(
                    &format!(
                        "SELECT coalesce(pg_stat_get_tuples_inserted('{t}'::regclass), 0), (SELECT count(*) FROM {t})"
                    ),
                    &[],
                )
                .unwrap();
            (t.to_string(), r.get(0), r.get(1))
        })
        .collect()
}
