//! How many runs of one queue load at a time (`sqs_loader.max_runs_per_queue`).
//!
//! A loading run holds one of the queue's slots: a session-level advisory lock of this
//! database, keyed by a hash of the queue URL and the slot's number. A run that finds every
//! slot taken waits, between its batches, for one to free; meanwhile it receives nothing, so
//! runs beyond the cap cost a sleeping backend, not CPU taken from the runs that load (on 2
//! cores, concurrent runs of one queue measured slower than one run: docs/performance.md).
//!
//! The lock is released when the run ends (`run_end()`), when a transaction of this backend
//! aborts while it holds it (a cancelled or failed CALL never gets to `run_end()`), and by
//! PostgreSQL when the backend exits. The slots show in `pg_locks` as advisory locks with
//! `objsubid` [`LOCK_SPACE`], `classid` the queue's hash and `objid` the slot; the space is
//! not one `pg_advisory_lock()` can take (it uses 1 and 2), so no application lock collides.

use super::guc;
use pgrx::pg_sys;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The `locktag_field4` (`objsubid` in `pg_locks`) of the slots' advisory locks.
pub const LOCK_SPACE: u16 = 0x5351;
/// How often a waiting run tries the slots again.
const POLL: Duration = Duration::from_millis(10);

thread_local! {
    /// The slot this backend holds: (the queue URL's hash, the slot's number).
    static HELD: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
    /// Whether this run has said it waits (once per wait).
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
    /// Whether the abort callback is registered in this backend.
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// FNV-1a of the queue URL: the same in every backend and every build.
fn queue_hash(queue_url: &str) -> u32 {
    queue_url.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn tag(hash: u32, slot: u32) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: a plain read of the backend's database.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: hash,
        locktag_field3: slot,
        locktag_field4: LOCK_SPACE,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// Take the slot if it is free (never waits); what `pg_try_advisory_lock()` does.
fn try_take(hash: u32, slot: u32) -> bool {
    let t = tag(hash, slot);
    // SAFETY: a session lock on a tag built above, without waiting.
    let r = unsafe { pg_sys::LockAcquire(&t, pg_sys::ExclusiveLock as i32, true, true) };
    r != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
}

/// Release the slot this backend holds, if any.
pub fn release() {
    ANNOUNCED.with(|a| a.set(false));
    if let Some((hash, slot)) = HELD.with(|h| h.take()) {
        let t = tag(hash, slot);
        // SAFETY: the session lock taken by try_take().
        unsafe { pg_sys::LockRelease(&t, pg_sys::ExclusiveLock as i32, true) };
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT {
        release();
    }
}

fn register_callback() {
    if !CALLBACK.with(|c| c.replace(true)) {
        // SAFETY: registered once per backend; the callback only releases our own lock.
        unsafe { pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut()) };
    }
}

/// Whether this run may load a batch of `queue_url` now: it holds one of the queue's slots or
/// takes a free one, waiting up to `wait` for one to free. False: every slot is still taken (the
/// caller comes back after its checks: a worker asked to stop, the run's deadline).
pub fn take(queue_url: &str, wait: Duration) -> bool {
    let Some(max) = guc::max_runs_per_queue() else {
        release();
        return true;
    };
    let hash = queue_hash(queue_url);
    match HELD.with(|h| h.get()) {
        Some((h, _)) if h == hash => return true,
        Some(_) => release(),
        None => {}
    }
    register_callback();
    let until = Instant::now() + wait;
    loop {
        if let Some(slot) = (0..max).find(|&s| try_take(hash, s)) {
            HELD.with(|h| h.set(Some((hash, slot))));
            ANNOUNCED.with(|a| a.set(false));
            return true;
        }
        if !ANNOUNCED.with(|a| a.replace(true)) {
            pgrx::notice!(
                "sqs_loader: {max} run(s) of this queue are loading (sqs_loader.max_runs_per_queue); this run waits for one to end"
            );
        }
        if Instant::now() >= until || super::worker::stop_requested() {
            return false;
        }
        // SAFETY: the usual latch wait of a backend; pg_stat_activity shows it as
        // wait_event_type = 'Extension'.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                POLL.as_millis() as std::ffi::c_long,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_queue_hash_is_fixed() {
        // FNV-1a's published test vectors: the hash may never change between builds, or two
        // versions loading one queue would not see each other's slots.
        assert_eq!(super::queue_hash(""), 0x811c_9dc5);
        assert_eq!(super::queue_hash("a"), 0xe40c_292c);
        assert_eq!(super::queue_hash("foobar"), 0xbf9c_f968);
    }
}
