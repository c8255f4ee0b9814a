//! 2. mask: inserting pre-received rows unmasked, through sqs_loader's masking, and through a
//!    pgcrypto-only equivalent; plus 100,000 distinct values through mask_pii_batch and 1,000
//!    through mask_pii one by one (each call is audited by a background worker).

use crate::common::{connect, env, messages, reset_tables, spread, Table};
use postgres::Client;
use std::fmt::Write as _;
use std::time::Instant;

pub fn mask(rows: usize, pgcrypto_rows: usize, runs: usize) -> String {
    println!("\n== masking cost without network: {rows} rows ({pgcrypto_rows} for pgcrypto), {runs} runs each");
    let mut c = connect("bench");
    let n_rows = load_rows(&mut c, rows, pgcrypto_rows);
    let pgp_pub = std::fs::read_to_string(format!("{}/pgp_public.asc", env("BENCH_KEYS"))).unwrap();
    let hmac_key = "bench-hmac-key-0123456789abcdef0123456789abcdef";
    let pgcrypto = |src: &str| {
        format!(
            "WITH v AS (SELECT ip AS x FROM {src} UNION SELECT device_id FROM {src}),
                  ins AS (INSERT INTO pgc_vault
                          SELECT encode(hmac(x, '{hmac_key}', 'sha256'), 'base64'), pgp_pub_encrypt(x, dearmor($1))
                            FROM v ON CONFLICT DO NOTHING)
             INSERT INTO user_logins
             SELECT user_id, device_type, encode(hmac(ip, '{hmac_key}', 'sha256'), 'base64'),
                    encode(hmac(device_id, '{hmac_key}', 'sha256'), 'base64'), locale, app_version, current_date
               FROM {src}"
        )
    };
    let mut t = Table::default();
    let time = |c: &mut Client, sql: &str, param: Option<&str>, n: i64| -> f64 {
        reset_tables(c);
        c.batch_execute("TRUNCATE pgc_vault").unwrap();
        let start = Instant::now();
        match param {
            Some(p) => {
                c.execute(sql, &[&p]).unwrap();
            }
            None => c.batch_execute(sql).unwrap(),
        }
        per_row(c, start, n)
    };
    let small: i64 = c
        .query_one("SELECT count(*) FROM bench_rows_small", &[])
        .unwrap()
        .get(0);
    // (a), (a'), (b), (b2) and (b3) take turns, round by round (the host's speed drifts).
    insert_cost(&mut c, &mut t, "", n_rows, runs, true);
    let b_small: Vec<f64> = (0..runs)
        .map(|_| time(&mut c, &ours("bench_rows_small"), None, small))
        .collect();
    t.add(
        "(b') the same, on the pgcrypto subset",
        "µs/row",
        b_small,
        format!("{small} rows"),
    );
    let pc: Vec<f64> = (0..runs)
        .map(|_| time(&mut c, &pgcrypto("bench_rows_small"), Some(&pgp_pub), small))
        .collect();
    t.add(
        "(c) insert through pgcrypto (hmac + pgp_pub_encrypt per value)",
        "µs/row",
        pc,
        format!("{small} rows"),
    );
    let mut ratios = String::new();
    let arrays = t.median_of("(a') insert unmasked, from the column arrays");
    let _ = writeln!(
        ratios,
        "\nmasking: (b)/(a) = {:.1} with both values new (target ≤ 12); (b2)/(a) = {:.1} with both already in the vault (target ≤ 3), (b3)/(a) = {:.1} in a new backend; (a')/(a) = {:.1} (the column arrays)",
        t.median_of("(b) insert through sqs_loader masking (tokens + vault)")
            / t.median_of("(a) insert unmasked"),
        t.median_of("(b2) the same, both values already in the vault, known to the backend")
            / t.median_of("(a) insert unmasked"),
        t.median_of("(b3) the same, both values already in the vault, a new backend")
            / t.median_of("(a) insert unmasked"),
        arrays / t.median_of("(a) insert unmasked")
    );
    // The same ratios round by round (each round measures (a), (b) and (b2) seconds apart).
    let paired = |x: &str| {
        spread(
            &crate::common::ratios(t.samples_of("(a) insert unmasked"), t.samples_of(x)),
            1,
        )
    };
    let _ = writeln!(
        ratios,
        "masking: round by round, median (min – max): (b)/(a) = {}, (b2)/(a) = {}",
        paired("(b) insert through sqs_loader masking (tokens + vault)"),
        paired("(b2) the same, both values already in the vault, known to the backend")
    );
    let _ = writeln!(
        ratios,
        "masking: over (a'): (b)/(a') = {:.1}, (b2)/(a') = {:.1}; the masking itself (b − a', b2 − a') = {:.2} / {:.2} µs per value",
        t.median_of("(b) insert through sqs_loader masking (tokens + vault)") / arrays,
        t.median_of("(b2) the same, both values already in the vault, known to the backend") / arrays,
        (t.median_of("(b) insert through sqs_loader masking (tokens + vault)") - arrays) / 2.0,
        (t.median_of("(b2) the same, both values already in the vault, known to the backend") - arrays) / 2.0
    );
    let _ = writeln!(
        ratios,
        "masking: (c)/(b') = {:.1} (target ≥ 10)",
        t.median_of("(c) insert through pgcrypto (hmac + pgp_pub_encrypt per value)")
            / t.median_of("(b') the same, on the pgcrypto subset")
    );
    // Issue #3: 100,000 distinct values, bulk path and one by one.
    let mut u = Table::default();
    let mut run = 0;
    let mut values_per_s = |c: &mut Client, sql: &str, want: i64| -> f64 {
        run += 1;
        reset_tables(c);
        let sql = sql.replace("{run}", &run.to_string());
        let start = Instant::now();
        let n: i64 = c.query_one(&sql, &[]).unwrap().get(0);
        let took = start.elapsed().as_secs_f64();
        assert_eq!(n, want);
        n as f64 / took
    };
    let bulk: Vec<f64> = (0..runs)
        .map(|_| values_per_s(&mut c, "SELECT count(*) FROM mask_pii_batch(ARRAY(SELECT 'b{run}-' || i FROM generate_series(1, 100000) i))", 100_000))
        .collect();
    u.add(
        "mask_pii_batch(): 100,000 distinct values",
        "values/s",
        bulk,
        "one backend (one core)".into(),
    );
    let single: Vec<f64> = (0..runs)
        .map(|_| {
            values_per_s(
                &mut c,
                "SELECT count(mask_pii('s{run}-' || i)) FROM generate_series(1, 1000) i",
                1_000,
            )
        })
        .collect();
    u.add(
        "mask_pii() one by one: 1,000 distinct values",
        "values/s",
        single,
        "each call writes its audit row through a background worker".into(),
    );
    let _ = writeln!(
        ratios,
        "masking: mask_pii_batch() = {:.0} distinct values/s on one core (target ≥ 50,000)",
        u.median_of("mask_pii_batch(): 100,000 distinct values")
    );
    print!("{ratios}");
    format!(
        "{}{}{}",
        t.render("Masking cost without network (lower is better)"),
        u.render("Masking throughput"),
        ratios.replace('\n', "\n\n")
    )
}

