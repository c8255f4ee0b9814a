//! Unit tests of the executor against an in-process fake SQS (AWS JSON 1.0 over HTTP/1.1 on
//! 127.0.0.1): windowing, draining, ordering and error aggregation, without Postgres.

use super::*;
use crate::sqs::endpoint;
use crate::sqs::Protocol;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

#[derive(Default)]
struct Fake {
    queue: Mutex<Vec<String>>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Every request of this action fails with HTTP 400 and this code.
    fail_action: Mutex<Option<(String, String)>>,
}

/// Serve the fake on an ephemeral port; every connection is handled on its own thread.
fn serve(fake: Arc<Fake>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let fake = fake.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let (mut target, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if let Some(v) = line.strip_prefix("x-amz-target:") {
                            target = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("X-Amz-Target:") {
                            target = v.trim().to_string();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let req: Value = serde_json::from_slice(&body).unwrap();
                    let (status, reply) = fake.handle(&target, &req);
                    let text = reply.to_string();
                    write!(
                        conn,
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    )
                    .unwrap();
                }
            });
        }
    });
    url
}

impl Fake {
    fn handle(&self, target: &str, req: &Value) -> (&'static str, Value) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Hold every request a little so that parallel ones overlap.
        std::thread::sleep(Duration::from_millis(5));
        let action = target.trim_start_matches("AmazonSQS.");
        let reply =
            if let Some((a, code)) = lock(&self.fail_action).clone().filter(|(a, _)| a == action) {
                let _ = a;
                (
                    "400 Bad Request",
                    json!({"__type": code, "message": "injected"}),
                )
            } else {
                ("200 OK", self.ok(action, req))
            };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        reply
    }

    fn ok(&self, action: &str, req: &Value) -> Value {
        match action {
            "ReceiveMessage" => {
                let n = req["MaxNumberOfMessages"].as_u64().unwrap() as usize;
                let mut q = lock(&self.queue);
                let k = n.min(q.len());
                let take: Vec<String> = q.drain(..k).collect();
                json!({"Messages": take.iter().map(|b| json!({
                    "MessageId": format!("id-{b}"),
                    "ReceiptHandle": format!("rh-{b}"),
                    "Body": b,
                    "Attributes": {"SentTimestamp": "1700000000000", "ApproximateReceiveCount": "1"}
                })).collect::<Vec<_>>()})
            }
            "SendMessageBatch" => {
                let entries = req["Entries"].as_array().unwrap();
                let mut q = lock(&self.queue);
                for e in entries {
                    q.push(e["MessageBody"].as_str().unwrap().to_string());
                }
                json!({"Successful": entries.iter().map(|e| json!({"Id": e["Id"], "MessageId": "m"})).collect::<Vec<_>>()})
            }
            "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => {
                let (ok, bad): (Vec<&Value>, Vec<&Value>) = req["Entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .partition(|e| !e["ReceiptHandle"].as_str().unwrap().contains("bad"));
                json!({
                    "Successful": ok.iter().map(|e| json!({"Id": e["Id"]})).collect::<Vec<_>>(),
                    "Failed": bad.iter().map(|e| json!({"Id": e["Id"], "Code": "ReceiptHandleIsInvalid",
                        "Message": "bad handle", "SenderFault": true})).collect::<Vec<_>>(),
                })
            }
            "GetQueueAttributes" => {
                json!({"Attributes": {"ApproximateNumberOfMessages": lock(&self.queue).len().to_string()}})
            }
            "CreateQueue" => {
                json!({"QueueUrl": format!("http://127.0.0.1/000000000000/{}", req["QueueName"].as_str().unwrap())})
            }
            other => panic!("unexpected action {other}"),
        }
    }
}

fn client(url: &str, max_parallel: usize) -> Client {
    Client {
        endpoint: endpoint::for_queue_url(&format!("{url}/000000000000/q"), None, "us-east-1")
            .unwrap(),
        configured: Configured {
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            session_token: None,
        },
        env: Env::default(),
        opts: CallOptions {
            protocol: Protocol::Json,
            timeout: Duration::from_secs(5),
            max_retries: 0,
        },
        max_parallel,
    }
}

fn fake_with(n: usize) -> (Arc<Fake>, Client) {
    let fake = Arc::new(Fake::default());
    lock(&fake.queue).extend((0..n).map(|i| i.to_string()));
    let url = serve(fake.clone());
    (fake, client(&url, 4))
}

const Q: &str = "http://127.0.0.1/000000000000/q";

#[test]
fn receive_takes_exactly_n_and_keeps_the_window() {
    let (fake, c) = fake_with(100);
    let got = c
        .receive(Q, ReceiveArgs::new(25, None, 0).unwrap())
        .unwrap();
    assert_eq!(got.len(), 25);
    assert_eq!(lock(&fake.queue).len(), 75);
    // 25 = 10 + 10 + 5: three requests, never more than max_parallel at once.
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    let got = c
        .receive(Q, ReceiveArgs::new(75, None, 0).unwrap())
        .unwrap();
    assert_eq!(got.len(), 75);
    assert!(fake.max_in_flight.load(Ordering::SeqCst) <= 4);
    assert!(
        fake.max_in_flight.load(Ordering::SeqCst) >= 2,
        "requests overlap"
    );
}

