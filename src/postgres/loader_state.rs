//! What one backend keeps between the SQL calls of a load run: the batch it receives ahead of
//! time (prefetch), the batch it is loading, the deletes it runs in the background after each
//! COMMIT, and the visibility heartbeat that keeps received messages invisible until then.
//!
//! Prefetched messages are received (invisible to others) but not processed: if the backend
//! dies they come back after their visibility timeout; at the end of a run the unused ones are
//! made visible again at once. Deleted-in-the-background messages were committed: if the
//! backend dies first they come back and are recognised as already loaded.

use super::backend::{self, ThreadError};
use super::error::{Error, Result};
use super::{guc, sqs_client};
use crate::sqs::executor::{BatchOutcome, Client, ReceiveArgs};
use crate::sqs::heartbeat::{GroupId, Heartbeat};
use crate::sqs::{pace, Message, SqsError};
use pgrx::PgXactCallbackEvent;
use std::cell::{Cell, RefCell};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Messages received and their heartbeat group, and when the receive finished.
type Received = (
    std::result::Result<(Vec<Message>, Option<GroupId>), SqsError>,
    Instant,
);

/// A receive started in the background for the next batch of the same request.
struct Prefetch {
    queue_url: String,
    args: ReceiveArgs,
    client: Client,
    rx: mpsc::Receiver<Received>,
    /// When it started, and with how many requests in flight at most.
    started: Instant,
    window: usize,
}

type DeleteResult = std::result::Result<BatchOutcome, SqsError>;

/// Background delete jobs one backend may have in flight before `delete_after_commit` waits.
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

/// The batch being loaded: its queue, client and heartbeat group (deleted after its COMMIT, or
/// given back when it fails).
struct Current {
    queue_url: String,
    client: Client,
    handles: Vec<String>,
    group: Option<GroupId>,
}

thread_local! {
    static PREFETCH: RefCell<Option<Prefetch>> = const { RefCell::new(None) };
    static DELETES: RefCell<Option<Deletes>> = const { RefCell::new(None) };
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
    static HEARTBEAT: RefCell<Option<Arc<Heartbeat>>> = const { RefCell::new(None) };
    /// Requests in flight for the loader's receives and deletes ([`pace`]); None: the setting.
    static WINDOW: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The client with the loader's window as its parallelism: [`pace::next_window`] once a
/// prefetched batch was asked for, at most the client's (`sqs_loader.max_parallel_requests`);
/// the client's with `sqs_loader.adapt_requests = off`.
fn paced(client: &Client) -> Client {
    let mut c = client.clone();
    if guc::adapt_requests() {
        c.max_parallel = WINDOW
            .get()
            .map_or(client.max_parallel, |w| w.min(client.max_parallel));
    }
    c
}

fn with_deletes<T>(f: impl FnOnce(&mut Deletes) -> T) -> T {
    DELETES.with(|d| f(d.borrow_mut().get_or_insert_with(Deletes::default)))
}

/// This backend's heartbeat, its thread started on first use.
fn heartbeat() -> Result<Arc<Heartbeat>> {
    if let Some(hb) = HEARTBEAT.with(|h| h.borrow().clone()) {
        return Ok(hb);
    }
    let hb = Arc::new(Heartbeat::default());
    let runner = hb.clone();
    backend::spawn(move || runner.run())?;
    HEARTBEAT.with(|h| *h.borrow_mut() = Some(hb.clone()));
    Ok(hb)
}

/// Run `job` with a client on an I/O thread and wait for it.
pub fn off_thread<T: Send + 'static>(
    client: Client,
    job: impl FnOnce(&Client) -> std::result::Result<T, SqsError> + Send + 'static,
) -> Result<T> {
    Ok(backend::run(move || job(&client))??)
}

/// Receive up to `args.n` messages now (`sqs_pull()`; no heartbeat: the caller manages them).
pub fn pull(queue_url: &str, args: ReceiveArgs) -> Result<Vec<Message>> {
    let client = sqs_client::for_queue(queue_url)?;
    let url = queue_url.to_string();
    off_thread(client, move |c| c.receive(&url, args))
}

