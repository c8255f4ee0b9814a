//! `make bench ARGS=client`: the SQS client's CPU per request without network, for the two
//! steps #16 changed on the I/O threads: signing a request (aws-sigv4's general `sign()`
//! against the direct signer the client uses) and decoding a DeleteMessageBatch reply (through
//! a `serde_json::Value` against the direct decoder). Both ways run in this process, taking
//! turns in rounds, timed by this thread's CPU clock, on requests of the loader's shape: a
//! receive, and a delete of 10 receipt handles as long as fauxqs's. And a request over loopback
//! to a small HTTP server in this process (a receive's body out, a reply of ten messages' size
//! back, one kept-alive connection), through ureq's own TCP transport and through the client's
//! (`src/sqs/tcp.rs`): the calling thread's CPU, and the whole process's (the server included:
//! a request sent in two writes wakes it twice). And a whole receive of 10 sample-shaped
//! messages as the loader's I/O thread makes it (`sqs::http::call` on the loader's agent) against
//! the floor under any HTTP client on this host: the same bytes on a bare socket.

use crate::common::Table;
use sqs_loader::sqs::credentials::Credentials;
use sqs_loader::sqs::endpoint::{AddressPolicy, Endpoint};
use sqs_loader::sqs::http::{self, CallOptions};
use sqs_loader::sqs::{sign, wire, Action, Protocol, Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, UNIX_EPOCH};

/// This thread's CPU time, user and system, in seconds.
fn thread_cpu() -> f64 {
    crate::common::clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// All threads of this process, user and system.
fn process_cpu() -> f64 {
    crate::common::clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The head of the answer [`serve`] gives.
fn head(reply: &[u8]) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n",
        reply.len()
    )
}

/// Answers every POST on every connection with `reply` (keep-alive); returns its URL.
fn serve(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut answer = head(reply).into_bytes();
                answer.extend_from_slice(reply);
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                let mut body = Vec::new();
                loop {
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    body.resize(length, 0);
                    if reader.read_exact(&mut body).is_err()
                        || reader.get_mut().write_all(&answer).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
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
                    matches!(r, Response::Batch { ref successful, .. } if successful.len() == 10)
                );
            });
        }
        for (row, v) in rows.iter_mut().zip(m) {
            row.1.push(v);
        }
    }

    // Over loopback: ureq's TCP (its DefaultConnector) against the client's.
    let reply: &'static [u8] = Box::leak(
        format!(
            "{{\"Messages\":[{}]}}",
            (0..10)
                .map(|i| format!(
                    "{{\"MessageId\":\"{i:08}-0000-4000-8000-000000000000\",\"ReceiptHandle\":\"{}\",\"MD5OfBody\":\"0\",\"Body\":\"{}\"}}",
                    "AQEB5xq+9Zr/Kw".repeat(13),
                    "x".repeat(220)
                ))
                .collect::<Vec<_>>()
                .join(",")
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let server = serve(reply);
    let config = || {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
    };
    let agents = [
        ureq::Agent::new_with_config(config()),
        ureq::Agent::with_parts(
            config(),
            sqs_loader::sqs::http::connector(),
            ureq::unversioned::resolver::DefaultResolver::default(),
        ),
    ];
    let body = receive.body.clone();
    let n_net = n / 4;
    let request = |way: usize| {
        let mut r = agents[way]
            .post(&server)
            .header("content-type", "application/x-amz-json-1.0")
            .send(&body[..])
            .unwrap();
        let got = r.body_mut().read_to_vec().unwrap();
        assert_eq!(got.len(), reply.len());
    };
    let over = taking_turns(runs, n_net, &mut [&mut || request(0), &mut || request(1)]);
    // Round by round (the host's speed drifts between rounds, less within one).
    let paired = |a: &[f64], b: &[f64]| {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| b / a).collect();
        r.sort_by(f64::total_cmp);
        (r[r.len() / 2], r[0], r[r.len() - 1])
    };
    let (thread_ratio, process_ratio) = (paired(&over[0], &over[1]), paired(&over[2], &over[3]));
    let [a, b, c, d] = over;
    rows.push(("request over loopback, calling thread: ureq's TCP", a));
    rows.push(("request over loopback, calling thread: the client's TCP", b));
    rows.push(("request over loopback, whole process: ureq's TCP", c));
    rows.push(("request over loopback, whole process: the client's TCP", d));
    let [a, b, c, d] = receive_against_floor(runs, n_net, &creds);
    rows.push(("a receive of 10 as the loader makes it, calling thread", a));
    rows.push(("the same bytes on a bare socket, calling thread", b));
    rows.push(("a receive of 10 as the loader makes it, whole process", c));
    rows.push(("the same bytes on a bare socket, whole process", d));

    let mut table = Table::default();
    for (name, samples) in rows {
        table.add(name, "µs", samples, String::new());
    }
    let ratio = |a: &str, b: &str| table.median_of(b) / table.median_of(a);
    let mut s =
        table.render("SQS client CPU per request, without network (`make bench ARGS=client`)");
    s.push_str(&format!(
        "\nDirect ÷ general (medians): sign a receive {:.2}, sign a delete {:.2}, decode a delete reply {:.2}; \
         over loopback, the client's TCP ÷ ureq's, round by round, median (min – max): calling thread \
         {:.2} ({:.2} – {:.2}), whole process {:.2} ({:.2} – {:.2}). \
         A receive as the loader makes it ÷ the bare socket's floor (medians): calling thread {:.2}, \
         whole process {:.2}. The loader makes one receive and one delete per 10 messages.\n",
        ratio("sign a receive: aws-sigv4 sign()", "sign a receive: direct"),
        ratio("sign a delete of 10: aws-sigv4 sign()", "sign a delete of 10: direct"),
        ratio(
            "decode a delete reply of 10: serde_json Value",
            "decode a delete reply of 10: direct"
        ),
        thread_ratio.0,
        thread_ratio.1,
        thread_ratio.2,
        process_ratio.0,
        process_ratio.1,
        process_ratio.2,
        ratio(
            "the same bytes on a bare socket, calling thread",
            "a receive of 10 as the loader makes it, calling thread"
        ),
        ratio(
            "the same bytes on a bare socket, whole process",
            "a receive of 10 as the loader makes it, whole process"
        ),
    ));
    s
}