/// The sample-shaped rows to insert, parsed once: `bench_rows` (`rows` messages' valid ones)
/// and `bench_rows_small` (the first `small`), and each as one row of column arrays
/// (`…_arrays`); returns the number in `bench_rows`.
pub fn load_rows(c: &mut Client, rows: usize, small: usize) -> i64 {
    let bodies = messages(rows, 0xfeed).bodies;
    c.batch_execute(
        "DROP TABLE IF EXISTS bench_bodies, bench_rows, bench_rows_small, pgc_vault;
         CREATE TABLE bench_bodies(body text);
         CREATE TABLE pgc_vault(token text PRIMARY KEY, sealed bytea);",
    )
    .unwrap();
    let mut w = c.copy_in("COPY bench_bodies(body) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')").unwrap();
    use std::io::Write;
    for b in &bodies {
        writeln!(w, "{b}").unwrap();
    }
    w.finish().unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE bench_rows AS SELECT p.* FROM bench_bodies, sqs_loader.parse_login(body) p WHERE p.reject_reason IS NULL;
         CREATE TABLE bench_rows_small AS SELECT * FROM bench_rows LIMIT {small};
         ANALYZE bench_rows, bench_rows_small;"
    ))
    .unwrap();
    // The rows as the loader gets them from pull(): column arrays (stored out of line and
    // uncompressed, so that reading them back costs no decompression the loader never pays).
    for t in ["bench_rows", "bench_rows_small"] {
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS {t}_arrays;
             CREATE TABLE {t}_arrays(u text[], d text[], ips text[], devs text[], l text[], v int[], n int);
             ALTER TABLE {t}_arrays ALTER u SET STORAGE EXTERNAL, ALTER d SET STORAGE EXTERNAL,
               ALTER ips SET STORAGE EXTERNAL, ALTER devs SET STORAGE EXTERNAL,
               ALTER l SET STORAGE EXTERNAL, ALTER v SET STORAGE EXTERNAL;
             INSERT INTO {t}_arrays
             SELECT array_agg(user_id), array_agg(device_type), array_agg(ip), array_agg(device_id),
                    array_agg(locale), array_agg(app_version), count(*) FROM {t};"
        ))
        .unwrap();
    }
    c.query_one("SELECT count(*) FROM bench_rows", &[])
        .unwrap()
        .get(0)
}

