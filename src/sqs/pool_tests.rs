use super::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Run `f` on a pool thread and wait for what it returns.
fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    execute(move || {
        let _ = tx.send(f());
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the job ran")
}

#[test]
fn a_finished_thread_takes_the_next_job() {
    // One job at a time: the thread that ran one is idle when the next comes (other tests may
    // take it meanwhile, so not every job lands on it, but most do).
    let ids: Vec<_> = (0..20)
        .map(|_| on_pool(|| std::thread::current().id()))
        .collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert!(
        distinct.len() < 10,
        "20 jobs one after another ran on {} threads",
        distinct.len()
    );
}

#[test]
fn pool_threads_have_every_signal_blocked_and_the_callers_mask_is_kept() {
    let blocked = |sig| {
        // SAFETY: reading this thread's signal mask into a zeroed set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            libc::sigismember(&set, sig) == 1
        }
    };
    let caller_before = blocked(libc::SIGINT);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGALRM] {
        assert!(on_pool(move || blocked(sig)), "signal {sig} not blocked");
    }
    assert_eq!(blocked(libc::SIGINT), caller_before);
}

#[test]
fn fan_out_runs_all_parts_at_once_and_waits_for_them() {
    // Every part waits until all 6 are running: it returns only if they ran concurrently.
    let running = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, d) = (running.clone(), done.clone());
    fan_out(
        6,
        Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.load(Ordering::SeqCst) < 6 {
                assert!(Instant::now() < deadline, "the parts did not run at once");
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(20));
            d.fetch_add(1, Ordering::SeqCst);
        }),
    );
    assert_eq!(done.load(Ordering::SeqCst), 6, "fan_out returned early");
}

#[test]
fn fan_out_inside_a_pool_job_never_waits_for_a_thread() {
    // Jobs that fan out from pool threads: each needs threads of its own while it holds one.
    let total = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for _ in 0..4 {
        let (t, tx) = (total.clone(), tx.clone());
        execute(move || {
            let t2 = t.clone();
            fan_out(
                4,
                Arc::new(move || {
                    t2.fetch_add(1, Ordering::SeqCst);
                }),
            );
            let _ = tx.send(());
        })
        .unwrap();
    }
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("nested fan-out finished");
    }
    assert_eq!(total.load(Ordering::SeqCst), 16);
}

#[test]
fn a_panicking_job_leaves_its_thread_serving() {
    let (tx, rx) = mpsc::channel();
    execute(move || {
        // SAFETY: gettid has no preconditions.
        let _ = tx.send(unsafe { libc::gettid() });
        panic!("job panics (expected in this test)");
    })
    .unwrap();
    let tid = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // A thread that ended would leave /proc/self/task at once; a serving one waits for
    // IDLE_EXIT (10 s).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::path::Path::new(&format!("/proc/self/task/{tid}")).exists(),
        "the thread ended with its job's panic"
    );
    assert!(threads() >= 1);
}

#[test]
fn a_panic_in_the_callers_part_of_fan_out_comes_back_after_the_others_finished() {
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let caller = std::thread::current().id();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fan_out(
            3,
            Arc::new(move || {
                if std::thread::current().id() == caller {
                    panic!("caller's part panics (expected in this test)");
                }
                std::thread::sleep(Duration::from_millis(50));
                f.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }));
    assert!(r.is_err(), "the panic was swallowed");
    assert_eq!(finished.load(Ordering::SeqCst), 2);
}

/// `se.slice` of this thread in `/proc/thread-self/sched`, where the kernel shows it (EEVDF).
fn slice_of_this_thread() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/sched")
        .ok()?
        .lines()
        .find(|l| l.starts_with("se.slice"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Whether the running kernel is Linux `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

#[test]
fn pool_threads_ask_for_a_short_time_slice_and_keep_their_nice_value() {
    // SAFETY: getpriority(2) on the calling thread.
    let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let (slice, pool_nice, policy) = on_pool(move || {
        // SAFETY: sched_getscheduler(2) on the calling thread.
        (slice_of_this_thread(), nice(), unsafe {
            libc::sched_getscheduler(0)
        })
    });
    assert_eq!(
        pool_nice,
        nice(),
        "the pool thread keeps the nice value it inherited"
    );
    assert_eq!(policy, libc::SCHED_OTHER, "the policy stays the default");
    // Custom slices came with Linux 6.12; before it the request is ignored.
    if kernel_at_least(6, 12) {
        assert_eq!(slice, Some(SLICE_NS), "the I/O thread's slice");
        assert_ne!(
            slice_of_this_thread(),
            Some(SLICE_NS),
            "the test's own thread is unchanged"
        );
    }
}
