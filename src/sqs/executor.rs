//! Running SQS operations for the SQL functions and the loader: one [`Client`] per endpoint,
//! requests with retries ([`super::http`]), at most `max_parallel` in flight (a sliding window
//! over the calling thread and [`super::pool`] threads). Plain Rust: runs on I/O threads and
//! never calls into Postgres.

use super::credentials::{self, Configured, Credentials, Env};
use super::endpoint::Endpoint;
use super::http::{self, CallOptions};
use super::{is_fifo, random_id, BatchFailure, Message, Request, Response, SqsError};
use super::{lock, pool};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most messages one receive (one `sqs_pull()` call, one loader batch) asks for.
pub const MAX_PULL: i32 = 10_000;
/// SQS limits: entries per batch request, bytes of bodies per SendMessageBatch, long-poll wait,
/// visibility timeout.
pub const BATCH_ENTRIES: usize = 10;
pub const BATCH_BYTES: usize = 256 * 1024;
pub const MAX_WAIT_SECONDS: i32 = 20;
pub const MAX_VISIBILITY_TIMEOUT: i32 = 43_200;

/// What one receive asks for, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveArgs {
    pub n: usize,
    pub visibility_timeout: Option<i32>,
    pub wait_seconds: i32,
}

impl ReceiveArgs {
    pub fn new(
        n: i32,
        visibility_timeout: Option<i32>,
        wait_seconds: i32,
    ) -> Result<ReceiveArgs, SqsError> {
        let bad = |m: String| Err(SqsError::InvalidArgument(m));
        if !(0..=MAX_PULL).contains(&n) {
            return bad(format!("n must be between 0 and {MAX_PULL}, not {n}"));
        }
        if let Some(vt) = visibility_timeout {
            if !(0..=MAX_VISIBILITY_TIMEOUT).contains(&vt) {
                return bad(format!(
                    "visibility_timeout must be between 0 and {MAX_VISIBILITY_TIMEOUT} seconds, not {vt}"
                ));
            }
        }
        if !(0..=MAX_WAIT_SECONDS).contains(&wait_seconds) {
            return bad(format!(
                "wait_seconds must be between 0 and {MAX_WAIT_SECONDS}, not {wait_seconds}"
            ));
        }
        Ok(ReceiveArgs {
            n: n as usize,
            visibility_timeout,
            wait_seconds,
        })
    }
}

/// Outcome of a batch call: how many entries succeeded and the failed ones
/// (with the receipt handle or body they carried).
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub succeeded: usize,
    pub failed: Vec<(BatchFailure, String)>,
}

impl BatchOutcome {
    pub fn absorb(&mut self, other: BatchOutcome) {
        self.succeeded += other.succeeded;
        self.failed.extend(other.failed);
    }
}

/// Everything needed to talk to one SQS endpoint, captured from the settings beforehand.
#[derive(Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub configured: Configured,
    pub env: Env,
    pub opts: CallOptions,
    pub max_parallel: usize,
}

fn unexpected(action: &'static str, ep: &Endpoint) -> SqsError {
    SqsError::Protocol {
        action,
        endpoint: ep.base.clone(),
        message: "response of the wrong kind".into(),
    }
}

impl Client {
    pub fn credentials(&self) -> Result<Credentials, SqsError> {
        credentials::resolve(&self.configured, &self.env, &http::credentials_agent())
    }

    /// One request with retries; `extra_wait` is added to the timeout (long polls).
    pub fn call(
        &self,
        creds: &Credentials,
        req: &Request,
        extra_wait: Duration,
    ) -> Result<Response, SqsError> {
        let mut opts = self.opts;
        opts.timeout += extra_wait;
        http::call(
            &http::agent(&self.endpoint),
            &self.endpoint,
            creds,
            req,
            &opts,
        )
    }

    /// Run requests, at most `max_parallel` in flight (this thread and pool threads,
    /// [`pool::fan_out`]); results in request order.
    pub fn execute_all(
        &self,
        reqs: Vec<Request>,
    ) -> Result<Vec<Result<Response, SqsError>>, SqsError> {
        struct Shared {
            client: Client,
            creds: Credentials,
            reqs: Vec<Request>,
            next: AtomicUsize,
            results: Vec<Mutex<Option<Result<Response, SqsError>>>>,
        }
        let creds = self.credentials()?;
        let threads = self.max_parallel.min(reqs.len());
        let shared = Arc::new(Shared {
            client: self.clone(),
            creds,
            results: reqs.iter().map(|_| Mutex::new(None)).collect(),
            reqs,
            next: AtomicUsize::new(0),
        });
        let work = shared.clone();
        pool::fan_out(
            threads,
            Arc::new(move || loop {
                let i = work.next.fetch_add(1, Ordering::SeqCst);
                let Some(req) = work.reqs.get(i) else { break };
                let r = work.client.call(&work.creds, req, Duration::ZERO);
                *lock(&work.results[i]) = Some(r);
            }),
        );
        Ok(shared
            .results
            .iter()
            .map(|m| lock(m).take().expect("every request ran"))
            .collect())
    }

