//! The SQS operations as the SQL functions use them. Settings are read here, on the backend's
//! thread; the requests then run on one coordinator thread with up to `max_parallel` scoped
//! worker threads (a sliding window), while the backend waits with interrupt checks
//! ([`crate::backend`]). Everything below `Ctx::from_*` is plain Rust.

use crate::backend;
use crate::guc;
use crate::sqs::credentials::{self, Configured, Credentials, Env};
use crate::sqs::endpoint::{self, Endpoint};
use crate::sqs::http::{self, CallOptions};
use crate::sqs::{BatchFailure, Message, Protocol, Request, Response, SqsError};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

/// Most messages one sqs_pull() call returns.
pub const MAX_PULL: i32 = 10_000;
/// SQS batch limits: 10 entries and 256 KiB per SendMessageBatch request.
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

/// Everything one SQL call needs, captured from the settings on the backend thread.
#[derive(Clone)]
pub struct Ctx {
    pub endpoint: Endpoint,
    configured: Configured,
    env: Env,
    opts: CallOptions,
    max_parallel: usize,
}

impl Ctx {
    fn from_endpoint(endpoint: Endpoint) -> Result<Ctx, SqsError> {
        let allowed = guc::string(&guc::ALLOWED_HOSTS).unwrap_or_default();
        if !endpoint::host_allowed(&endpoint.host, &allowed) {
            return Err(SqsError::HostNotAllowed(endpoint.host.clone()));
        }
        Ok(Ctx {
            endpoint,
            configured: Configured {
                access_key_id: guc::string(&guc::AWS_ACCESS_KEY_ID),
                secret_access_key: guc::string(&guc::AWS_SECRET_ACCESS_KEY),
                session_token: guc::string(&guc::AWS_SESSION_TOKEN),
            },
            env: Env::from_process(),
            opts: CallOptions {
                protocol: match guc::PROTOCOL.get() {
                    guc::WireProtocol::Json => Protocol::Json,
                    guc::WireProtocol::Query => Protocol::Query,
                },
                timeout: Duration::from_millis(guc::HTTP_TIMEOUT_MS.get().max(1) as u64),
                max_retries: guc::MAX_RETRIES.get().max(0) as u32,
            },
            max_parallel: guc::MAX_PARALLEL_REQUESTS.get().max(1) as usize,
        })
    }

    fn region() -> String {
        guc::string(&guc::REGION).unwrap_or_else(|| "us-east-1".into())
    }

    pub fn for_queue(queue_url: &str) -> Result<Ctx, SqsError> {
        let ep = endpoint::for_queue_url(
            queue_url,
            guc::string(&guc::ENDPOINT).as_deref(),
            &Self::region(),
        )?;
        Self::from_endpoint(ep)
    }

    pub fn for_service() -> Result<Ctx, SqsError> {
        let ep = endpoint::for_service(
            guc::string(&guc::ENDPOINT).as_deref(),
            guc::string(&guc::QUEUE_URL).as_deref(),
            &Self::region(),
        )?;
        Self::from_endpoint(ep)
    }

    // ---- plain Rust from here: may run on any thread

    fn credentials(&self) -> Result<Credentials, SqsError> {
        credentials::resolve(&self.configured, &self.env, &http::agent())
    }

    fn call(
        &self,
        creds: &Credentials,
        req: &Request,
        extra_wait: Duration,
    ) -> Result<Response, SqsError> {
        let mut opts = self.opts;
        opts.timeout += extra_wait;
        http::call(&http::agent(), &self.endpoint, creds, req, &opts)
    }

