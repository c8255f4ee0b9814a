//! The process's I/O threads, kept between requests. A job runs on an idle thread when there is
//! one and on a new thread otherwise (so a job that waits for other jobs never waits for a
//! thread); a thread with nothing to do for [`IDLE_EXIT`] ends.
//!
//! Before the pool, every receive and every delete started its threads and let them end: about
//! ten thread starts per batch of 500 messages, each with a fresh stack and fresh allocator
//! caches (see docs/performance.md for what that cost).
//!
//! Threads are started with every signal blocked: in a PostgreSQL backend, its signal handlers
//! must run on the backend's own thread. Jobs must not call into PostgreSQL. Each asks the
//! scheduler for a short time slice ([`SLICE_NS`]), so that a reply is taken in at once even
//! while the backend keeps its core busy.

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
            .spawn(move || {
                short_slice();
                f()
            });
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r.map(|_| ())
    }
}

/// `struct sched_attr` of `sched_setattr(2)`, its first version (48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// `SCHED_FLAG_KEEP_POLICY` of `sched_setattr(2)` (Linux 5.3): the policy stays what it is.
const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;

/// The time slice an I/O thread asks for: the shortest Linux allows (0.1 ms).
pub const SLICE_NS: u64 = 100_000;

/// Ask the scheduler for a short time slice on this thread. Under EEVDF (Linux 6.12 and
/// later) a thread that wakes with a shorter slice than the running one preempts it. An I/O
/// thread wakes when a reply arrives and runs for tens of microseconds (decode the reply, send
/// the next request); with the default slice (1.4 ms on a 2-core machine, more with more CPUs)
/// it could wait in the run queue behind its own busy backend for milliseconds while the SQS
/// endpoint, with no request left, idled: on 2 cores with an emulator beside the database, 7 %
/// of a drain (docs/performance.md, *Who waits for whom*). The policy and nice value stay the
/// thread's own; an older kernel ignores the slice, and a failure leaves the thread as it was.
fn short_slice() {
    // SAFETY: getpriority(2) on this thread (PRIO_PROCESS 0 is the calling thread on Linux);
    // a nice value of -1 reads as -1, which is what is passed back.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: 0,
        flags: SCHED_FLAG_KEEP_POLICY,
        nice,
        priority: 0,
        runtime: SLICE_NS,
        deadline: 0,
        period: 0,
    };
    // SAFETY: a valid sched_attr for this thread (pid 0), read by the kernel only.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