    /// Receive up to `args.n` messages. With a long-poll wait, one ReceiveMessage call waits
    /// first (an idle queue costs one request per wait, and a message that arrives is returned
    /// at once); once it brings messages, the rest of the batch is taken with short polls.
    /// Those keep `max_parallel` calls (≤ 10 messages each) in flight and stop starting new ones
    /// once a call returns nothing (the queue is drained).
    pub fn receive(&self, queue_url: &str, args: ReceiveArgs) -> Result<Vec<Message>, SqsError> {
        if args.n == 0 {
            return Ok(vec![]);
        }
        let creds = self.credentials()?;
        let mut first = vec![];
        let mut args = args;
        if args.wait_seconds > 0 {
            let req = Request::Receive {
                queue_url: queue_url.to_string(),
                max_messages: args.n.min(BATCH_ENTRIES) as u32,
                visibility_timeout: args.visibility_timeout,
                wait_seconds: args.wait_seconds,
                attempt_id: is_fifo(queue_url).then(random_id),
            };
            let wait = Duration::from_secs(args.wait_seconds as u64);
            first = match self.call(&creds, &req, wait)? {
                Response::Received(msgs) => msgs,
                _ => return Err(unexpected("ReceiveMessage", &self.endpoint)),
            };
            if first.is_empty() || first.len() >= args.n {
                return Ok(first);
            }
            args = ReceiveArgs {
                n: args.n - first.len(),
                wait_seconds: 0,
                ..args
            };
        }
        let mut rest = self.receive_short(queue_url, args, &creds)?;
        first.append(&mut rest);
        Ok(first)
    }

