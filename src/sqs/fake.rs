//! An in-process fake SQS (AWS JSON 1.0 over HTTP/1.1 on 127.0.0.1) for the unit tests of the
//! executor and the heartbeat: a queue of bodies, batch calls that fail for handles containing
//! "bad", an action that can be made to fail, request counts.

use super::credentials::{Configured, Env};
use super::endpoint;
use super::executor::Client;
use super::http::CallOptions;
use super::Protocol;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use super::lock;

#[derive(Default)]
pub struct Fake {
    pub queue: Mutex<Vec<String>>,
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// The queue's VisibilityTimeout attribute, if it has one.
    pub visibility: Mutex<Option<u32>>,
    /// The actions of the requests received, in order.
    pub actions: Mutex<Vec<String>>,
    /// The WaitTimeSeconds of each ReceiveMessage, in order.
    pub receive_waits: Mutex<Vec<u64>>,
    /// Every request of this action fails with HTTP 400 and this code.
    pub fail_action: Mutex<Option<(String, String)>>,
}

/// One HTTP/1.1 request from `reader`: its head's lines (the request line first, without line
/// ends or the blank line) and its body (Content-Length bytes). None at the end of the stream.
pub fn read_request(reader: &mut impl BufRead) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let length = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The value of header `name` (case-insensitive) in a head [`read_request`] returned.
pub fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Serve the fake on an ephemeral port; every connection is handled on its own thread.
pub fn serve(fake: Arc<Fake>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let fake = fake.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                while let Some((head, body)) = read_request(&mut reader) {
                    let target = header(&head, "x-amz-target").unwrap_or_default();
                    let req: Value = serde_json::from_slice(&body).unwrap();
                    let (status, reply) = fake.handle(target, &req);
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
        lock(&self.actions).push(action.to_string());
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
                lock(&self.receive_waits).push(req["WaitTimeSeconds"].as_u64().unwrap_or(0));
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
                let mut a =
                    json!({"ApproximateNumberOfMessages": lock(&self.queue).len().to_string()});
                if let Some(v) = *lock(&self.visibility) {
                    a["VisibilityTimeout"] = json!(v.to_string());
                }
                json!({ "Attributes": a })
            }
            "CreateQueue" => {
                json!({"QueueUrl": format!("http://127.0.0.1/000000000000/{}", req["QueueName"].as_str().unwrap())})
            }
            other => panic!("unexpected action {other}"),
        }
    }
}

/// An HTTP CONNECT proxy on 127.0.0.1: records each CONNECT's head (request line and headers,
/// without the blank line), then tunnels to the target it names. Returns the proxy's URL and
/// the heads seen.
pub fn connect_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let lines = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let Some((head, _)) = read_request(&mut reader) else {
                    return;
                };
                lock(&lines).push(head.join("\r\n"));
                let target = head[0].split_whitespace().nth(1).unwrap_or_default();
                let Ok(mut upstream) = TcpStream::connect(target) else {
                    let _ =
                        conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                    return;
                };
                let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let mut to_upstream = upstream.try_clone().unwrap();
                std::thread::spawn(move || std::io::copy(&mut reader, &mut to_upstream));
                let _ = std::io::copy(&mut upstream, &mut conn);
            });
        }
    });
    (url, seen)
}

pub fn client(url: &str, max_parallel: usize) -> Client {
    let mut endpoint =
        endpoint::for_queue_url(&format!("{url}/000000000000/q"), None, "us-east-1").unwrap();
    endpoint.addresses = endpoint::AddressPolicy::Any; // the fake listens on 127.0.0.1
    Client {
        endpoint,
        configured: Configured {
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..Configured::default()
        },
        env: Env::default(),
        opts: CallOptions {
            protocol: Protocol::Json,
            timeout: Duration::from_secs(5),
            max_retries: 0,
            reveal_foreign_bodies: true,
        },
        max_parallel,
    }
}

pub fn fake_with(n: usize) -> (Arc<Fake>, Client) {
    let fake = Arc::new(Fake::default());
    lock(&fake.queue).extend((0..n).map(|i| i.to_string()));
    let url = serve(fake.clone());
    (fake, client(&url, 4))
}