/// Start receiving on an I/O thread; the messages are tracked by the heartbeat as soon as they
/// arrive.
fn receive_in_background(
    client: &Client,
    queue_url: &str,
    args: ReceiveArgs,
) -> Result<mpsc::Receiver<Received>> {
    let hb = heartbeat()?;
    let (tx, rx) = mpsc::channel();
    let (c, url) = (client.clone(), queue_url.to_string());
    let visibility = args
        .visibility_timeout
        .map(|v| Duration::from_secs(v as u64));
    backend::spawn(move || {
        let r = c.receive(&url, args).map(|msgs| {
            let handles = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
            let group = hb.track(&c, &url, handles, visibility);
            (msgs, group)
        });
        let _ = tx.send((r, Instant::now()));
    })?;
    Ok(rx)
}

/// Give messages back at once (ChangeMessageVisibility 0) and stop extending them, in the
/// background: how many were given back is not waited for.
fn give_back(client: Client, queue_url: String, handles: Vec<String>, group: Option<GroupId>) {
    let hb = HEARTBEAT.with(|h| h.borrow().clone());
    if let (Some(hb), Some(g)) = (&hb, group) {
        hb.forget(g);
    }
    if handles.is_empty() {
        return;
    }
    let _ = backend::spawn(move || {
        let _ = client.change_visibility(&queue_url, &handles, 0);
    });
}

/// Release what a pending prefetch received: how many messages were made visible again. A
/// worker asked to stop does not wait for a long poll: its messages come back by themselves.
pub fn release_prefetched() -> Result<usize> {
    let Some(p) = PREFETCH.with(|p| p.borrow_mut().take()) else {
        return Ok(0);
    };
    // Not given up when a worker is stopping: the receive ends within its long-poll wait, and
    // what it got is given back now rather than hidden until its visibility timeout (an
    // abandoned long poll can still be handed messages: LocalStack does it).
    let (msgs, group) = backend::wait(&p.rx)?.0?;
    if let (Some(hb), Some(g)) = (HEARTBEAT.with(|h| h.borrow().clone()), group) {
        hb.forget(g);
    }
    if msgs.is_empty() {
        return Ok(0);
    }
    let handles: Vec<String> = msgs.into_iter().map(|m| m.receipt_handle).collect();
    let url = p.queue_url;
    off_thread(p.client, move |c| c.change_visibility(&url, &handles, 0)).map(|o| o.succeeded)
}

