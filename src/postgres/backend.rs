//! Running blocking I/O off the backend's thread while the backend keeps answering cancel
//! requests, statement_timeout and terminate.
//!
//! The I/O threads ([`crate::sqs::pool`], kept between jobs) run plain Rust only (no Postgres
//! calls). They are started with every signal blocked, so Postgres' signal handlers always run
//! on the backend's own thread. When the
//! backend is interrupted it stops waiting; the threads finish on their own HTTP timeout and
//! their results are dropped.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How often a waiting backend checks for interrupts.
const POLL: Duration = Duration::from_millis(20);

/// An I/O thread could not be started or did not deliver its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThreadError {
    #[error("could not start an I/O thread: {0}")]
    Spawn(String),
    #[error("an I/O thread panicked: {0}")]
    Panicked(String),
    #[error("an I/O thread ended without a result")]
    Vanished,
}

/// Run `f` on an I/O thread of the process's pool (started with every signal blocked; `f` must
/// not call into Postgres).
pub fn spawn(f: impl FnOnce() + Send + 'static) -> Result<(), ThreadError> {
    crate::sqs::pool::execute(f).map_err(|e| ThreadError::Spawn(e.to_string()))
}

/// Wait for what an I/O thread sends, checking for interrupts every 20 ms: a cancel, a timeout
/// or a terminate raises the usual ERROR/FATAL here.
pub fn wait<T>(rx: &mpsc::Receiver<T>) -> Result<T, ThreadError> {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(ThreadError::Vanished),
        }
        pgrx::check_for_interrupts!();
    }
}

/// Like [`wait`], but gives up (None) once a loader worker was asked to stop: for long polls.
/// The caller keeps the receiver, to give back whatever the poll still receives.
pub fn wait_unless_stopping<T>(rx: &mpsc::Receiver<T>) -> Result<Option<T>, ThreadError> {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(v) => return Ok(Some(v)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(ThreadError::Vanished),
        }
        pgrx::check_for_interrupts!();
        if super::worker::stop_requested() {
            return Ok(None);
        }
    }
}

/// Run a job on an I/O thread and wait for its result (see [`wait`]).
pub fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, ThreadError> {
    let (tx, rx) = mpsc::channel::<std::thread::Result<T>>();
    spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)));
    })?;
    wait(&rx)?.map_err(|p| {
        ThreadError::Panicked(
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into()),
        )
    })
}
