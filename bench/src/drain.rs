//! 1. drain: messages/s draining a freshly filled queue — a bare receive+delete client (the
//!    ceiling, no database) at 1/4/16 parallel requests, load_user_logins() (one run, two and four
//!    concurrent runs), a background worker, and a Python reference loader.

use crate::common::{
    connect, count, env, has_setting, loader_session, max, median, messages, min, reset_tables,
    steady_wal, Table,
};
use crate::sqs::{Depth, Sqs};
use std::fmt::Write as _;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// One run with `sqs_loader.adapt_requests = off`, at 4 and 16.
const FIXED_4: &str = "load_user_logins(), 1 run, 4 parallel, adapt_requests = off";
const FIXED_16: &str = "load_user_logins(), 1 run, 16 parallel, adapt_requests = off";
/// Four concurrent runs that all load (`sqs_loader.max_runs_per_queue = 0`), as before the cap.
const UNCAPPED_4X4: &str = "load_user_logins(), 4 concurrent runs × 4, max_runs_per_queue = 0";
const L4: &str = "load_user_logins(), 1 run, 4 parallel";
/// One run at 4 measured a second time in each round, half a round after the first: how far
/// two drains of one configuration move apart, the yardstick for every ratio between them.
const L4_AGAIN: &str = "load_user_logins(), 1 run, 4 parallel, again";

/// Who drains the queue.
#[derive(Clone, Copy)]
pub enum Drainer {
    /// The bare client with this many parallel clients.
    Bare {
        clients: usize,
    },
    /// `runs` concurrent CALL load_user_logins(), each with `parallel` requests in flight at
    /// most, fewer while fewer do if `adapt` (`sqs_loader.adapt_requests`; None: not set, for a
    /// build from BENCH_REV that predates the setting and always uses them all); with
    /// `uncapped`, every run loads at once (`sqs_loader.max_runs_per_queue = 0`), otherwise
    /// the setting's default decides how many do.
    Loader {
        runs: usize,
        parallel: usize,
        adapt: Option<bool>,
        uncapped: bool,
    },
    Python,
    /// One background worker (`sqs_loader.start_worker`) with `parallel` requests in flight.
    Worker {
        parallel: usize,
    },
}

/// CPU per message (µs): the whole process (bare client) or the loading backends with their
/// I/O threads, and of that the backends' own threads (what PostgreSQL and the SQL side did);
/// and the emulator's process meanwhile (when its pid is known).
#[derive(Clone, Copy)]
pub struct Cpu {
    pub total: f64,
    pub backend_thread: Option<f64>,
    pub server: Option<f64>,
}

