//! `BENCH_AB=<commit> make bench`: that commit's build (A, before) and this tree's (B, after)
//! measured in alternating rounds on one cluster (scripts/bench.sh switches the installed
//! extension and restarts the server between them), so that the host's drift over minutes
//! falls on both sides alike. Each round of a side appends its samples to `SAMPLES`; the report
//! pairs the k-th round of A with the k-th of B.

use crate::common::{env, env_or, ratios, spread};
use crate::drain::Cpu;
use std::fmt::Write as _;
use std::io::Write as _;

/// The samples of every round so far: side, configuration, msg/s, CPU µs/msg, of it the
/// backends' own threads (empty for the bare client).
const SAMPLES: &str = "bench/results/ab-samples.tsv";

fn path() -> String {
    format!("{}/{SAMPLES}", env("BENCH_ROOT"))
}

pub fn record(side: &str, name: &str, rate: f64, cpu: Option<Cpu>) {
    let (total, own) = match cpu {
        Some(c) => (
            format!("{:.2}", c.total),
            c.backend_thread
                .map(|o| format!("{o:.2}"))
                .unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path())
        .unwrap();
    writeln!(f, "{side}\t{name}\t{rate:.1}\t{total}\t{own}").unwrap();
}

/// One side's samples of one configuration, in round order.
#[derive(Default)]
struct Samples {
    rate: Vec<f64>,
    cpu: Vec<f64>,
    own: Vec<f64>,
}

pub fn report(rev: &str) -> String {
    let text = std::fs::read_to_string(path()).unwrap_or_else(|e| panic!("{}: {e}", path()));
    let mut names: Vec<String> = Vec::new();
    let mut sides: [Vec<Samples>; 2] = [Vec::new(), Vec::new()];
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let side = match f[0] {
            "A" => 0,
            "B" => 1,
            other => panic!("side {other} in {SAMPLES}"),
        };
        let i = names.iter().position(|n| n == f[1]).unwrap_or_else(|| {
            names.push(f[1].to_string());
            sides[0].push(Samples::default());
            sides[1].push(Samples::default());
            names.len() - 1
        });
        let s = &mut sides[side][i];
        s.rate.push(f[2].parse().unwrap());
        if let Ok(v) = f[3].parse() {
            s.cpu.push(v);
        }
        if let Ok(v) = f[4].parse() {
            s.own.push(v);
        }
    }
    let rounds = sides[0].first().map(|s| s.rate.len()).unwrap_or(0);
    let mut r = String::new();
    let _ = writeln!(
        r,
        "### Before and after, alternating rounds (BENCH_AB)\n\nA (before) = commit {rev}, B (after) = this tree; {rounds} rounds of each, \
         A and B taking turns (A B, B A, …) on one cluster restarted between them; fauxqs, {} messages per drain. \
         Each cell: median (min – max) over the rounds; the last two columns pair the k-th round of A with the k-th of B.\n",
        env_or("BENCH_DRAIN_N", 50_000)
    );
    let _ = writeln!(
        r,
        "| | A msg/s | A CPU µs/msg | A own thread | B msg/s | B CPU µs/msg | B own thread | CPU B ÷ A | msg/s B ÷ A |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, name) in names.iter().enumerate() {
        let (a, b) = (&sides[0][i], &sides[1][i]);
        let _ = writeln!(
            r,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            spread(&a.rate, 0),
            spread(&a.cpu, 1),
            spread(&a.own, 1),
            spread(&b.rate, 0),
            spread(&b.cpu, 1),
            spread(&b.own, 1),
            spread(&ratios(&a.cpu, &b.cpu), 2),
            spread(&ratios(&a.rate, &b.rate), 2),
        );
    }
    // More parallelism against one run at 4, round by round, on each side.
    let one = names
        .iter()
        .position(|n| n == "load_user_logins(), 1 run, 4 parallel");
    if let Some(one) = one {
        let _ = writeln!(
            r,
            "\nmsg/s ÷ one run at 4 in the same round (median (min – max)):\n"
        );
        let _ = writeln!(r, "| | A | B |\n|---|---:|---:|");
        for (i, name) in names.iter().enumerate() {
            if i == one || !name.starts_with("load_user_logins") {
                continue;
            }
            let _ = writeln!(
                r,
                "| {name} | {} | {} |",
                spread(&ratios(&sides[0][one].rate, &sides[0][i].rate), 2),
                spread(&ratios(&sides[1][one].rate, &sides[1][i].rate), 2),
            );
        }
    }
    r
}
