//! The SQS operations as the SQL functions use them: settings are read here (backend thread),
//! requests run in parallel on worker threads via [`crate::backend`].

use crate::backend;
use crate::guc;
use crate::sqs::credentials::{self, Configured, Credentials, Env};
use crate::sqs::endpoint::{self, Endpoint};
use crate::sqs::http::{self, CallOptions};
use crate::sqs::{BatchFailure, Message, Protocol, Request, Response, SqsError};
use std::collections::BTreeMap;
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

    fn credentials(&self) -> Result<Credentials, SqsError> {
        let (conf, env) = (self.configured.clone(), self.env.clone());
        let agent = http::agent();
        backend::run_one(move || credentials::resolve(&conf, &env, &agent)).map_err(internal)?
    }

    /// Run requests with at most `max_parallel` in flight; results in request order.
    /// `extra_wait` is added to the HTTP timeout (long polling).
    fn run(
        &self,
        reqs: Vec<Request>,
        extra_wait: Duration,
    ) -> Result<Vec<Result<Response, SqsError>>, SqsError> {
        let creds = self.credentials()?;
        let mut opts = self.opts;
        opts.timeout += extra_wait;
        let mut out = Vec::with_capacity(reqs.len());
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let wave: Vec<Request> = reqs.by_ref().take(self.max_parallel).collect();
            let jobs = wave
                .into_iter()
                .map(|req| {
                    let (agent, ep, creds) = (http::agent(), self.endpoint.clone(), creds.clone());
                    Box::new(move || http::call(&agent, &ep, &creds, &req, &opts))
                        as Box<dyn FnOnce() -> Result<Response, SqsError> + Send>
                })
                .collect();
            out.extend(backend::run_all(jobs).map_err(internal)?);
        }
        Ok(out)
    }
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

/// Receive up to `n` messages: waves of up to `max_parallel` ReceiveMessage calls of ≤ 10 each,
/// stopping as soon as a call returns nothing (the queue is drained).
pub fn pull(
    queue_url: &str,
    n: i32,
    visibility_timeout: Option<i32>,
    wait_seconds: i32,
) -> Result<Vec<Message>, SqsError> {
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
    let ctx = Ctx::for_queue(queue_url)?;
    let mut out = Vec::new();
    let mut remaining = n as usize;
    while remaining > 0 {
        let calls = remaining.div_ceil(10).min(ctx.max_parallel);
        let reqs = (0..calls)
            .map(|i| Request::Receive {
                queue_url: queue_url.to_string(),
                max_messages: (remaining - i * 10).min(10) as u32,
                visibility_timeout,
                wait_seconds,
            })
            .collect();
        let mut drained = false;
        for r in ctx.run(reqs, Duration::from_secs(wait_seconds as u64))? {
            match r? {
                Response::Received(msgs) => {
                    drained |= msgs.is_empty();
                    remaining = remaining.saturating_sub(msgs.len());
                    out.extend(msgs);
                }
                _ => return Err(unexpected("ReceiveMessage", &ctx.endpoint)),
            }
        }
        if drained {
            break;
        }
    }
    Ok(out)
}

/// Outcome of a batch call: how many entries succeeded and the failed ones
/// (with the receipt handle or body they carried).
pub struct BatchOutcome {
    pub succeeded: usize,
    pub failed: Vec<(BatchFailure, String)>,
}

fn run_batches(
    ctx: &Ctx,
    items: Vec<String>,
    chunks: Vec<std::ops::Range<usize>>,
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
    let mut outcome = BatchOutcome {
        succeeded: 0,
        failed: Vec::new(),
    };
    let mut first_error = None;
    for (r, range) in ctx.run(reqs, Duration::ZERO)?.into_iter().zip(&chunks) {
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
        // A request-level failure (no such queue, bad credentials, endpoint down) is an ERROR;
        // entries of other chunks that did succeed are reported in the message.
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

pub fn delete(queue_url: &str, receipt_handles: Vec<String>) -> Result<BatchOutcome, SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    if receipt_handles.is_empty() {
        return Ok(BatchOutcome {
            succeeded: 0,
            failed: vec![],
        });
    }
    let chunks = chunk_by_count(receipt_handles.len());
    run_batches(&ctx, receipt_handles, chunks, |entries| {
        Request::DeleteBatch {
            queue_url: queue_url.to_string(),
            entries,
        }
    })
}

pub fn send(queue_url: &str, bodies: Vec<String>) -> Result<BatchOutcome, SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    if bodies.is_empty() {
        return Ok(BatchOutcome {
            succeeded: 0,
            failed: vec![],
        });
    }
    let chunks = chunk_by_size(&bodies.iter().map(String::len).collect::<Vec<_>>());
    run_batches(&ctx, bodies, chunks, |entries| Request::SendBatch {
        queue_url: queue_url.to_string(),
        entries,
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
    match ctx
        .run(vec![req], Duration::ZERO)?
        .pop()
        .expect("one result")?
    {
        Response::QueueUrl(u) => Ok(u),
        _ => Err(unexpected("CreateQueue", &ctx.endpoint)),
    }
}

pub fn attributes(queue_url: &str) -> Result<BTreeMap<String, String>, SqsError> {
    let ctx = Ctx::for_queue(queue_url)?;
    let req = Request::GetAttributes {
        queue_url: queue_url.to_string(),
    };
    match ctx
        .run(vec![req], Duration::ZERO)?
        .pop()
        .expect("one result")?
    {
        Response::Attributes(a) => Ok(a),
        _ => Err(unexpected("GetQueueAttributes", &ctx.endpoint)),
    }
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
