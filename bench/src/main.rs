//! `make bench`: every figure is a ratio measured in the same run on the same machine. One
//! module per benchmark:
//!
//! 1. [`drain`]: messages/s draining a freshly filled queue (bare client, loader, Python);
//! 2. [`mask`]: the cost of masking without network;
//! 3. [`memory`]: the loading backend's memory during a 1,000,000-message load;
//! 4. [`latency`]: end-to-end latency at a steady load, worker against pg_cron-style runs, and
//!    the cost of an idle worker;
//! 5. [`profile`] (only when asked): `perf` on the loading backend during one drain;
//! 6. [`citus`]: loads and the insert path on the single node and on a local Citus cluster;
//! 7. [`client`]: the SQS client's CPU per request without network (signing, decoding);
//! 8. [`sched`] (only when asked): `perf sched` during drains, who waits for whom.
//!
//! Configuration comes from the environment (set by scripts/bench.sh). Prints tables (median of
//! the runs, with min–max) and writes them, with the raw samples, to bench/results/.

mod ab;
mod citus;
mod client;
mod common;
mod drain;
mod latency;
mod mask;
mod memory;
mod profile;
mod proxy;
mod sched;
mod sqs;

use common::{env, env_or, setup_db};
use drain::{drain, DrainPlan};
use sqs::Sqs;
use std::fmt::Write as _;
use std::time::Instant;

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let runs = env_or("BENCH_RUNS", 3);
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    let fauxqs = Sqs::new(&env("BENCH_FAUXQS"), std::env::var("BENCH_FAUXQS_PID").ok());
    let localstack = Sqs::new(
        &env("BENCH_LOCALSTACK"),
        std::env::var("BENCH_LOCALSTACK_PID").ok(),
    );
    setup_db();
    // BENCH_AB (scripts/bench.sh): one round of one side, or the report of all rounds.
    match sections.as_slice() {
        [s] if s == "ab-drain" => {
            let side = env("BENCH_AB_SIDE");
            drain(
                &fauxqs,
                &DrainPlan {
                    label: "fauxqs",
                    n: env_or("BENCH_DRAIN_N", 50_000),
                    n_python: 0,
                    runs: 1,
                    full: true,
                    ab: Some(&side),
                },
            );
            return;
        }
        [s] if s == "ab-report" => {
            let dir = format!("{}/bench/results", env("BENCH_ROOT"));
            let report = ab::report(&env("BENCH_AB"));
            std::fs::write(format!("{dir}/ab.md"), &report).unwrap();
            println!("\n================ results (also in bench/results/ab.md)\n{report}");
            return;
        }
        _ => {}
    }
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
        "Machine: {} cores ({cpu}); PostgreSQL 15, sqs_loader release build{}; emulators and PostgreSQL on 127.0.0.1.",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        match std::env::var("BENCH_REV") {
            Ok(rev) if !rev.is_empty() => format!(" of commit {rev} (BENCH_REV)"),
            _ => String::new(),
        }
    );
    if want("drain") || want("drain-fauxqs") {
        // Its ratios between configurations are a few percent from their targets: five rounds
        // unless BENCH_RUNS says otherwise.
        let rounds = env_or("BENCH_RUNS", 5);
        let (n, npy) = if quick {
            (5_000, 1_000)
        } else {
            (
                env_or("BENCH_DRAIN_N", 50_000),
                env_or("BENCH_PY_N", 10_000),
            )
        };
        report += &drain(
            &fauxqs,
            &DrainPlan {
                label: "fauxqs",
                n,
                n_python: npy,
                runs: rounds,
                full: true,
                ab: None,
            },
        );
    }
    if want("drain") {
        let (n, npy) = if quick {
            (1_000, 500)
        } else {
            (env_or("BENCH_LS_N", 10_000), env_or("BENCH_LS_PY_N", 3_000))
        };
        report += &drain(
            &localstack,
            &DrainPlan {
                label: "LocalStack",
                n,
                n_python: npy,
                runs,
                full: !quick,
                ab: None,
            },
        );
    }
    if want("client") {
        report += &client::client(runs, quick);
    }
    if want("mask") {
        let (rows, small) = if quick {
            (20_000, 2_000)
        } else {
            (200_000, 20_000)
        };
        // Five rounds unless BENCH_RUNS says otherwise: (a) takes 0.15 s, short enough for one
        // checkpoint write or autovacuum pass to make a round's (a) 1.5-2x the others.
        report += &mask::mask(rows, small, env_or("BENCH_RUNS", 5));
    }
    if want("memory") {
        report += &memory::memory(
            &fauxqs,
            if quick {
                50_000
            } else {
                env_or("BENCH_MEMORY_N", 1_000_000)
            },
        );
    }
    if want("latency") {
        let (seconds, every, run) = if quick {
            (10, 10, 8)
        } else {
            (env_or("BENCH_LATENCY_SECONDS", 70) as u64, 60, 50)
        };
        for (label, sqs) in [("LocalStack", &localstack), ("fauxqs", &fauxqs)] {
            report += &latency::latency(
                sqs,
                &latency::LatencyPlan {
                    label,
                    rates: &[100, 2000],
                    seconds,
                    every: std::time::Duration::from_secs(every),
                    run,
                },
            );
        }
        report += &latency::idle(&localstack, if quick { 10 } else { 60 });
    }
    if want("citus") {
        let (n, rows) = if quick {
            (2_000, 5_000)
        } else {
            (20_000, 50_000)
        };
        let port = env("BENCH_CITUS_PGPORT").parse().unwrap();
        report += &citus::citus(&fauxqs, port, n, rows, runs);
    }
    if sections.iter().any(|x| x == "profile") {
        report += &profile::profile(&fauxqs);
    }
    if sections.iter().any(|x| x == "sched") {
        report += &sched::sched(&fauxqs);
    }
    let _ = writeln!(
        report,
        "\nTotal benchmark time: {:.1} min.",
        started.elapsed().as_secs_f64() / 60.0
    );
    let dir = format!("{}/bench/results", env("BENCH_ROOT"));
    std::fs::create_dir_all(&dir).unwrap();
    // A profile or the citus section alone does not replace the results of a full run.
    let file = match sections.as_slice() {
        [s] if s == "profile" => "profile.md",
        [s] if s == "sched" => "sched.md",
        [s] if s == "citus" => "citus.md",
        [s] if s == "client" => "client.md",
        _ => "results.md",
    };
    std::fs::write(format!("{dir}/{file}"), &report).unwrap();
    println!("\n================ results (also in bench/results/{file})\n{report}");
}
