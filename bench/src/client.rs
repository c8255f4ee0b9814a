//! `make bench ARGS=client`: the SQS client's CPU per request without network, for the two
//! steps #16 changed on the I/O threads: signing a request (aws-sigv4's general `sign()`
//! against the direct signer the client uses) and decoding a DeleteMessageBatch reply (through
//! a `serde_json::Value` against the direct decoder). Both ways run in this process, taking
//! turns in rounds, timed by this thread's CPU clock, on requests of the loader's shape: a
//! receive, and a delete of 10 receipt handles as long as fauxqs's.

use crate::common::Table;
use sqs_loader::sqs::credentials::Credentials;
use sqs_loader::sqs::{sign, wire, Action, Protocol, Request};
use std::time::{Duration, UNIX_EPOCH};

/// This thread's CPU time, in seconds.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// µs of CPU per call of `f`, over `n` calls.
fn per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let t0 = thread_cpu();
    for i in 0..n {
        f(i);
    }
    (thread_cpu() - t0) / n as f64 * 1e6
}

pub fn client(runs: usize, quick: bool) -> String {
    let n = if quick { 2_000 } else { 20_000 };
    let url = "http://127.0.0.1:3000/";
    let queue_url = "http://127.0.0.1:3000/000000000000/bench".to_string();
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
        expires_at: None,
        provider: "bench",
    };
    let receive = wire::encode(
        Protocol::Json,
        &Request::Receive {
            queue_url: queue_url.clone(),
            max_messages: 10,
            visibility_timeout: None,
            wait_seconds: 0,
            attempt_id: None,
        },
    );
    // fauxqs's receipt handles: about 180 characters of base64.
    let delete_req = Request::DeleteBatch {
        queue_url,
        entries: (0..10)
            .map(|i| {
                (
                    i.to_string(),
                    format!("{i:02}{}", "AQEB5xq+9Zr/Kw".repeat(13)),
                )
            })
            .collect(),
    };
    let delete = wire::encode(Protocol::Json, &delete_req);
    let reply: String = format!(
        "{{\"Successful\":[{}],\"Failed\":[]}}",
        (0..10)
            .map(|i| format!("{{\"Id\":\"{i}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let header = |_: &str| None;
    // Seconds that change with the call, as they do between requests: the day stays the same.
    let time = |i: usize| UNIX_EPOCH + Duration::from_secs(1_764_547_200 + (i % 80_000) as u64);

    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("sign a receive: aws-sigv4 sign()", vec![]),
        ("sign a receive: direct", vec![]),
        ("sign a delete of 10: aws-sigv4 sign()", vec![]),
        ("sign a delete of 10: direct", vec![]),
        ("decode a delete reply of 10: serde_json Value", vec![]),
        ("decode a delete reply of 10: direct", vec![]),
    ];
    println!(
        "\n== SQS client CPU per request, no network: {n} calls per measurement, {runs} rounds"
    );
    for round in 0..runs {
        let mut m = [0.0; 6];
        // Alternate which way goes first.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &way in &order {
            for (k, req) in [(0, &receive), (2, &delete)] {
                m[k + way] = per_call(n, |i| {
                    let h = if way == 0 {
                        sign::with_crate("sqs", req, url, &creds, "us-east-1", time(i))
                    } else {
                        sign::signed_headers(req, url, &creds, "us-east-1", time(i))
                    };
                    assert_eq!(h.unwrap().len(), 2);
                });
            }
            m[4 + way] = per_call(n, |_| {
                let r = if way == 0 {
                    wire::decode_json_value(Action::DeleteMessageBatch, &reply).unwrap()
                } else {
                    wire::decode(
                        Protocol::Json,
                        &delete_req,
                        200,
                        &header,
                        reply.as_bytes(),
                        url,
                        false,
                    )
                    .unwrap()
                };
                assert!(
                    matches!(r, sqs_loader::sqs::Response::Batch { ref successful, .. } if successful.len() == 10)
                );
            });
        }
        for (row, v) in rows.iter_mut().zip(m) {
            row.1.push(v);
        }
    }
    let mut table = Table::default();
    for (name, samples) in rows {
        table.add(name, "µs", samples, String::new());
    }
    let ratio = |a: &str, b: &str| table.median_of(b) / table.median_of(a);
    let mut s =
        table.render("SQS client CPU per request, without network (`make bench ARGS=client`)");
    s.push_str(&format!(
        "\nDirect ÷ general (medians): sign a receive {:.2}, sign a delete {:.2}, decode a delete reply {:.2}. \
         The loader makes one receive and one delete per 10 messages.\n",
        ratio("sign a receive: aws-sigv4 sign()", "sign a receive: direct"),
        ratio("sign a delete of 10: aws-sigv4 sign()", "sign a delete of 10: direct"),
        ratio(
            "decode a delete reply of 10: serde_json Value",
            "decode a delete reply of 10: direct"
        ),
    ));
    s
}
