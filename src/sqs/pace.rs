//! How many requests the loader keeps in flight: no more than it needs. The loader receives the
//! next batch while it loads the current one; that receive only has to be done by the time the
//! load is. With `sqs_loader.max_parallel_requests` requests in flight an endpoint close by (an
//! emulator on the same machine) answers a batch long before it is needed, and the surplus
//! requests only cost CPU that the database and the endpoint share: on 2 cores, 16 in flight
//! loaded slower than 4. So the window shrinks while the receive finishes well ahead of the load
//! and grows back as soon as it does not; over a real network, where a receive of a batch takes
//! longer than its load, it stays at the setting.

use std::time::Duration;

/// The receive finished before this share of the load's time: fewer requests would do.
const SHRINK_BELOW: f64 = 0.4;
/// The receive took more than this share of the load's time: more in flight.
const GROW_ABOVE: f64 = 0.7;

/// The window for the next batch's requests, from the window the last receive had (`window`),
/// how long that receive took (`receive`) and how long the backend loaded meanwhile (`load`:
/// from starting the receive to asking for its batch), at most `cap`, at least 1.
///
/// Shrinks by one request at a time (a receive finishing early is a steady state, not an
/// emergency); grows in proportion to how late the receive was, so that a loader the endpoint
/// kept waiting gets its requests back within a batch or two.
pub fn next_window(window: usize, cap: usize, receive: Duration, load: Duration) -> usize {
    let cap = cap.max(1);
    let window = window.clamp(1, cap);
    let load = load.as_secs_f64();
    if load <= 0.0 {
        return cap;
    }
    let share = receive.as_secs_f64() / load;
    let next = if share < SHRINK_BELOW {
        window - 1
    } else if share > GROW_ABOVE {
        // Enough for the receive to take the middle of the band, had the time per request
        // stayed the same.
        let wanted = (window as f64 * share / ((SHRINK_BELOW + GROW_ABOVE) / 2.0)).ceil();
        (wanted as usize).max(window + 1)
    } else {
        window
    };
    next.clamp(1, cap)
}

#[cfg(test)]
#[path = "pace_tests.rs"]
mod tests;