fn unmasked(src: &str) -> String {
    format!(
        "INSERT INTO user_logins SELECT user_id, device_type, ip, device_id, locale, app_version, current_date FROM {src}"
    )
}

/// The shape of load_batch(): the rows as column arrays (built beforehand from `src`, as pull()
/// hands them to the loader: see [`load_rows`]), the IPs and the device ids masked with a
/// mask_values() call each (prepare_batch() masks both in one call and returns them as two
/// columns, as these give them: no concatenated array to slice), the rows inserted from the
/// arrays unnested in a select list, as load_batch() does (not unnest(a, b, …) in FROM, which
/// copies each array into a tuplestore first).
fn ours(src: &str) -> String {
    from_arrays(src, "sqs_loader.mask_values")
}

/// (a') the same rows from the same column arrays, unmasked: what the array plumbing costs.
fn unmasked_from_arrays(src: &str) -> String {
    from_arrays(src, "")
}

/// The insert from `src`'s column arrays, the IPs and the device ids passed through the
/// function `mask` (none when empty).
fn from_arrays(src: &str, mask: &str) -> String {
    format!(
        "INSERT INTO user_logins
         SELECT x.user_id, x.device_type, x.ip, x.dev, x.locale, x.app_version, current_date
           FROM {src}_arrays a,
                LATERAL (SELECT {mask}(a.ips) AS ips, {mask}(a.devs) AS devs) m,
                LATERAL (SELECT unnest(a.u), unnest(a.d), unnest(m.ips), unnest(m.devs),
                                unnest(a.l), unnest(a.v))
                   AS x(user_id, device_type, ip, dev, locale, app_version)"
    )
}