    /// Run requests, at most `max_parallel` in flight; results in request order.
    fn execute_all(&self, reqs: Vec<Request>) -> Result<Vec<Result<Response, SqsError>>, SqsError> {
        let creds = self.credentials()?;
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Result<Response, SqsError>>>> =
            reqs.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..self.max_parallel.min(reqs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(req) = reqs.get(i) else { break };
                    let r = self.call(&creds, req, Duration::ZERO);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                });
            }
        });
        Ok(results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every request ran")
            })
            .collect())
    }

    /// Receive up to `n` messages keeping `max_parallel` ReceiveMessage calls (≤ 10 each) in
    /// flight; stop starting new ones once a call returns nothing (the queue is drained).
    fn receive(
        &self,
        queue_url: &str,
        n: usize,
        vt: Option<i32>,
        wait: i32,
    ) -> Result<Vec<Message>, SqsError> {
        let creds = self.credentials()?;
        let unclaimed = AtomicUsize::new(n);
        let drained = AtomicBool::new(false);
        let out: Mutex<Vec<Message>> = Mutex::new(Vec::with_capacity(n));
        let first_error: Mutex<Option<SqsError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.max_parallel.min(n.div_ceil(10)).max(1) {
                s.spawn(|| loop {
                    if drained.load(Ordering::SeqCst) {
                        break;
                    }
                    // Claim up to 10 of the messages still to receive.
                    let mut ask = 0;
                    let _ = unclaimed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                        ask = u.min(10);
                        Some(u - ask)
                    });
                    if ask == 0 {
                        break;
                    }
                    let req = Request::Receive {
                        queue_url: queue_url.to_string(),
                        max_messages: ask as u32,
                        visibility_timeout: vt,
                        wait_seconds: wait,
                    };
                    match self.call(&creds, &req, Duration::from_secs(wait as u64)) {
                        Ok(Response::Received(msgs)) => {
                            if msgs.is_empty() {
                                drained.store(true, Ordering::SeqCst);
                            }
                            // Whatever was asked and not delivered may be asked again.
                            unclaimed.fetch_add(ask - msgs.len().min(ask), Ordering::SeqCst);
                            out.lock().unwrap_or_else(|e| e.into_inner()).extend(msgs);
                        }
                        Ok(_) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(unexpected("ReceiveMessage", &self.endpoint));
                            drained.store(true, Ordering::SeqCst);
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                            drained.store(true, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(out.into_inner().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

/// Run a plain-Rust job off the backend's thread and wait for it (interruptible).
fn off_thread<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, SqsError> + Send + 'static,
) -> Result<T, SqsError> {
    backend::run_one(job).map_err(internal)?
}

fn internal(msg: String) -> SqsError {
    SqsError::Protocol {
        action: "(internal)",
        endpoint: String::new(),
        message: msg,
    }
}

fn unexpected(action: &'static str, ep: &Endpoint) -> SqsError {
    SqsError::Protocol {
        action,
        endpoint: ep.base.clone(),
        message: "response of the wrong kind".into(),
    }
}

fn check_pull_args(
    n: i32,
    visibility_timeout: Option<i32>,
    wait_seconds: i32,
) -> Result<(), SqsError> {
    if !(0..=MAX_PULL).contains(&n) {
        return Err(SqsError::InvalidArgument(format!(
            "n must be between 0 and {MAX_PULL}, not {n}"
        )));
    }
    if let Some(vt) = visibility_timeout {
        if !(0..=43_200).contains(&vt) {
            return Err(SqsError::InvalidArgument(format!(
                "visibility_timeout must be between 0 and 43200 seconds, not {vt}"
            )));
        }
    }
    if !(0..=20).contains(&wait_seconds) {
        return Err(SqsError::InvalidArgument(format!(
            "wait_seconds must be between 0 and 20, not {wait_seconds}"
        )));
    }
    Ok(())
}

/// Receive up to `n` messages (see [`Ctx::receive`]).
pub fn pull(
    queue_url: &str,
    n: i32,
    visibility_timeout: Option<i32>,
    wait_seconds: i32,
) -> Result<Vec<Message>, SqsError> {
    check_pull_args(n, visibility_timeout, wait_seconds)?;
    let ctx = Ctx::for_queue(queue_url)?;
    if n == 0 {
        return Ok(vec![]);
    }
    let url = queue_url.to_string();
    off_thread(move || ctx.receive(&url, n as usize, visibility_timeout, wait_seconds))
}

// ---------------------------------------------------------------- receives ahead of time
//
// load_user_logins() receives batch i+1 in the background while it parses, masks and commits
// batch i. Prefetched messages are received (invisible to others) but not processed: if the
// backend dies they come back after their visibility timeout; at the end of a run the unused
// ones are made visible again at once.

type Received = Result<Vec<Message>, SqsError>;
type PullKey = (String, i32, Option<i32>, i32);

struct Prefetch {
    key: PullKey,
    ctx: Ctx,
    rx: mpsc::Receiver<Received>,
}

thread_local! {
    static PREFETCH: RefCell<Option<Prefetch>> = const { RefCell::new(None) };
}

/// Wait (with interrupt checks) for a background receive.
fn wait_received(rx: &mpsc::Receiver<Received>) -> Received {
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => return r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                pgrx::check_for_interrupts!();
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(internal("an I/O thread vanished".into()))
            }
        }
    }
}

/// Make received messages visible again (ChangeMessageVisibility 0), in batches of 10.
fn release_blocking(
    ctx: &Ctx,
    queue_url: &str,
    msgs: &[Message],
) -> Result<BatchOutcome, SqsError> {
    let handles: Vec<String> = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
    run_batches(ctx, &handles, &chunk_by_count(handles.len()), |entries| {
        Request::ChangeVisibilityBatch {
            queue_url: queue_url.to_string(),
            entries,
            visibility_timeout: 0,
        }
    })
}

/// Release what a pending prefetch received: how many messages were made visible again.
pub fn release_prefetched() -> Result<usize, SqsError> {
    let Some(p) = PREFETCH.with(|p| p.borrow_mut().take()) else {
        return Ok(0);
    };
    let msgs = wait_received(&p.rx)?;
    if msgs.is_empty() {
        return Ok(0);
    }
    let (ctx, url) = (p.ctx, p.key.0);
    off_thread(move || release_blocking(&ctx, &url, &msgs)).map(|o| o.succeeded)
}

/// The loader's receive: the batch prefetched for this same request if there is one, else a
/// receive now; then, if `prefetch` and a full batch came back, start receiving the next one.
pub fn pull_for_loader(
    queue_url: &str,
    n: i32,
    visibility_timeout: Option<i32>,
    wait_seconds: i32,
    prefetch: bool,
) -> Result<Vec<Message>, SqsError> {
    check_pull_args(n, visibility_timeout, wait_seconds)?;
    let key: PullKey = (queue_url.to_string(), n, visibility_timeout, wait_seconds);
    let pending = PREFETCH.with(|p| p.borrow_mut().take_if(|p| p.key == key));
    let msgs = match pending {
        Some(p) => wait_received(&p.rx)?,
        None => {
            release_prefetched()?;
            pull(queue_url, n, visibility_timeout, wait_seconds)?
        }
    };
    if prefetch && n > 0 && msgs.len() == n as usize {
        let ctx = Ctx::for_queue(queue_url)?;
        let (tx, rx) = mpsc::channel();
        let (c, url) = (ctx.clone(), queue_url.to_string());
        backend::spawn_with_signals_blocked(move || {
            let _ = tx.send(c.receive(&url, n as usize, visibility_timeout, wait_seconds));
        })
        .map_err(|e| internal(format!("could not start an I/O thread: {e}")))?;
        PREFETCH.with(|p| *p.borrow_mut() = Some(Prefetch { key, ctx, rx }));
    }
    Ok(msgs)
}

/// Outcome of a batch call: how many entries succeeded and the failed ones
/// (with the receipt handle or body they carried).
#[derive(Default)]
pub struct BatchOutcome {
    pub succeeded: usize,
    pub failed: Vec<(BatchFailure, String)>,
}

/// Run batch requests (plain Rust); a request-level failure (no such queue, bad credentials,
/// endpoint down) is an error, naming how many entries of other chunks did succeed.
fn run_batches(
    ctx: &Ctx,
    items: &[String],
    chunks: &[std::ops::Range<usize>],
    make: impl Fn(Vec<(String, String)>) -> Request,
) -> Result<BatchOutcome, SqsError> {
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
    for (r, range) in ctx.execute_all(reqs)?.into_iter().zip(chunks) {
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
            Ok(_) => return Err(unexpected("batch", &ctx.endpoint)),
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
        }) if outcome.succeeded > 0 => Err(SqsError::Aws {
            action,
            status,
            code,
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

fn chunk_by_count(n: usize) -> Vec<std::ops::Range<usize>> {
    (0..n)
        .step_by(BATCH_ENTRIES)
        .map(|s| s..(s + BATCH_ENTRIES).min(n))
        .collect()
}

/// Chunks of ≤ 10 entries and ≤ 256 KiB of bodies (a larger body goes alone).
pub fn chunk_by_size(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
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

fn delete_blocking(
    ctx: &Ctx,
    queue_url: &str,
    handles: &[String],
) -> Result<BatchOutcome, SqsError> {
    run_batches(ctx, handles, &chunk_by_count(handles.len()), |entries| {
        Request::DeleteBatch {
            queue_url: queue_url.to_string(),
            entries,
        }
    })
}

pub fn delete(queue_url: &str, receipt_handles: Vec<String>) -> Result<BatchOutcome, SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    if receipt_handles.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let url = queue_url.to_string();
    off_thread(move || delete_blocking(&ctx, &url, &receipt_handles))
}

// ---------------------------------------------------------------- deletes in the background
//
// load_user_logins() deletes a batch's messages after its COMMIT, in the background, so that the
// next batch's receives and inserts overlap the deletes. If the backend dies first, the messages
// come back after their visibility timeout and are recognised as already loaded.

type DeleteResult = Result<BatchOutcome, SqsError>;

/// Background delete jobs one backend may have in flight before delete_async waits.
const MAX_PENDING_DELETES: usize = 4;

struct Pending {
    tx: mpsc::Sender<DeleteResult>,
    rx: mpsc::Receiver<DeleteResult>,
    outstanding: usize,
    done: BatchOutcome,
    error: Option<SqsError>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

fn with_pending<T>(f: impl FnOnce(&mut Pending) -> T) -> T {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let p = p.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            Pending {
                tx,
                rx,
                outstanding: 0,
                done: BatchOutcome::default(),
                error: None,
            }
        });
        f(p)
    })
}

