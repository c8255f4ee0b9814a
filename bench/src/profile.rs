//! 5. profile (only when asked: `make bench ARGS=profile`): one `CALL load_user_logins()` at 4
//!    parallel requests draining 50,000 sample-shaped messages from fauxqs, with `perf record -g
//!    -a` running; prints the loading backend's CPU per message and its top symbols, and
//!    leaves the profile in bench/results/perf.data (`perf report -i …` to browse it).

use crate::common::{connect, env, env_or, messages, reset_tables};
use crate::sqs::Sqs;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn profile(sqs: &Sqs) -> String {
    let n = env_or("BENCH_PROFILE_N", 50_000);
    println!(
        "\n== profile: one load_user_logins() at 4 parallel, {n} messages on fauxqs, perf attached"
    );
    let m = messages(n, 0x9f0f);
    let url = sqs.create(&format!("bench-profile-{}", std::process::id()));
    sqs.fill(&url, &m.bodies);
    let mut c = connect("bench");
    reset_tables(&mut c);
    c.batch_execute(&format!(
        "SET sqs_loader.max_parallel_requests = 4; SET sqs_loader.wait_seconds = 0;
         SET sqs_loader.max_seconds = 3600; SET sqs_loader.visibility_timeout = 300;
         SET sqs_loader.endpoint = '{}';",
        sqs.base
    ))
    .unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let data = format!("{}/bench/results/perf.data", env("BENCH_ROOT"));
    // System-wide: `-p` misses most of the short-lived I/O threads, which do half the work.
    let mut perf = Command::new("perf")
        .args(["record", "-F", "997", "-g", "-a", "-o", &data])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf (apt install linux-perf)");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let main = format!("{pid}/task/{pid}");
    let before = crate::common::cpu_seconds(&pid.to_string());
    let main_before = crate::common::cpu_seconds(&main);
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
    c.query_one("CALL load_user_logins($1)", &[&url]).unwrap();
    // (At most one wrap-around of the counter in one load, checked by the count of threads.)
    let started = (last_pid() - pids_before).rem_euclid(pid_max);
    let took = start.elapsed().as_secs_f64();
    let used = crate::common::cpu_seconds(&pid.to_string()) - before;
    let used_main = crate::common::cpu_seconds(&main) - main_before;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    perf.wait().unwrap();
    let rows: i64 = c
        .query_one("SELECT count(*) FROM user_logins", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, m.valid, "the load is exact");
    let report = Command::new("perf")
        .args([
            "report",
            "-i",
            &data,
            "--no-children",
            "--pid",
            &pid.to_string(),
            "--sort",
            "comm,dso,symbol",
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
        "\n### Profile: one load_user_logins() at 4 parallel, {n} messages, fauxqs\n\n\
         {:.0} msg/s; the loading backend and its I/O threads used {:.2} s of CPU: **{:.1} µs per message**, \
         of which the backend's own thread {:.1} µs and its I/O threads (HTTP, JSON, signing) {:.1} µs; \
         {started} threads or processes were started on the machine meanwhile.\n\
         the top symbols of the loading backend and its I/O threads (self time, ≥ 1 % of all samples; `perf report -i bench/results/perf.data --pid PID`):\n\n{top}",
        n as f64 / took,
        used,
        used * 1e6 / n as f64,
        used_main * 1e6 / n as f64,
        (used - used_main) * 1e6 / n as f64
    );
    print!("{out}");
    out
}
