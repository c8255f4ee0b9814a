//! The process's I/O threads, kept between requests. A job runs on an idle thread when there is
//! one and on a new thread otherwise (so a job that waits for other jobs never waits for a
//! thread); a thread with nothing to do for [`IDLE_EXIT`] ends.
//!
//! Before the pool, every receive and every delete started its threads and let them end: about
//! ten thread starts per batch of 500 messages, each with a fresh stack and fresh allocator
//! caches (see docs/performance.md for what that cost).
//!
//! Threads are started with every signal blocked: in a PostgreSQL backend, its signal handlers
//! must run on the backend's own thread. Jobs must not call into PostgreSQL.

use super::lock;
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a thread waits for a job before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Stack of each I/O thread (Rust's default for spawned threads).
const STACK: usize = 2 * 1024 * 1024;
/// The name the threads have (in `top -H`, `perf`, `/proc/<pid>/task/*/comm`).
pub const THREAD_NAME: &str = "sqs_loader-io";

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job; always at least `jobs.len()` (a job is only queued for a
    /// thread that is waiting).
    idle: usize,
    /// Threads alive (running a job or waiting).
    threads: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    jobs: VecDeque::new(),
    idle: 0,
    threads: 0,
});
static WORK: Condvar = Condvar::new();

/// Run `job` on an I/O thread: an idle one, or a new one (the error is why it could not start).
pub fn execute(job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let job: Job = Box::new(job);
    {
        let mut s = lock(&STATE);
        if s.idle > s.jobs.len() {
            s.jobs.push_back(job);
            drop(s);
            WORK.notify_one();
            return Ok(());
        }
        s.threads += 1;
    }
    let started = spawn_blocked(move || {
        // A panicking job unwinds only itself: the thread goes on serving.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        serve();
    });
    if started.is_err() {
        lock(&STATE).threads -= 1;
    }
    started
}

/// Threads alive now: running a job or waiting for one.
pub fn threads() -> usize {
    lock(&STATE).threads
}

/// Run `work` on `n` threads at once, this one and `n − 1` I/O threads, and return when every
/// one has returned. Fewer run when threads cannot be started (at least this one). A panic of
/// `work` on this thread is passed on once the others are done; one on an I/O thread ends that
/// thread's part only.
pub fn fan_out(n: usize, work: Arc<dyn Fn() + Send + Sync + 'static>) {
    let (done, finished) = mpsc::channel::<()>();
    for _ in 1..n {
        let (work, done) = (work.clone(), done.clone());
        if execute(move || {
            work();
            drop(done);
        })
        .is_err()
        {
            break;
        }
    }
    drop(done);
    let here = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work()));
    // Every sender is dropped when its job ended (returned or unwound).
    while finished.recv().is_ok() {}
    if let Err(p) = here {
        std::panic::resume_unwind(p);
    }
}

/// A pool thread's life after its first job: run queued jobs, wait up to [`IDLE_EXIT`] for
/// more, end.
fn serve() {
    let mut s = lock(&STATE);
    loop {
        if let Some(job) = s.jobs.pop_front() {
            drop(s);
            // A panicking job unwinds only itself: the thread goes on serving.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            s = lock(&STATE);
            continue;
        }
        s.idle += 1;
        let (guard, waited) = WORK
            .wait_timeout(s, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        s = guard;
        s.idle -= 1;
        if waited.timed_out() && s.jobs.is_empty() {
            s.threads -= 1;
            return;
        }
    }
}

/// Start a thread with every signal blocked (the calling thread's mask is restored).
fn spawn_blocked(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    // SAFETY: plain libc signal-mask calls on this thread; the old mask is restored right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .stack_size(STACK)
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r.map(|_| ())
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
