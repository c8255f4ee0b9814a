//! What one backend keeps between the SQL calls of a load run: the batch it receives ahead of
//! time (prefetch) and the deletes it runs in the background after each COMMIT.
//!
//! Prefetched messages are received (invisible to others) but not processed: if the backend
//! dies they come back after their visibility timeout; at the end of a run the unused ones are
//! made visible again at once. Deleted-in-the-background messages were committed: if the
//! backend dies first they come back and are recognised as already loaded.

use super::backend::{self, ThreadError};
use super::error::{Error, Result};
use super::sqs_client;
use crate::sqs::executor::{BatchOutcome, Client, ReceiveArgs};
use crate::sqs::{Message, SqsError};
use pgrx::PgXactCallbackEvent;
use std::cell::RefCell;
use std::sync::mpsc;

type Received = std::result::Result<Vec<Message>, SqsError>;

/// A receive started in the background for the next batch of the same request.
struct Prefetch {
    queue_url: String,
    args: ReceiveArgs,
    client: Client,
    rx: mpsc::Receiver<Received>,
}

type DeleteResult = std::result::Result<BatchOutcome, SqsError>;

/// Background delete jobs one backend may have in flight before `delete_async` waits.
const MAX_PENDING_DELETES: usize = 4;

/// Background deletes: started, finished but not yet reported, and the first failure.
struct Deletes {
    tx: mpsc::Sender<DeleteResult>,
    rx: mpsc::Receiver<DeleteResult>,
    outstanding: usize,
    done: BatchOutcome,
    error: Option<SqsError>,
    spawn_error: Option<ThreadError>,
}

impl Default for Deletes {
    fn default() -> Deletes {
        let (tx, rx) = mpsc::channel();
        Deletes {
            tx,
            rx,
            outstanding: 0,
            done: BatchOutcome::default(),
            error: None,
            spawn_error: None,
        }
    }
}

impl Deletes {
    fn take_in(&mut self, r: DeleteResult) {
        self.outstanding -= 1;
        match r {
            Ok(o) => self.done.absorb(o),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
}

thread_local! {
    static PREFETCH: RefCell<Option<Prefetch>> = const { RefCell::new(None) };
    static DELETES: RefCell<Option<Deletes>> = const { RefCell::new(None) };
}

fn with_deletes<T>(f: impl FnOnce(&mut Deletes) -> T) -> T {
    DELETES.with(|d| f(d.borrow_mut().get_or_insert_with(Deletes::default)))
}

/// Run `job` with a client on an I/O thread and wait for it.
pub fn off_thread<T: Send + 'static>(
    client: Client,
    job: impl FnOnce(&Client) -> std::result::Result<T, SqsError> + Send + 'static,
) -> Result<T> {
    Ok(backend::run(move || job(&client))??)
}

/// Receive up to `args.n` messages now (`sqs_pull()`).
pub fn pull(queue_url: &str, args: ReceiveArgs) -> Result<Vec<Message>> {
    let client = sqs_client::for_queue(queue_url)?;
    let url = queue_url.to_string();
    off_thread(client, move |c| c.receive(&url, args))
}

/// Release what a pending prefetch received: how many messages were made visible again.
pub fn release_prefetched() -> Result<usize> {
    let Some(p) = PREFETCH.with(|p| p.borrow_mut().take()) else {
        return Ok(0);
    };
    let msgs = backend::wait(&p.rx)??;
    if msgs.is_empty() {
        return Ok(0);
    }
    let handles: Vec<String> = msgs.into_iter().map(|m| m.receipt_handle).collect();
    let url = p.queue_url;
    off_thread(p.client, move |c| c.change_visibility(&url, &handles, 0)).map(|o| o.succeeded)
}

/// The loader's receive: the batch prefetched for this same request if there is one, else a
/// receive now; then, if `prefetch` and a full batch came back, start receiving the next one.
pub fn pull_for_loader(queue_url: &str, args: ReceiveArgs, prefetch: bool) -> Result<Vec<Message>> {
    let pending = PREFETCH.with(|p| {
        p.borrow_mut()
            .take_if(|p| p.queue_url == queue_url && p.args == args)
    });
    let msgs = match pending {
        Some(p) => backend::wait(&p.rx)??,
        None => {
            release_prefetched()?;
            pull(queue_url, args)?
        }
    };
    if prefetch && args.n > 0 && msgs.len() == args.n {
        let client = sqs_client::for_queue(queue_url)?;
        let (tx, rx) = mpsc::channel();
        let (c, url) = (client.clone(), queue_url.to_string());
        backend::spawn(move || {
            let _ = tx.send(c.receive(&url, args));
        })?;
        PREFETCH.with(|p| {
            *p.borrow_mut() = Some(Prefetch {
                queue_url: queue_url.to_string(),
                args,
                client,
                rx,
            })
        });
    }
    Ok(msgs)
}

/// Take in finished background deletes; while more than `limit` are in flight, wait for them.
fn absorb(limit: usize) -> Result<()> {
    with_deletes(|d| {
        while let Ok(r) = d.rx.try_recv() {
            d.take_in(r);
        }
        while d.outstanding > limit {
            let r = backend::wait(&d.rx)?;
            d.take_in(r);
        }
        Ok(())
    })
}

/// Delete `handles` in the background once the current transaction commits; nothing happens if
/// it aborts. Waits first if too many deletes are already in flight.
pub fn delete_after_commit(queue_url: &str, handles: Vec<String>) -> Result<()> {
    // A subtransaction that rolls back would leave the callback armed for rows that are gone.
    // SAFETY: a plain read of the transaction nesting level.
    if unsafe { pgrx::pg_sys::GetCurrentTransactionNestLevel() } > 1 {
        return Err(Error::InvalidArgument(
            "sqs_loader.delete_after_commit() must be called outside any exception block or savepoint".into(),
        ));
    }
    let client = sqs_client::for_queue(queue_url)?;
    if handles.is_empty() {
        return Ok(());
    }
    absorb(MAX_PENDING_DELETES - 1)?;
    let url = queue_url.to_string();
    pgrx::register_xact_callback(PgXactCallbackEvent::Commit, move || {
        // Post-commit: no Postgres calls, no errors. A thread that cannot start leaves the
        // messages in the queue (they come back and are skipped); the next collect reports it.
        let tx = with_deletes(|d| {
            d.outstanding += 1;
            d.tx.clone()
        });
        let started = backend::spawn(move || {
            let _ = tx.send(client.delete(&url, &handles));
        });
        if let Err(e) = started {
            with_deletes(|d| {
                d.outstanding -= 1;
                d.spawn_error.get_or_insert(e);
            });
        }
    });
    Ok(())
}

/// The background deletes finished since the last call (all of them when `wait`): how many
/// were deleted and the failed entries; or the first request-level error.
pub fn delete_collect(wait: bool) -> Result<BatchOutcome> {
    absorb(if wait { 0 } else { usize::MAX })?;
    with_deletes(|d| {
        let failure: Option<Error> = match (d.spawn_error.take(), d.error.take()) {
            (Some(e), _) => Some(e.into()),
            (None, Some(e)) => Some(e.into()),
            (None, None) => None,
        };
        match failure {
            Some(e) => {
                d.done = BatchOutcome::default();
                Err(e)
            }
            None => Ok(std::mem::take(&mut d.done)),
        }
    })
}