/// The loader's receive: the batch prefetched for this same request if there is one, else a
/// receive now; then, if `prefetch` and a full batch came back, start receiving the next one.
/// The batch becomes the current one: [`delete_after_commit`] deletes it, [`batch_abandoned`]
/// gives it back; until then the heartbeat keeps it invisible.
pub fn pull_for_loader(queue_url: &str, args: ReceiveArgs, prefetch: bool) -> Result<Vec<Message>> {
    // A batch neither deleted nor given back (its transaction ended some other way) is no
    // longer kept invisible: its messages come back after their visibility timeout.
    forget_current();
    let asked = Instant::now();
    let pending = PREFETCH.with(|p| {
        p.borrow_mut()
            .take_if(|p| p.queue_url == queue_url && p.args == args)
    });
    let client = match &pending {
        Some(p) => p.client.clone(),
        None => {
            release_prefetched()?;
            sqs_client::for_queue(queue_url)?
        }
    };
    let (rx, started, used) = match pending {
        Some(p) => (p.rx, Some(p.started), p.window),
        None => {
            let paced = paced(&client);
            let rx = receive_in_background(&paced, queue_url, args)?;
            (rx, None, paced.max_parallel)
        }
    };
    // A worker asked to stop gives up waiting for a long poll: nothing received, the run ends.
    // The poll is kept as if prefetched, so that run_end() gives back whatever it receives.
    let Some((received, done)) = backend::wait_unless_stopping(&rx)? else {
        PREFETCH.with(|p| {
            *p.borrow_mut() = Some(Prefetch {
                queue_url: queue_url.to_string(),
                args,
                client,
                rx,
                started: started.unwrap_or(asked),
                window: used,
            })
        });
        return Ok(vec![]);
    };
    let (msgs, group) = received?;
    // A full batch received while the previous one loaded: how long each took sets the window
    // of the requests to come (a partial batch means the queue ran dry: no evidence).
    if let Some(started) = started.filter(|_| msgs.len() == args.n) {
        WINDOW.set(Some(pace::next_window(
            used,
            client.max_parallel,
            done.saturating_duration_since(started),
            asked.saturating_duration_since(started),
        )));
    }
    if !msgs.is_empty() {
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                queue_url: queue_url.to_string(),
                client: client.clone(),
                handles: msgs.iter().map(|m| m.receipt_handle.clone()).collect(),
                group,
            })
        });
        // If the whole transaction aborts, the batch is not kept invisible any longer.
        pgrx::register_xact_callback(PgXactCallbackEvent::Abort, forget_current);
    }
    if prefetch && args.n > 0 && msgs.len() == args.n {
        let paced = paced(&client);
        let rx = receive_in_background(&paced, queue_url, args)?;
        PREFETCH.with(|p| {
            *p.borrow_mut() = Some(Prefetch {
                queue_url: queue_url.to_string(),
                args,
                client,
                rx,
                started: Instant::now(),
                window: paced.max_parallel,
            })
        });
    }
    Ok(msgs)
}

fn forget_current() {
    let current = CURRENT.with(|c| c.borrow_mut().take());
    if let (Some(cur), Some(hb)) = (current, HEARTBEAT.with(|h| h.borrow().clone())) {
        if let Some(g) = cur.group {
            hb.forget(g);
        }
    }
}

/// The current batch failed (nothing of it committed): give its messages back at once.
pub fn batch_abandoned() {
    if let Some(cur) = CURRENT.with(|c| c.borrow_mut().take()) {
        give_back(cur.client, cur.queue_url, cur.handles, cur.group);
    }
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
/// it aborts. Waits first if too many deletes are already in flight. The heartbeat keeps the
/// messages invisible until the delete is done.
pub fn delete_after_commit(queue_url: &str, handles: Vec<String>) -> Result<()> {
    // A subtransaction that rolls back would leave the callback armed for rows that are gone.
    // SAFETY: a plain read of the transaction nesting level.
    if unsafe { pgrx::pg_sys::GetCurrentTransactionNestLevel() } > 1 {
        return Err(Error::InvalidArgument(
            "sqs_loader.delete_after_commit() must be called outside any exception block or savepoint".into(),
        ));
    }
    let client = paced(&sqs_client::for_queue(queue_url)?);
    let group = CURRENT
        .with(|c| c.borrow_mut().take())
        .and_then(|cur| cur.group);
    if handles.is_empty() {
        return Ok(());
    }
    absorb(MAX_PENDING_DELETES - 1)?;
    let url = queue_url.to_string();
    let hb = HEARTBEAT.with(|h| h.borrow().clone());
    // If the transaction aborts instead, nothing is deleted and the messages are no longer kept
    // invisible: they come back after their visibility timeout.
    if let (Some(hb), Some(g)) = (hb.clone(), group) {
        pgrx::register_xact_callback(PgXactCallbackEvent::Abort, move || hb.forget(g));
    }
    pgrx::register_xact_callback(PgXactCallbackEvent::Commit, move || {
        // Post-commit: no Postgres calls, no errors. A thread that cannot start leaves the
        // messages in the queue (they come back and are skipped); the next collect reports it.
        let tx = with_deletes(|d| {
            d.outstanding += 1;
            d.tx.clone()
        });
        let started = backend::spawn(move || {
            let r = client.delete(&url, &handles);
            if let (Some(hb), Some(g)) = (hb, group) {
                hb.forget(g);
            }
            let _ = tx.send(r);
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