#[test]
fn receive_stops_when_the_queue_is_drained() {
    let (fake, c) = fake_with(12);
    let got = c
        .receive(Q, ReceiveArgs::new(500, None, 0).unwrap())
        .unwrap();
    assert_eq!(got.len(), 12);
    // Once an empty reply is seen no new request starts: at most the window in flight after it.
    assert!(
        fake.requests.load(Ordering::SeqCst) <= 2 + 4,
        "{:?}",
        fake.requests
    );
    assert!(c
        .receive(Q, ReceiveArgs::new(0, None, 0).unwrap())
        .unwrap()
        .is_empty());
}

#[test]
fn batches_send_everything_once_and_name_failed_entries() {
    let (fake, c) = fake_with(0);
    let bodies: Vec<String> = (0..35).map(|i| format!("b{i}")).collect();
    assert_eq!(c.send(Q, &bodies).unwrap().succeeded, 35);
    // Parallel requests arrive in any order; each body arrives once.
    let mut arrived = lock(&fake.queue).clone();
    arrived.sort_by_key(|b| b[1..].parse::<usize>().unwrap());
    assert_eq!(arrived, bodies);
    let mut handles: Vec<String> = (0..23).map(|i| format!("rh-{i}")).collect();
    handles[17] = "rh-bad".into();
    let out = c.delete(Q, &handles).unwrap();
    assert_eq!(out.succeeded, 22);
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].0.code, "ReceiptHandleIsInvalid");
    assert_eq!(
        out.failed[0].1, "rh-bad",
        "the failed entry is named by its handle"
    );
    assert!(c.delete(Q, &[]).unwrap().failed.is_empty());
    assert_eq!(
        c.change_visibility(Q, &handles[..3], 0).unwrap().succeeded,
        3
    );
}

#[test]
fn a_failing_request_is_an_error_with_the_aws_code() {
    let (fake, c) = fake_with(0);
    *lock(&fake.fail_action) = Some(("DeleteMessageBatch".into(), "QueueDoesNotExist".into()));
    let handles: Vec<String> = (0..5).map(|i| format!("rh-{i}")).collect();
    match c.delete(Q, &handles) {
        Err(SqsError::Aws { code, status, .. }) => {
            assert_eq!((code.as_str(), status), ("QueueDoesNotExist", 400))
        }
        other => panic!("{other:?}"),
    }
    *lock(&fake.fail_action) = Some(("ReceiveMessage".into(), "AccessDenied".into()));
    assert!(matches!(
        c.receive(Q, ReceiveArgs::new(30, None, 0).unwrap()),
        Err(SqsError::Aws { .. })
    ));
}

#[test]
fn queue_attributes_and_creation() {
    let (_fake, c) = fake_with(7);
    assert_eq!(c.attributes(Q).unwrap()["ApproximateNumberOfMessages"], "7");
    assert!(c
        .create_queue("login-queue", BTreeMap::new())
        .unwrap()
        .ends_with("/login-queue"));
    assert!(matches!(
        c.create_queue("bad name", BTreeMap::new()),
        Err(SqsError::InvalidArgument(_))
    ));
}

#[test]
fn receive_arguments_are_checked() {
    assert!(ReceiveArgs::new(10_000, Some(43_200), 20).is_ok());
    for (n, vt, w) in [
        (-1, None, 0),
        (10_001, None, 0),
        (1, Some(-1), 0),
        (1, Some(43_201), 0),
        (1, None, 21),
    ] {
        assert!(
            matches!(
                ReceiveArgs::new(n, vt, w),
                Err(SqsError::InvalidArgument(_))
            ),
            "{n} {vt:?} {w}"
        );
    }
}

#[test]
fn chunking() {
    assert!(chunk_by_count(0).is_empty());
    assert_eq!(chunk_by_count(25), vec![0..10, 10..20, 20..25]);
    assert_eq!(chunk_by_size(&[1; 12]), vec![0..10, 10..12]);
    assert_eq!(chunk_by_size(&[200_000, 200_000, 10]), vec![0..1, 1..3]);
    assert_eq!(chunk_by_size(&[300_000, 1]), vec![0..1, 1..2]);
    assert!(chunk_by_size(&[]).is_empty());
}

#[test]
fn queue_names() {
    assert!(valid_queue_name("login-queue"));
    assert!(valid_queue_name("a_b.fifo"));
    assert!(!valid_queue_name(""));
    assert!(!valid_queue_name(".fifo"));
    assert!(!valid_queue_name("a b"));
    assert!(!valid_queue_name("x'; DROP TABLE t; --"));
    assert!(!valid_queue_name(&"a".repeat(81)));
}
