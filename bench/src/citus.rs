//! 6. citus: the same loads on the single node and on the local Citus cluster (a coordinator and
//!    two workers, scripts/citus.sh), on fauxqs, with the bare client's ceiling in the same run:
//!    1, 2 and 4 concurrent load_user_logins() runs; and the insert path without network, the
//!    masking table's (a) and (b), on both.

use crate::common::{connect, median, use_port, Table};
use crate::drain::{drain_once, Drainer};
use crate::mask::{insert_cost, load_rows};
use crate::sqs::Sqs;
use std::fmt::Write as _;

pub fn citus(sqs: &Sqs, coordinator: u16, n: usize, rows: usize, runs: usize) -> String {
    println!("\n== Citus: {n} messages per drain, {rows} messages' rows without network, {runs} runs each");
    let targets = [("single node", 0), ("Citus, 2 workers", coordinator)];
    let mut t = Table::default();
    let mut seed = 0xc175_0000_u64;
    let mut measure = |t: &mut Table, name: String, d: Drainer| {
        let v = (0..runs)
            .map(|_| {
                seed += 1;
                drain_once(sqs, d, n, seed).0
            })
            .collect();
        t.add(&name, "msg/s", v, String::new());
    };
    measure(
        &mut t,
        "bare client, 4 parallel".into(),
        Drainer::Bare { clients: 4 },
    );
    for (label, port) in targets {
        use_port(port);
        for k in [1, 2, 4] {
            measure(
                &mut t,
                format!("{label}: {k} concurrent load_user_logins() × 4 parallel"),
                Drainer::Loader {
                    runs: k,
                    parallel: 4,
                    adapt: Some(true),
                    // Concurrency itself is measured here, whatever the host's cores.
                    uncapped: true,
                },
            );
        }
    }
    let mut m = Table::default();
    for (label, port) in targets {
        use_port(port);
        let mut c = connect("bench");
        let n_rows = load_rows(&mut c, rows, 0);
        insert_cost(&mut c, &mut m, &format!(", {label}"), n_rows, runs, false);
        c.batch_execute("DROP TABLE bench_bodies, bench_rows, bench_rows_small, bench_rows_arrays, bench_rows_small_arrays, pgc_vault")
            .unwrap();
    }
    use_port(0);

    let mut ratios = String::new();
    let bare = t.median_of("bare client, 4 parallel");
    for k in [1, 2, 4] {
        let name = |label: &str| format!("{label}: {k} concurrent load_user_logins() × 4 parallel");
        let (single, dist) = (
            t.median_of(&name(targets[0].0)),
            t.median_of(&name(targets[1].0)),
        );
        let _ = writeln!(
            ratios,
            "citus: {k} loader(s): Citus {:.0} msg/s = {:.2}× the single node ({:.0} msg/s); {:.0} % / {:.0} % of the bare client at 4",
            dist,
            dist / single,
            single,
            100.0 * dist / bare,
            100.0 * single / bare
        );
    }
    for (label, _) in targets {
        let a = m.median_of(&format!("(a) insert unmasked, {label}"));
        let b = m.median_of(&format!(
            "(b) insert through sqs_loader masking (tokens + vault), {label}"
        ));
        let _ = writeln!(
            ratios,
            "citus: {label}: (a) {a:.2} µs/row, (b) {b:.2} µs/row, (b)/(a) = {:.1}",
            b / a
        );
    }
    let best = |label: &str| {
        t.rows
            .iter()
            .filter(|r| r.name.starts_with(label))
            .map(|r| median(&r.samples))
            .fold(0.0, f64::max)
    };
    let _ = writeln!(
        ratios,
        "citus: best configuration: Citus {:.0} msg/s, single node {:.0} msg/s (2 cores shared by the coordinator, 2 workers, fauxqs and the bench)",
        best(targets[1].0),
        best(targets[0].0)
    );
    print!("{ratios}");
    format!(
        "{}{}{}",
        t.render(
            "Citus: drain rate on fauxqs, single node vs coordinator + 2 workers (same machine)"
        ),
        m.render("Citus: insert path without network (lower is better)"),
        ratios.replace('\n', "\n\n")
    )
}