/// Take in finished background deletes; while more than `limit` are in flight, wait (with
/// interrupt checks) for them to finish.
fn absorb(limit: usize) {
    loop {
        let waiting = with_pending(|p| {
            let timeout = if p.outstanding > limit {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            };
            while p.outstanding > 0 {
                match p.rx.recv_timeout(timeout) {
                    Ok(Ok(o)) => {
                        p.outstanding -= 1;
                        p.done.succeeded += o.succeeded;
                        p.done.failed.extend(o.failed);
                    }
                    Ok(Err(e)) => {
                        p.outstanding -= 1;
                        p.error.get_or_insert(e);
                    }
                    Err(_) => break,
                }
            }
            p.outstanding > limit
        });
        if !waiting {
            return;
        }
        pgrx::check_for_interrupts!();
    }
}

/// Start deleting `handles` in the background and return (waiting only if too many deletes
/// are already in flight).
pub fn delete_async(queue_url: &str, handles: Vec<String>) -> Result<(), SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    if handles.is_empty() {
        return Ok(());
    }
    absorb(MAX_PENDING_DELETES - 1);
    let tx = with_pending(|p| {
        p.outstanding += 1;
        p.tx.clone()
    });
    let url = queue_url.to_string();
    backend::spawn_with_signals_blocked(move || {
        let _ = tx.send(delete_blocking(&ctx, &url, &handles));
    })
    .map_err(|e| {
        with_pending(|p| p.outstanding -= 1);
        internal(format!("could not start an I/O thread: {e}"))
    })
}