    /// The parallel part of [`Client::receive`] (this thread and pool threads).
    fn receive_short(
        &self,
        queue_url: &str,
        args: ReceiveArgs,
        creds: &Credentials,
    ) -> Result<Vec<Message>, SqsError> {
        struct Shared {
            client: Client,
            creds: Credentials,
            queue_url: String,
            args: ReceiveArgs,
            unclaimed: AtomicUsize,
            drained: AtomicBool,
            out: Mutex<Vec<Message>>,
            first_error: Mutex<Option<SqsError>>,
        }
        let shared = Arc::new(Shared {
            client: self.clone(),
            creds: creds.clone(),
            queue_url: queue_url.to_string(),
            args,
            unclaimed: AtomicUsize::new(args.n),
            drained: AtomicBool::new(false),
            out: Mutex::new(Vec::with_capacity(args.n)),
            first_error: Mutex::new(None),
        });
        let threads = self.max_parallel.min(args.n.div_ceil(BATCH_ENTRIES)).max(1);
        let w = shared.clone();
        pool::fan_out(
            threads,
            Arc::new(move || {
                let wait = Duration::from_secs(w.args.wait_seconds as u64);
                loop {
                    if w.drained.load(Ordering::SeqCst) {
                        break;
                    }
                    // Claim up to 10 of the messages still to receive.
                    let mut ask = 0;
                    let _ = w
                        .unclaimed
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                            ask = u.min(BATCH_ENTRIES);
                            Some(u - ask)
                        });
                    if ask == 0 {
                        break;
                    }
                    let req = Request::Receive {
                        queue_url: w.queue_url.clone(),
                        max_messages: ask as u32,
                        visibility_timeout: w.args.visibility_timeout,
                        wait_seconds: w.args.wait_seconds,
                        attempt_id: is_fifo(&w.queue_url).then(random_id),
                    };
                    let failure = match w.client.call(&w.creds, &req, wait) {
                        Ok(Response::Received(msgs)) => {
                            if msgs.is_empty() {
                                w.drained.store(true, Ordering::SeqCst);
                            }
                            // Whatever was asked and not delivered may be asked again.
                            w.unclaimed
                                .fetch_add(ask - msgs.len().min(ask), Ordering::SeqCst);
                            lock(&w.out).extend(msgs);
                            continue;
                        }
                        Ok(_) => unexpected("ReceiveMessage", &w.client.endpoint),
                        Err(e) => e,
                    };
                    lock(&w.first_error).get_or_insert(failure);
                    w.drained.store(true, Ordering::SeqCst);
                }
            }),
        );
        if let Some(e) = lock(&shared.first_error).take() {
            return Err(e);
        }
        let out = std::mem::take(&mut *lock(&shared.out));
        Ok(out)
    }

    /// Batch requests over `items` cut into `chunks`; a request-level failure (no such queue,
    /// bad credentials, endpoint down) is an error naming how many entries of other chunks did
    /// succeed.
    pub fn run_batches(
        &self,
        items: &[String],
        chunks: &[Range<usize>],
        make: impl Fn(Vec<(String, String)>) -> Request,
    ) -> Result<BatchOutcome, SqsError> {
        if items.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let reqs = chunks
            .iter()
            .map(|r| {
                make(
                    r.clone()
                        .map(|i| ((i - r.start).to_string(), items[i].clone()))
                        .collect(),
                )
            })
            .collect();
        let mut outcome = BatchOutcome::default();
        let mut first_error = None;
        for (r, range) in self.execute_all(reqs)?.into_iter().zip(chunks) {
            match r {
                Ok(Response::Batch { successful, failed }) => {
                    outcome.succeeded += successful.len();
                    for f in failed {
                        let item =
                            f.id.parse::<usize>()
                                .ok()
                                .and_then(|i| items.get(range.start + i))
                                .cloned();
                        outcome.failed.push((f, item.unwrap_or_default()));
                    }
                }
                Ok(_) => return Err(unexpected("batch", &self.endpoint)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(SqsError::Aws {
                action,
                status,
                code,
                message,
                attempts,
                advice,
            }) if outcome.succeeded > 0 => Err(SqsError::Aws {
                action,
                status,
                code,
                advice,
                message: format!(
                    "{message} ({} entries succeeded before the failure)",
                    outcome.succeeded
                ),
                attempts,
            }),
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// DeleteMessageBatch in chunks of 10.
    pub fn delete(&self, queue_url: &str, handles: &[String]) -> Result<BatchOutcome, SqsError> {
        self.run_batches(handles, &chunk_by_count(handles.len()), |entries| {
            Request::DeleteBatch {
                queue_url: queue_url.to_string(),
                entries,
            }
        })
    }

    /// ChangeMessageVisibilityBatch in chunks of 10 (0 makes the messages visible again).
    pub fn change_visibility(
        &self,
        queue_url: &str,
        handles: &[String],
        visibility_timeout: i32,
    ) -> Result<BatchOutcome, SqsError> {
        self.run_batches(handles, &chunk_by_count(handles.len()), |entries| {
            Request::ChangeVisibilityBatch {
                queue_url: queue_url.to_string(),
                entries,
                visibility_timeout,
            }
        })
    }

    /// SendMessageBatch in chunks of ≤ 10 entries and ≤ 256 KiB.
    /// SendMessageBatch; a FIFO queue needs `message_group_id` (every message gets it, and a
    /// deduplication id of its own).
    pub fn send(
        &self,
        queue_url: &str,
        bodies: &[String],
        message_group_id: Option<&str>,
    ) -> Result<BatchOutcome, SqsError> {
        if is_fifo(queue_url) && message_group_id.is_none() {
            return Err(SqsError::InvalidArgument(
                "a FIFO queue needs a message group id: sqs_send(queue_url, bodies, message_group_id)".into(),
            ));
        }
        let chunks = chunk_by_size(&bodies.iter().map(String::len).collect::<Vec<_>>());
        let make = |entries| Request::SendBatch {
            queue_url: queue_url.to_string(),
            entries,
            fifo: message_group_id.map(|g| (g.to_string(), random_id())),
        };
        if message_group_id.is_none() {
            return self.run_batches(bodies, &chunks, make);
        }
        // One group is one sequence: its chunks go one after the other, in order.
        let mut outcome = BatchOutcome::default();
        for chunk in chunks {
            let o = self.run_batches(bodies, std::slice::from_ref(&chunk), make)?;
            outcome.succeeded += o.succeeded;
            outcome.failed.extend(o.failed);
        }
        Ok(outcome)
    }

    /// CreateQueue (idempotent): the queue URL.
    pub fn create_queue(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<String, SqsError> {
        if !valid_queue_name(name) {
            return Err(SqsError::InvalidArgument(format!(
                "invalid queue name \"{name}\": 1 to 80 letters, digits, hyphens or underscores (and .fifo for FIFO queues)"
            )));
        }
        let req = Request::CreateQueue {
            name: name.to_string(),
            attributes,
        };
        match self.call(&self.credentials()?, &req, Duration::ZERO)? {
            Response::QueueUrl(u) => Ok(u),
            _ => Err(unexpected("CreateQueue", &self.endpoint)),
        }
    }

    /// GetQueueAttributes (All).
    pub fn attributes(&self, queue_url: &str) -> Result<BTreeMap<String, String>, SqsError> {
        let req = Request::GetAttributes {
            queue_url: queue_url.to_string(),
        };
        match self.call(&self.credentials()?, &req, Duration::ZERO)? {
            Response::Attributes(a) => Ok(a),
            _ => Err(unexpected("GetQueueAttributes", &self.endpoint)),
        }
    }
}

/// Chunks of at most 10 entries.
pub fn chunk_by_count(n: usize) -> Vec<Range<usize>> {
    (0..n)
        .step_by(BATCH_ENTRIES)
        .map(|s| s..(s + BATCH_ENTRIES).min(n))
        .collect()
}

/// Chunks of ≤ 10 entries and ≤ 256 KiB of bodies (a larger body goes alone).
pub fn chunk_by_size(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &s) in sizes.iter().enumerate() {
        if i > start && (i - start == BATCH_ENTRIES || bytes + s > BATCH_BYTES) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// SQS queue names: 1–80 letters, digits, hyphens, underscores, and `.fifo` for FIFO queues.
pub fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
