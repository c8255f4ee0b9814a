//! 8. sched (only when asked: `make bench ARGS=sched`): who waits for whom while the bare client
//!    and one `load_user_logins()` at 4 parallel drain fauxqs, taking turns (BENCH_SCHED_ROUNDS
//!    rounds, 2 unless set), each drain under `perf sched record`. From `perf sched timehist`
//!    over the drain alone: how much of the time the emulator's event loop (its main thread) ran,
//!    slept with no request to serve, or waited for a CPU; how long the client's threads (the
//!    bench's, or the backend and its I/O threads) waited for a CPU once woken; how long the
//!    CPUs idled. The drain's rate is bound by the event loop when it never sleeps.

use crate::common::{env, env_or, loader_session, messages, reset_tables, steady_wal, Perf};
use crate::sqs::Sqs;
use std::fmt::Write as _;
use std::process::{Command, Stdio};

/// CLOCK_MONOTONIC now, in seconds: perf's timestamps with `-k CLOCK_MONOTONIC`.
fn monotonic() -> f64 {
    crate::common::clock_seconds(libc::CLOCK_MONOTONIC)
}

/// One line of `perf sched timehist`: a thread switched out after running.
struct Switch {
    tid: i64,
    pid: i64,
    idle: bool,
    /// Sleeping before it was woken, waiting for a CPU once woken, running (ms).
    wait: f64,
    delay: f64,
    run: f64,
}

fn parse(line: &str) -> Option<Switch> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 6 || !f[1].starts_with('[') {
        return None;
    }
    let num = |s: &str| s.parse::<f64>().ok();
    let (wait, delay, run) = (
        num(f[f.len() - 3])?,
        num(f[f.len() - 2])?,
        num(f[f.len() - 1])?,
    );
    // "<idle>", "comm[tid]" or "comm[tid/pid]"; a name may hold spaces, the ids are at its end.
    let task = f[2..f.len() - 3].join(" ");
    if task == "<idle>" {
        return Some(Switch {
            tid: 0,
            pid: 0,
            idle: true,
            wait,
            delay,
            run,
        });
    }
    let ids = task.rsplit_once('[')?.1.strip_suffix(']')?;
    let (tid, pid) = match ids.split_once('/') {
        Some((t, p)) => (t.parse().ok()?, p.parse().ok()?),
        None => {
            let t = ids.parse().ok()?;
            (t, t)
        }
    };
    Some(Switch {
        tid,
        pid,
        idle: false,
        wait,
        delay,
        run,
    })
}

/// What one traced drain showed.
struct Seen {
    /// The emulator's main thread: ran, waited for a CPU (ms), times it was switched in.
    server_run: f64,
    server_delay: f64,
    server_switches: usize,
    /// The client's threads' waits for a CPU once woken (ms each).
    client_delays: Vec<f64>,
    /// The CPUs' idle time (ms, all CPUs).
    idle: f64,
}

/// `perf sched timehist` of `data` between `from` and `to` (CLOCK_MONOTONIC seconds): the
/// emulator's main thread `server`, and the client's threads (`client(tid, pid)`).
fn timehist(
    data: &str,
    from: f64,
    to: f64,
    server: i64,
    client: impl Fn(i64, i64) -> bool,
) -> Seen {
    let out = Command::new("perf")
        .args([
            "sched",
            "timehist",
            "-i",
            data,
            "--time",
            &format!("{from:.6},{to:.6}"),
        ])
        .stderr(Stdio::null())
        .output()
        .expect("perf sched timehist");
    let mut s = Seen {
        server_run: 0.0,
        server_delay: 0.0,
        server_switches: 0,
        client_delays: vec![],
        idle: 0.0,
    };
    for sw in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse)
    {
        if sw.idle {
            s.idle += sw.run;
        } else if sw.tid == server {
            s.server_run += sw.run;
            s.server_delay += sw.delay;
            s.server_switches += 1;
        } else if client(sw.tid, sw.pid) {
            // A thread switched in without having slept was preempted: its wait is no wake-up's.
            if sw.wait > 0.0 {
                s.client_delays.push(sw.delay);
            }
        }
    }
    s
}

/// `perf sched record` of the whole machine into `data` while `drain` runs; the drain's
/// window (CLOCK_MONOTONIC seconds) and what it returns.
fn traced<T>(data: &str, drain: impl FnOnce() -> T) -> (f64, f64, T) {
    let perf = Perf::start(&["sched", "record", "-k", "CLOCK_MONOTONIC", "-a", "-o", data]);
    let from = monotonic();
    let r = drain();
    let to = monotonic();
    perf.stop();
    (from, to, r)
}

