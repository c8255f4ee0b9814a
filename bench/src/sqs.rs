//! The benchmarks' SQS side: the extension's own plain-Rust executor, pointed at an emulator.

use sqs_loader::sqs::credentials::{Configured, Env};
use sqs_loader::sqs::endpoint;
use sqs_loader::sqs::executor::{Client, ReceiveArgs};
use sqs_loader::sqs::http::CallOptions;
use sqs_loader::sqs::Protocol;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// An emulator and a client for it (16 requests in flight for filling queues).
#[derive(Clone)]
pub struct Sqs {
    pub base: String,
    pub client: Client,
    /// The emulator's process id (scripts/bench.sh passes it when it started the emulator): the
    /// drain reads its CPU from /proc.
    pub pid: Option<String>,
}

/// Messages visible and in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub visible: usize,
    pub in_flight: usize,
}

impl Sqs {
    pub fn new(base: &str, pid: Option<String>) -> Sqs {
        Sqs {
            base: base.to_string(),
            pid: pid.filter(|p| std::path::Path::new(&format!("/proc/{p}/stat")).exists()),
            client: Client {
                endpoint: endpoint::Endpoint {
                    // The emulators listen on 127.0.0.1.
                    addresses: endpoint::AddressPolicy::Any,
                    ..endpoint::for_service(Some(base), None, "us-east-1").unwrap()
                },
                configured: Configured {
                    access_key_id: Some("test".into()),
                    secret_access_key: Some("test".into()),
                    ..Configured::default()
                },
                env: Env::default(),
                opts: CallOptions {
                    protocol: Protocol::Json,
                    timeout: Duration::from_secs(30),
                    max_retries: 5,
                    reveal_foreign_bodies: true,
                },
                max_parallel: 16,
            },
        }
    }

    pub fn create(&self, name: &str) -> String {
        self.client
            .create_queue(name, Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn depth(&self, url: &str) -> Depth {
        let a = self
            .client
            .attributes(url)
            .unwrap_or_else(|e| panic!("{e}"));
        let g = |k: &str| a.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Depth {
            visible: g("ApproximateNumberOfMessages"),
            in_flight: g("ApproximateNumberOfMessagesNotVisible"),
        }
    }

    /// Send without waiting for the queue to show the messages.
    pub fn send(&self, url: &str, bodies: &[String]) {
        let out = self
            .client
            .send(url, bodies, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.failed.is_empty(), "{:?}", out.failed);
    }

    /// Send, then wait until the queue shows them all.
    pub fn fill(&self, url: &str, bodies: &[String]) {
        self.send(url, bodies);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.depth(url).visible < bodies.len() {
            assert!(Instant::now() < deadline, "queue not filled");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ceiling: `clients` independent clients each receiving 10 and deleting them in a
    /// batch, no database; how long draining `n` messages took.
    pub fn bare_drain(&self, url: &str, n: usize, clients: usize) -> Duration {
        let deleted = AtomicUsize::new(0);
        let one = Client {
            max_parallel: 1,
            ..self.client.clone()
        };
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..clients {
                s.spawn(|| {
                    while deleted.load(Ordering::SeqCst) < n {
                        let msgs = one
                            .receive(url, ReceiveArgs::new(10, Some(120), 0).unwrap())
                            .unwrap_or_else(|e| panic!("{e}"));
                        if msgs.is_empty() {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        let handles: Vec<String> =
                            msgs.into_iter().map(|m| m.receipt_handle).collect();
                        let out = one.delete(url, &handles).unwrap_or_else(|e| panic!("{e}"));
                        deleted.fetch_add(out.succeeded, Ordering::SeqCst);
                    }
                });
            }
        });
        start.elapsed()
    }
}