/// One measurement: fill a fresh queue with `n` messages, drain it, check the result is exact;
/// messages per second, and the CPU used per message.
pub fn drain_once(sqs: &Sqs, d: Drainer, n: usize, seed: u64) -> (f64, Option<Cpu>) {
    let m = messages(n, seed);
    let url = sqs.create(&format!("bench-{}-{seed:x}", std::process::id()));
    sqs.fill(&url, &m.bodies);
    let mut c = connect("bench");
    reset_tables(&mut c);
    steady_wal(&mut c);
    let mut cpu: Option<Cpu> = None;
    // The emulator serves the drain alone from here (the fill is done).
    let server_before = sqs.pid.as_deref().map(crate::common::cpu_seconds);
    let took = match d {
        Drainer::Bare { clients } => {
            // What receiving and deleting alone cost (the same SQS client code, no database).
            let before = crate::common::cpu_seconds("self");
            let took = sqs.bare_drain(&url, n, clients);
            cpu = Some(Cpu {
                total: (crate::common::cpu_seconds("self") - before) * 1e6 / n as f64,
                backend_thread: None,
                server: None,
            });
            took
        }
        Drainer::Loader {
            runs,
            parallel,
            adapt,
            uncapped,
        } => {
            let barrier = Arc::new(Barrier::new(runs));
            let start = Instant::now();
            let handles: Vec<_> = (0..runs)
                .map(|_| {
                    let (url, barrier, base) = (url.clone(), barrier.clone(), sqs.base.clone());
                    std::thread::spawn(move || {
                        let (mut c, pid) = loader_session(&base, parallel);
                        if let Some(adapt) = adapt {
                            c.batch_execute(&format!("SET sqs_loader.adapt_requests = {adapt}"))
                                .unwrap();
                        }
                        if uncapped {
                            c.batch_execute("SET sqs_loader.max_runs_per_queue = 0")
                                .unwrap();
                        }
                        // The process (with its I/O threads, also those that ended) and its
                        // own thread.
                        let (all, main) = (pid.to_string(), format!("{pid}/task/{pid}"));
                        barrier.wait();
                        let before = (
                            crate::common::cpu_seconds(&all),
                            crate::common::cpu_seconds(&main),
                        );
                        c.query_one("CALL load_user_logins($1)", &[&url]).unwrap();
                        (
                            crate::common::cpu_seconds(&all) - before.0,
                            crate::common::cpu_seconds(&main) - before.1,
                        )
                    })
                })
                .collect();
            let (used, main) = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            let took = start.elapsed();
            cpu = Some(Cpu {
                total: used * 1e6 / n as f64,
                backend_thread: Some(main * 1e6 / n as f64),
                server: None,
            });
            let rows = count(&mut c, "SELECT count(*) FROM user_logins") as usize;
            let rejected =
                count(&mut c, "SELECT count(*) FROM sqs_loader.rejected_messages") as usize;
            assert_eq!(
                (rows, rejected),
                (m.valid, n - m.valid),
                "the load is exact"
            );
            took
        }
        Drainer::Worker { parallel } => {
            crate::latency::worker_settings(&mut c, &sqs.base, parallel);
            let start = Instant::now();
            crate::latency::start_worker(&mut c, &url);
            // From start_worker() (the process is started, connects, long-polls) to the last row.
            while count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages") < n as i64 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let took = start.elapsed();
            crate::latency::stop_worker(&mut c, &url);
            let rows = count(&mut c, "SELECT count(*) FROM user_logins") as usize;
            assert_eq!(rows, m.valid, "the worker's load is exact");
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
            let rows = count(&mut c, "SELECT count(*) FROM user_logins") as usize;
            assert_eq!(
                rows, m.valid,
                "the reference loader loaded every valid message"
            );
            Duration::from_secs_f64(secs)
        }
    };
    if let (Some(c), Some(before), Some(pid)) = (cpu.as_mut(), server_before, &sqs.pid) {
        c.server = Some((crate::common::cpu_seconds(pid) - before) * 1e6 / n as f64);
    }
    assert_eq!(
        sqs.depth(&url),
        Depth {
            visible: 0,
            in_flight: 0
        },
        "queue drained"
    );
    (n as f64 / took.as_secs_f64(), cpu)
}

/// The order of the configurations `0..len` in round `round` (1-based) of `rounds`: the list
/// rotated so that the rounds start evenly spread over it.
fn rotation(len: usize, rounds: usize, round: usize) -> impl Iterator<Item = usize> {
    let start = (round - 1) * len / rounds.max(1);
    (0..len).map(move |j| (start + j) % len)
}

/// What one drain section measures.
pub struct DrainPlan<'a> {
    pub label: &'a str,
    /// Messages per run (and for the Python loader, which is much slower).
    pub n: usize,
    pub n_python: usize,
    pub runs: usize,
    /// Also 16 parallel and the concurrent-run configurations.
    pub full: bool,
    /// A side of `BENCH_AB` (scripts/bench.sh): only the bare client at 4 and the loader runs
    /// that adapt, their samples appended to `ab::SAMPLES` under this name, no report.
    pub ab: Option<&'a str>,
}