/// A receive of 10 sample-shaped messages over loopback as the loader's I/O thread makes it
/// (`sqs::http::call` on the loader's agent: encode, sign, send, read, decode and check the
/// bodies' MD5), against the floor under any HTTP client: the same request bytes written on a
/// bare kept-alive socket and the reply read until its length, nothing parsed. The same server
/// answers both. Returns µs per request: calling thread (loader, floor), whole process (loader,
/// floor), one sample per round, the two taking turns.
fn receive_against_floor(runs: usize, n: usize, creds: &Credentials) -> [Vec<f64>; 4] {
    let body = r#"{"user_id":"424cdd21-063a-43a7-b91b-7ca1a833afae","app_version":"2.3.0","device_type":"android","ip":"199.172.111.135","locale":"RU","device_id":"593-47-5928"}"#;
    let reply: &'static [u8] = Box::leak(
        format!(
            "{{\"Messages\":[{}]}}",
            (0..10)
                .map(|i| format!(
                    "{{\"MessageId\":\"{i:08}-0000-4000-8000-000000000000\",\"ReceiptHandle\":\"{i:02}{}\",\"MD5OfBody\":\"{}\",\"Body\":\"{}\",\"Attributes\":{{\"SentTimestamp\":\"1764547200000\",\"ApproximateReceiveCount\":\"1\"}}}}",
                    "AQEB5xq+9Zr/Kw".repeat(13),
                    wire::md5_hex(body.as_bytes()),
                    body.replace('"', "\\\"")
                ))
                .collect::<Vec<_>>()
                .join(",")
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let url = serve(reply);
    // 127.0.0.1:PORT
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        base: format!("http://{address}"),
        region: "us-east-1".into(),
        https: false,
        addresses: AddressPolicy::Any,
        proxy: None,
    };
    let agent = http::agent(&endpoint);
    let opts = CallOptions {
        protocol: Protocol::Json,
        timeout: Duration::from_secs(10),
        max_retries: 0,
        reveal_foreign_bodies: false,
    };
    let req = Request::Receive {
        queue_url: format!("{}/000000000000/bench", endpoint.base),
        max_messages: 10,
        visibility_timeout: None,
        wait_seconds: 0,
        attempt_id: None,
    };
    // The request's bytes as the loader would send them (its headers and signature), once.
    let encoded = wire::encode(Protocol::Json, &req);
    let signed = sign::signed_headers(
        &encoded,
        &url,
        creds,
        "us-east-1",
        std::time::SystemTime::now(),
    )
    .unwrap();
    let mut bytes = format!(
        "POST / HTTP/1.1\r\nhost: {address}\r\nuser-agent: sqs_loader/bench\r\naccept: */*\r\n"
    );
    for (k, v) in &encoded.headers {
        bytes.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in &signed {
        bytes.push_str(&format!("{k}: {v}\r\n"));
    }
    bytes.push_str(&format!("content-length: {}\r\n\r\n", encoded.body.len()));
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(&encoded.body);
    let answer = head(reply).len() + reply.len();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];

    let mut loader = || {
        let got = http::call(&agent, &endpoint, creds, &req, &opts).unwrap();
        assert!(matches!(got, Response::Received(ref m) if m.len() == 10));
    };
    let mut floor = || {
        socket.write_all(&bytes).unwrap();
        let mut got = 0;
        while got < answer {
            let k = socket.read(&mut buf).unwrap();
            assert!(k > 0, "the server closed the connection");
            got += k;
        }
        assert_eq!(got, answer);
    };
    taking_turns(runs, n, &mut [&mut loader, &mut floor])
}

/// Two ways of making a request, `n` calls of each per round, taking turns (which goes first
/// alternates): µs of CPU per call on the calling thread (first way, second way) and in the
/// whole process (first, second), one sample per round.
fn taking_turns(runs: usize, n: usize, ways: &mut [&mut dyn FnMut(); 2]) -> [Vec<f64>; 4] {
    let mut out = [vec![], vec![], vec![], vec![]];
    for round in 0..runs {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &way in &order {
            let p0 = process_cpu();
            let mine = per_call(n, |_| ways[way]());
            out[way].push(mine);
            out[2 + way].push((process_cpu() - p0) / n as f64 * 1e6);
        }
    }
    out
}