/// (a) the `n_rows` of bench_rows inserted unmasked, (a') the same from the column arrays and
/// (b) through the masking, into empty tables; with `stored`, also (b2) and (b3): both values
/// already in the vault. `runs` rounds, each measuring every row once in this order (the host's
/// speed drifts within minutes, so the rows take turns instead of running back to back): rows
/// "(a) …{label}" etc. of `t`.
pub fn insert_cost(
    c: &mut Client,
    t: &mut Table,
    label: &str,
    n_rows: i64,
    runs: usize,
    stored: bool,
) {
    let time = |c: &mut Client, sql: &str| -> f64 {
        reset_tables(c);
        let start = Instant::now();
        c.batch_execute(sql).unwrap();
        per_row(c, start, n_rows)
    };
    // A fresh cluster creates (zero-fills) a new 16 MB WAL segment every few thousand rows of
    // (b), until checkpoints recycle old ones; rounds measured from cold got faster one after
    // the other (here: (a) 1.27, 0.98, 0.74 and (b) 15.3, 10.6, 8.6 µs per row), (b), which
    // writes four times the WAL per row, more so. So one unmeasured round first, then a
    // checkpoint: the rounds measure a server that has been loading.
    time(c, &unmasked("bench_rows"));
    time(c, &unmasked_from_arrays("bench_rows"));
    time(c, &ours("bench_rows"));
    if stored {
        in_vault(c, n_rows, true);
    }
    c.batch_execute("CHECKPOINT").unwrap();
    let (mut a, mut a2, mut b, mut b2, mut b3) = (vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=runs {
        a.push(time(c, &unmasked("bench_rows")));
        a2.push(time(c, &unmasked_from_arrays("bench_rows")));
        b.push(time(c, &ours("bench_rows")));
        if stored {
            b2.push(in_vault(c, n_rows, true));
            b3.push(in_vault(c, n_rows, false));
        }
        let last = |v: &[f64]| v.last().map_or("–".into(), |x| format!("{x:.2}"));
        println!(
            "  round {round} of {runs}{label}: µs/row (a) {}, (a') {}, (b) {}, (b2) {}, (b3) {}",
            last(&a),
            last(&a2),
            last(&b),
            last(&b2),
            last(&b3)
        );
    }
    let note = format!("{n_rows} rows");
    t.add(
        &format!("(a) insert unmasked{label}"),
        "µs/row",
        a,
        note.clone(),
    );
    t.add(
        &format!("(a') insert unmasked, from the column arrays{label}"),
        "µs/row",
        a2,
        note.clone(),
    );
    t.add(
        &format!("(b) insert through sqs_loader masking (tokens + vault){label}"),
        "µs/row",
        b,
        note.clone(),
    );
    if stored {
        t.add(
            "(b2) the same, both values already in the vault, known to the backend",
            "µs/row",
            b2,
            format!("{n_rows} rows; sqs_loader.known_tokens = 1000000"),
        );
        t.add(
            "(b3) the same, both values already in the vault, a new backend",
            "µs/row",
            b3,
            note,
        );
    }
}

/// Both values already in the vault (stored by an earlier committed load): a device or an
/// address seen before. In the backend that stored them, which remembers them (with
/// sqs_loader.known_tokens raised to hold all 400,000), or in a new backend, which does not.
fn in_vault(c: &mut Client, n_rows: i64, same_backend: bool) -> f64 {
    reset_tables(c);
    c.batch_execute("SET sqs_loader.known_tokens = 1000000")
        .unwrap();
    c.batch_execute(&ours("bench_rows")).unwrap();
    c.batch_execute("TRUNCATE user_logins").unwrap();
    let mut fresh = connect("bench");
    let timed: &mut Client = if same_backend { c } else { &mut fresh };
    let start = Instant::now();
    timed.batch_execute(&ours("bench_rows")).unwrap();
    let us = per_row(c, start, n_rows);
    c.batch_execute("RESET sqs_loader.known_tokens").unwrap();
    us
}

/// µs per row since `start`, after checking `user_logins` holds all `n` rows.
fn per_row(c: &mut Client, start: Instant, n: i64) -> f64 {
    let took = start.elapsed().as_secs_f64();
    let loaded: i64 = c
        .query_one("SELECT count(*) FROM user_logins", &[])
        .unwrap()
        .get(0);
    assert_eq!(loaded, n);
    took * 1e6 / n as f64
}
