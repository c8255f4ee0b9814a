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

type Job<T> = Box<dyn FnOnce() -> T + Send + 'static>;

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

/// Run all jobs in parallel on worker threads and return their results in order. While waiting,
/// the backend checks for interrupts: a cancel or timeout raises the usual ERROR here.
pub fn run_all<T: Send + 'static>(jobs: Vec<Job<T>>) -> Result<Vec<T>, String> {
    let n = jobs.len();
    let (tx, rx) = mpsc::channel::<(usize, std::thread::Result<T>)>();
    for (i, job) in jobs.into_iter().enumerate() {
        let tx = tx.clone();
        spawn_with_signals_blocked(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let _ = tx.send((i, r));
        })
        .map_err(|e| format!("could not start an I/O thread: {e}"))?;
    }
    drop(tx);
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut received = 0;
    while received < n {
        match rx.recv_timeout(POLL) {
            Ok((i, Ok(v))) => {
                out[i] = Some(v);
                received += 1;
            }
            Ok((_, Err(_))) => return Err("internal error: an I/O thread panicked".into()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err("internal error: an I/O thread vanished".into())
            }
        }
        pgrx::check_for_interrupts!();
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every slot was filled"))
        .collect())
}

/// Run one job off-thread (see [`run_all`]).
pub fn run_one<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    Ok(run_all(vec![Box::new(job) as Job<T>])?
        .pop()
        .expect("one result"))
}