pub fn sched(sqs: &Sqs) -> String {
    let n = env_or("BENCH_PROFILE_N", 50_000);
    let rounds = env_or("BENCH_SCHED_ROUNDS", 2);
    let parallel = 4;
    let server: i64 = sqs
        .pid
        .as_deref()
        .and_then(|p| p.parse().ok())
        .expect("the emulator's process id (BENCH_FAUXQS_PID)");
    println!("\n== sched: the bare client and one load_user_logins() at {parallel} on fauxqs, {n} messages, {rounds} rounds, perf sched attached");
    let dir = format!("{}/bench/results", env("BENCH_ROOT"));
    std::fs::create_dir_all(&dir).unwrap();
    let data = format!("{dir}/sched.data");
    let me = std::process::id() as i64;
    let mut table = String::from(
        "| round | | msg/s | event loop ran (% of the drain) | slept, no request (%) | waited for a CPU (%) | \
         event loop's switches per 1,000 msg | client threads' wait for a CPU per wake-up, mean µs | \
         wake-ups waiting > 1 ms | CPUs idle (%) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for round in 0..rounds {
        for bare in [true, false] {
            let m = messages(n, 0x5c4e + round as u64);
            let url = sqs.create(&format!(
                "bench-sched-{}-{round}-{}",
                std::process::id(),
                if bare { "bare" } else { "loader" }
            ));
            sqs.fill(&url, &m.bodies);
            let mut c = crate::common::connect("bench");
            reset_tables(&mut c);
            steady_wal(&mut c);
            let (name, seen, took) = if bare {
                let (from, to, _) = traced(&data, || sqs.bare_drain(&url, n, parallel));
                // The bench's own threads other than this one (the bare client's).
                let seen = timehist(&data, from, to, server, |tid, pid| pid == me && tid != me);
                ("bare client, 4 parallel", seen, to - from)
            } else {
                let (mut l, backend) = loader_session(&sqs.base, parallel);
                let (from, to, _) = traced(&data, || {
                    l.query_one("CALL load_user_logins($1)", &[&url]).unwrap()
                });
                let b = backend as i64;
                let seen = timehist(&data, from, to, server, |_, pid| pid == b);
                ("load_user_logins(), 1 run, 4 parallel", seen, to - from)
            };
            let ms = took * 1000.0;
            let pct = |x: f64| format!("{:.1}", 100.0 * x / ms);
            let slept = ms - seen.server_run - seen.server_delay;
            let mean = if seen.client_delays.is_empty() {
                0.0
            } else {
                seen.client_delays.iter().sum::<f64>() / seen.client_delays.len() as f64
            };
            let long = seen.client_delays.iter().filter(|&&d| d > 1.0).count();
            println!(
                "  round {}: {name}: {:.0} msg/s, event loop ran {:.0} of {:.0} ms; client wake-ups {} (mean CPU wait {:.0} µs, {long} > 1 ms)",
                round + 1,
                n as f64 / took,
                seen.server_run,
                ms,
                seen.client_delays.len(),
                mean * 1000.0
            );
            let cpus = std::thread::available_parallelism().map_or(1, |p| p.get()) as f64;
            let _ = writeln!(
                table,
                "| {} | {name} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {:.1} % | {:.1} |",
                round + 1,
                n as f64 / took,
                pct(seen.server_run),
                pct(slept.max(0.0)),
                pct(seen.server_delay),
                seen.server_switches as f64 * 1000.0 / n as f64,
                mean * 1000.0,
                100.0 * long as f64 / seen.client_delays.len().max(1) as f64,
                100.0 * seen.idle / (ms * cpus),
            );
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Who waits for whom: the bare client and one loader run at 4 on fauxqs, {n} messages, {rounds} rounds (`perf sched`)\n\n\
         Per drain, from `perf sched timehist` over the drain alone (`perf sched timehist -i bench/results/sched.data` for the last one). \
         The event loop is fauxqs's main thread; \"slept\" is the time it had no request to serve. \
         The client's threads are the bare client's, or the loading backend and its I/O threads.\n\n{}",
        table
    );
    print!("{out}");
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_timehist_lines() {
        let idle = parse("   44098.504039 [0001]  <idle>                              0.000      0.000      0.955 ").unwrap();
        assert!(idle.idle);
        assert_eq!(idle.run, 0.955);
        let t = parse("   42758.833943 [0000]  sqs_loader-io[14582/14566]          7.102      3.883      0.066 ").unwrap();
        assert_eq!((t.tid, t.pid, t.idle), (14582, 14566, false));
        assert_eq!((t.wait, t.delay, t.run), (7.102, 3.883, 0.066));
        let m = parse("   42758.834871 [0001]  node[14325]                         3.400      0.027      0.917 ").unwrap();
        assert_eq!((m.tid, m.pid), (14325, 14325));
        assert!(parse("           time    cpu  task name                       wait time  sch delay   run time").is_none());
    }
}
