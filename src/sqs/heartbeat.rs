//! Visibility heartbeats: keep received messages invisible while their batch takes long.
//!
//! A loader registers each group of messages it received (a batch, or the batch received ahead
//! of time) and forgets it once the messages are deleted or given back. A thread (see
//! [`Heartbeat::run`]) extends every group whose visibility timeout is half spent by another
//! timeout (ChangeMessageVisibilityBatch), for as long as the group is registered: a slow batch,
//! a slow COMMIT or a lock wait no longer lets another consumer receive the same messages. A
//! message whose receipt handle is no longer valid (it expired, or was received elsewhere) is
//! dropped from its group and never retried: it is then handled by the exactly-once
//! bookkeeping, like any redelivery. Plain Rust; the thread never calls into Postgres.

use super::executor::Client;
use super::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Extend when this fraction of the visibility timeout has passed since the last extension.
const EXTEND_AT: f64 = 0.5;
/// Below this, extending would race the timeout itself: such messages are not tracked.
const MIN_VISIBILITY: Duration = Duration::from_secs(2);
/// How often the thread looks at the groups.
pub const TICK: Duration = Duration::from_millis(250);

/// Error codes that mean a receipt handle can no longer be extended.
fn handle_gone(code: &str) -> bool {
    matches!(
        code,
        "ReceiptHandleIsInvalid"
            | "MessageNotInflight"
            | "AWS.SimpleQueueService.MessageNotInflight"
            | "InvalidParameterValue"
    )
}

struct Group {
    client: Client,
    queue_url: String,
    handles: Vec<String>,
    /// None: the queue's own timeout, to be asked for.
    visibility: Option<Duration>,
    extended_at: Instant,
}

/// What the heartbeat did, for tests and monitoring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// ChangeMessageVisibilityBatch requests made.
    pub requests: u64,
    /// Messages whose invisibility was extended.
    pub extended: u64,
    /// Messages dropped because their receipt handle was no longer valid.
    pub gone: u64,
}

/// The registry of groups in flight, shared by the loader and the heartbeat thread.
#[derive(Default)]
pub struct Heartbeat {
    groups: Mutex<HashMap<u64, Group>>,
    next_id: AtomicU64,
    counts: Mutex<Counts>,
    stopped: AtomicBool,
}

/// A group due for an extension, copied out of the registry.
struct Due {
    id: u64,
    client: Client,
    url: String,
    handles: Vec<String>,
    visibility: Option<Duration>,
}

/// A registered group; [`Heartbeat::forget`] it once its messages are deleted or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(u64);

impl Heartbeat {
    /// Start keeping `handles` invisible (received just now with `visibility`, or the queue's
    /// own timeout when None). Returns None when there is nothing to track.
    pub fn track(
        &self,
        client: &Client,
        queue_url: &str,
        handles: Vec<String>,
        visibility: Option<Duration>,
    ) -> Option<GroupId> {
        if handles.is_empty() || visibility.is_some_and(|v| v < MIN_VISIBILITY) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.groups).insert(
            id,
            Group {
                client: client.clone(),
                queue_url: queue_url.to_string(),
                handles,
                visibility,
                extended_at: Instant::now(),
            },
        );
        Some(GroupId(id))
    }

    /// Stop keeping a group invisible (deleted, given back, or abandoned).
    pub fn forget(&self, id: GroupId) {
        lock(&self.groups).remove(&id.0);
    }

    /// How many groups are tracked.
    pub fn len(&self) -> usize {
        lock(&self.groups).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    /// Extend, now, every group whose timeout is at least half spent. Network calls are made
    /// without holding the registry, so the loader never waits for them.
    pub fn tick(&self, now: Instant) {
        let due: Vec<Due> = lock(&self.groups)
            .iter()
            .filter(|(_, g)| match g.visibility {
                Some(v) => {
                    now.duration_since(g.extended_at).as_secs_f64() >= v.as_secs_f64() * EXTEND_AT
                }
                None => true,
            })
            .map(|(id, g)| Due {
                id: *id,
                client: g.client.clone(),
                url: g.queue_url.clone(),
                handles: g.handles.clone(),
                visibility: g.visibility,
            })
            .collect();
        for Due {
            id,
            client,
            url,
            handles,
            visibility,
        } in due
        {
            let visibility = match visibility {
                Some(v) => v,
                None => match queue_visibility(&client, &url) {
                    Some(v) => {
                        if let Some(g) = lock(&self.groups).get_mut(&id) {
                            g.visibility = Some(v);
                        }
                        continue; // judged at the next tick, against the real timeout
                    }
                    None => continue,
                },
            };
            let secs = visibility.as_secs().min(43_200) as i32;
            lock(&self.counts).requests += 1;
            let Ok(out) = client.change_visibility(&url, &handles, secs) else {
                continue; // a failed request is tried again at the next tick
            };
            let gone: Vec<String> = out
                .failed
                .iter()
                .filter(|(f, _)| handle_gone(&f.code))
                .map(|(_, h)| h.clone())
                .collect();
            {
                let mut c = lock(&self.counts);
                c.extended += out.succeeded as u64;
                c.gone += gone.len() as u64;
            }
            let mut groups = lock(&self.groups);
            if let Some(g) = groups.get_mut(&id) {
                g.extended_at = now;
                g.handles.retain(|h| !gone.contains(h));
                if g.handles.is_empty() {
                    groups.remove(&id);
                }
            }
        }
    }

    /// The thread's loop: tick until [`Heartbeat::stop`].
    pub fn run(&self) {
        while !self.stopped.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            self.tick(Instant::now());
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// The queue's own VisibilityTimeout attribute.
fn queue_visibility(client: &Client, url: &str) -> Option<Duration> {
    let attrs = client.attributes(url).ok()?;
    let secs: u64 = attrs.get("VisibilityTimeout")?.parse().ok()?;
    Some(Duration::from_secs(secs)).filter(|v| *v >= MIN_VISIBILITY)
}

#[cfg(test)]
#[path = "heartbeat_tests.rs"]
mod tests;