pub fn drain(sqs: &Sqs, p: &DrainPlan) -> String {
    let (label, runs) = (p.label, p.runs);
    println!(
        "\n== drain on {label}: {} messages per run ({} for the Python loader), {runs} rounds",
        p.n, p.n_python
    );
    // What to measure: every configuration once per round, `runs` rounds. The host's speed
    // drifts over minutes (up to 2× within an hour here), so the configurations take turns
    // instead of running their drains back to back: each round compares them at one speed. Each
    // round starts further down the list (a rotation), so that no configuration always runs
    // right after the same other one or at the same point of a round.
    let mut plan: Vec<(String, Drainer, usize, String)> = Vec::new();
    let bare: &[usize] = if p.full { &[1, 4, 16] } else { &[1, 4] };
    for &k in bare {
        plan.push((
            format!("bare client, {k} parallel"),
            Drainer::Bare { clients: k },
            p.n,
            "ceiling: receive 10 + delete batch, no database".into(),
        ));
    }
    // The last two rows: what one run did before it adapted its requests in flight (left out
    // for a build without the setting, which always did).
    let adapting = has_setting("sqs_loader.adapt_requests");
    let capping = has_setting("sqs_loader.max_runs_per_queue");
    let mut loaders: Vec<(&str, usize, usize, bool, bool)> = vec![(L4, 1, 4, true, false)];
    if p.full {
        loaders.extend([
            ("load_user_logins(), 1 run, 16 parallel", 1, 16, true, false),
            (
                "load_user_logins(), 2 concurrent runs × 8",
                2,
                8,
                true,
                false,
            ),
            (
                "load_user_logins(), 4 concurrent runs × 4",
                4,
                4,
                true,
                false,
            ),
        ]);
        // What the cap on runs per queue changes (left out for a build without the setting).
        if capping {
            loaders.push((UNCAPPED_4X4, 4, 4, true, true));
        }
        if adapting {
            loaders.extend([
                (FIXED_4, 1, 4, false, false),
                (FIXED_16, 1, 16, false, false),
            ]);
        }
        if p.ab.is_none() {
            loaders.push((L4_AGAIN, 1, 4, true, false));
        }
    }
    for &(name, runs, parallel, adapt, uncapped) in &loaders {
        let note = if !(adapt && adapting) {
            "always max_parallel_requests in flight".to_string()
        } else if uncapped {
            "every run loads at once, as before the cap".to_string()
        } else if runs > 1 && capping {
            "max_runs_per_queue at its default: runs beyond it wait".to_string()
        } else if name == L4_AGAIN {
            "the same configuration again, half a round later: the noise floor".to_string()
        } else {
            String::new()
        };
        plan.push((
            name.into(),
            Drainer::Loader {
                runs,
                parallel,
                adapt: adapting.then_some(adapt),
                uncapped,
            },
            p.n,
            note,
        ));
    }
    if let Some(side) = p.ab {
        plan.retain(|(name, d, _, _)| match d {
            Drainer::Bare { clients } => *clients == 4,
            Drainer::Loader {
                adapt, uncapped, ..
            } => *adapt != Some(false) && !*uncapped,
            _ => unreachable!("{name}"),
        });
        let mut seed = 0x5eed_ab00_u64;
        for (name, d, n, _) in &plan {
            seed += 1;
            let (v, cpu) = drain_once(sqs, *d, *n, seed);
            println!("    {side}: {name}: {v:.0} msg/s");
            crate::ab::record(side, name, v, cpu);
        }
        return String::new();
    }
    plan.push((
        "background worker, 1 process, 4 parallel".into(),
        Drainer::Worker { parallel: 4 },
        p.n,
        "from start_worker() to the last row: includes starting the process".into(),
    ));
    plan.push((
        "Python reference loader (boto3 + psycopg2)".into(),
        Drainer::Python,
        p.n_python,
        format!("{} messages", p.n_python),
    ));
    let mut seed = 0x5eed_0000_u64 + label.len() as u64 * 1000;
    let mut rates = vec![Vec::new(); plan.len()];
    let mut cpus: Vec<Vec<Cpu>> = vec![Vec::new(); plan.len()];
    for round in 1..=runs {
        println!("  round {round} of {runs}");
        for i in rotation(plan.len(), runs, round) {
            let (name, d, n, _) = &plan[i];
            seed += 1;
            let (v, cpu) = drain_once(sqs, *d, *n, seed);
            println!("    {name}: {v:.0} msg/s");
            rates[i].push(v);
            cpus[i].extend(cpu);
        }
    }
    let mut t = Table::default();
    let mut cpu_rows = Table::default();
    for (i, (name, d, _, note)) in plan.iter().enumerate() {
        t.add(name, "msg/s", rates[i].clone(), note.clone());
        let cpu = &cpus[i];
        if cpu.is_empty() {
            continue;
        }
        let what = match d {
            Drainer::Bare { .. } => "CPU of the bare client's process (/proc/self/stat)",
            _ => "CPU of the loading backends and their I/O threads (/proc/PID/stat)",
        };
        cpu_rows.add(
            name,
            "µs/msg",
            cpu.iter().map(|c| c.total).collect(),
            what.into(),
        );
        let main: Vec<f64> = cpu.iter().filter_map(|c| c.backend_thread).collect();
        if !main.is_empty() {
            cpu_rows.add(
                &format!("{name}: backends' own threads"),
                "µs/msg",
                main,
                "of which the backends' own threads (/proc/PID/task/PID/stat); the rest is their I/O threads".into(),
            );
        }
        let server: Vec<f64> = cpu.iter().filter_map(|c| c.server).collect();
        if !server.is_empty() {
            cpu_rows.add(
                &format!("{name}: the emulator"),
                "µs/msg",
                server,
                format!("the {label} server's process meanwhile (/proc/PID/stat)"),
            );
        }
    }
    // A configuration against another, round by round (both measured minutes apart at most).
    let paired = |a: &str, b: &str| -> (f64, f64, f64) {
        let idx = |n: &str| {
            plan.iter()
                .position(|x| x.0 == n)
                .unwrap_or_else(|| panic!("no row {n}"))
        };
        let r = crate::common::ratios(&rates[idx(b)], &rates[idx(a)]);
        (median(&r), min(&r), max(&r))
    };
    let mut ratios = String::new();
    let b4 = t.median_of("bare client, 4 parallel");
    let l4 = t.median_of(L4);
    let py = t.median_of("Python reference loader (boto3 + psycopg2)");
    let (m, lo, hi) = paired(L4, "bare client, 4 parallel");
    let _ = writeln!(ratios, "\n{label}: load_user_logins() at 4 parallel = {:.0} % of the bare client at 4 (#16: ≥ 80 %); round by round {:.0} % ({:.0} – {:.0})", 100.0 * l4 / b4, 100.0 * m, 100.0 * lo, 100.0 * hi);
    let w4 = t.median_of("background worker, 1 process, 4 parallel");
    let _ = writeln!(ratios, "{label}: a background worker at 4 parallel = {:.0} % of the bare client at 4, {:.2}× load_user_logins() at 4 (target ≥ 1×)", 100.0 * w4 / b4, w4 / l4);
    if p.full {
        let b16 = t.median_of("bare client, 16 parallel");
        for &(name, ..) in loaders[1..].iter().filter(|l| l.3 && l.0 != L4_AGAIN) {
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
        .filter(|r| r.name.starts_with("load_user_logins"))
        .map(|r| median(&r.samples))
        .fold(0.0, f64::max);
    let _ = writeln!(ratios, "{label}: fastest load_user_logins() configuration = {:.1}× the Python reference loader (target ≥ 5×)", best / py);
    if p.full {
        // More requests in flight must never be slower than fewer (the configurations in order
        // of parallelism: 1 × 4 against 1 × 16, 2 × 8 and 4 × 4).
        let l16 = [
            "load_user_logins(), 1 run, 16 parallel",
            "load_user_logins(), 2 concurrent runs × 8",
            "load_user_logins(), 4 concurrent runs × 4",
        ]
        .map(|n| (n, t.median_of(n)));
        for (n, v) in l16 {
            let (m, lo, hi) = paired(n, L4);
            let _ = writeln!(ratios, "{label}: {n} = {:.2}× load_user_logins() at 4 (target ≥ 1×); round by round {m:.2}× ({lo:.2} – {hi:.2})", v / l4);
        }
        let (m, lo, hi) = paired(L4_AGAIN, L4);
        let _ = writeln!(ratios, "{label}: the noise floor of these ratios: 1 run at 4 measured twice per round, the second ÷ the first = {:.2}×; round by round {m:.2}× ({lo:.2} – {hi:.2})", t.median_of(L4_AGAIN) / l4);
        if adapting {
            let (f4, f16) = (t.median_of(FIXED_4), t.median_of(FIXED_16));
            let _ = writeln!(ratios, "{label}: without adapting the requests in flight: 1 run at 16 = {:.2}× 1 run at 4; adapting = {:.2}× at 4, {:.2}× at 16", f16 / f4, l4 / f4, l16[0].1 / f16);
        }
    }
    print!("{ratios}");
    format!(
        "{}{}{}",
        t.render(&format!("Drain rate, {label}")),
        cpu_rows.render(&format!("Loader CPU per message, {label}")),
        ratios.replace('\n', "\n\n")
    )
}

#[cfg(test)]
mod tests {
    use super::rotation;

    #[test]
    fn every_round_measures_every_configuration_once_starting_elsewhere() {
        for (len, rounds) in [(13, 5), (13, 3), (6, 1), (4, 8)] {
            let mut firsts = Vec::new();
            for round in 1..=rounds {
                let mut order: Vec<usize> = rotation(len, rounds, round).collect();
                firsts.push(order[0]);
                order.sort();
                assert_eq!(order, (0..len).collect::<Vec<_>>(), "{len} in {rounds}");
            }
            assert_eq!(firsts[0], 0);
            firsts.dedup();
            assert_eq!(
                firsts.len(),
                rounds.min(len),
                "{len} in {rounds}: {firsts:?}"
            );
        }
    }
}
