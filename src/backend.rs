//! Running blocking I/O off the backend's thread while the backend keeps answering
//! cancel requests, statement_timeout and terminate.
//!
//! The worker threads run plain Rust only (no Postgres calls). They are spawned with every
//! signal blocked, so Postgres' signal handlers always run on the backend's own thread.
//! When the backend is interrupted, it stops waiting; the threads finish on their own HTTP
//! timeout and their results are dropped.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);

/// Start a detached worker thread (signals blocked; it must not call into Postgres).
pub fn spawn_with_signals_blocked(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    // SAFETY: plain libc signal-mask calls on this thread; the old mask is restored right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = std::thread::Builder::new()
            .name("sqs_loader-io".into())
            .stack_size(1024 * 1024)
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r.map(|_| ())
    }
}

/// Run a job on a worker thread and return its result. While waiting, the backend checks for
/// interrupts: a cancel or timeout raises the usual ERROR here (the job finishes on its own).
pub fn run_one<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel::<std::thread::Result<T>>();
    spawn_with_signals_blocked(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)));
    })
    .map_err(|e| format!("could not start an I/O thread: {e}"))?;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(_)) => return Err("internal error: an I/O thread panicked".into()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err("internal error: an I/O thread vanished".into())
            }
        }
        pgrx::check_for_interrupts!();
    }
}