/// The background deletes finished since the last call (all of them when `wait`): how many
/// were deleted and the failed entries; or the first request-level error.
pub fn delete_collect(wait: bool) -> Result<BatchOutcome, SqsError> {
    absorb(if wait { 0 } else { usize::MAX });
    with_pending(|p| match p.error.take() {
        Some(e) => {
            p.done = BatchOutcome::default();
            Err(e)
        }
        None => Ok(std::mem::take(&mut p.done)),
    })
}

pub fn send(queue_url: &str, bodies: Vec<String>) -> Result<BatchOutcome, SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    if bodies.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let url = queue_url.to_string();
    off_thread(move || {
        let chunks = chunk_by_size(&bodies.iter().map(String::len).collect::<Vec<_>>());
        run_batches(&ctx, &bodies, &chunks, |entries| Request::SendBatch {
            queue_url: url.clone(),
            entries,
        })
    })
}

pub fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn create_queue(name: &str, attributes: BTreeMap<String, String>) -> Result<String, SqsError> {
    if !valid_queue_name(name) {
        return Err(SqsError::InvalidArgument(format!(
            "invalid queue name \"{name}\": 1 to 80 letters, digits, hyphens or underscores (and .fifo for FIFO queues)"
        )));
    }
    let ctx = Ctx::for_service()?;
    let req = Request::CreateQueue {
        name: name.to_string(),
        attributes,
    };
    off_thread(
        move || match ctx.call(&ctx.credentials()?, &req, Duration::ZERO)? {
            Response::QueueUrl(u) => Ok(u),
            _ => Err(unexpected("CreateQueue", &ctx.endpoint)),
        },
    )
}

pub fn attributes(queue_url: &str) -> Result<BTreeMap<String, String>, SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    let req = Request::GetAttributes {
        queue_url: queue_url.to_string(),
    };
    off_thread(
        move || match ctx.call(&ctx.credentials()?, &req, Duration::ZERO)? {
            Response::Attributes(a) => Ok(a),
            _ => Err(unexpected("GetQueueAttributes", &ctx.endpoint)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
