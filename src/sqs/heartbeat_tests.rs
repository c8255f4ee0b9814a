use super::*;
use crate::sqs::fake::{fake_with, lock};

const Q: &str = "http://127.0.0.1/000000000000/q";

fn handles(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("rh-{i}")).collect()
}

#[test]
fn a_group_is_extended_once_half_its_timeout_is_spent_until_forgotten() {
    let (fake, c) = fake_with(0);
    let hb = Heartbeat::default();
    let id = hb
        .track(&c, Q, handles(25), Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    hb.tick(start + Duration::from_secs(4));
    assert_eq!(hb.counts().requests, 0, "not yet half spent");
    hb.tick(start + Duration::from_secs(5));
    // 25 handles: three ChangeMessageVisibilityBatch requests of <= 10.
    assert_eq!(
        hb.counts(),
        Counts {
            requests: 1,
            extended: 25,
            gone: 0
        }
    );
    assert_eq!(
        lock(&fake.actions)
            .iter()
            .filter(|a| *a == "ChangeMessageVisibilityBatch")
            .count(),
        3
    );
    hb.tick(start + Duration::from_secs(7));
    assert_eq!(
        hb.counts().requests,
        1,
        "the clock restarted at the extension"
    );
    hb.tick(start + Duration::from_secs(10));
    assert_eq!(hb.counts().extended, 50);
    hb.forget(id);
    hb.tick(start + Duration::from_secs(60));
    assert_eq!(hb.counts().extended, 50, "a forgotten group is left alone");
    assert!(hb.is_empty());
}

#[test]
fn handles_that_are_no_longer_valid_are_dropped_not_retried() {
    let (_fake, c) = fake_with(0);
    let hb = Heartbeat::default();
    let mut h = handles(3);
    h.push("rh-bad-expired".into());
    hb.track(&c, Q, h, Some(Duration::from_secs(4))).unwrap();
    let start = Instant::now();
    hb.tick(start + Duration::from_secs(2));
    assert_eq!(
        hb.counts(),
        Counts {
            requests: 1,
            extended: 3,
            gone: 1
        }
    );
    hb.tick(start + Duration::from_secs(4));
    assert_eq!(
        hb.counts(),
        Counts {
            requests: 2,
            extended: 6,
            gone: 1
        },
        "the bad one is not asked for again"
    );
    // A group whose every handle went away is dropped.
    let only_bad = hb.track(&c, Q, vec!["rh-bad".into()], Some(Duration::from_secs(4)));
    assert!(only_bad.is_some());
    hb.tick(start + Duration::from_secs(100));
    assert_eq!(hb.len(), 1, "only the first group is left");
}

#[test]
fn nothing_to_track_and_the_queues_own_timeout() {
    let (fake, c) = fake_with(0);
    let hb = Heartbeat::default();
    assert!(hb
        .track(&c, Q, vec![], Some(Duration::from_secs(30)))
        .is_none());
    assert!(
        hb.track(&c, Q, handles(1), Some(Duration::from_secs(1)))
            .is_none(),
        "too short to extend in time"
    );
    // The queue's own timeout (the fake says 30 s) is asked for once, then used.
    *lock(&fake.visibility) = Some(30);
    hb.track(&c, Q, handles(2), None).unwrap();
    let start = Instant::now();
    hb.tick(start);
    assert_eq!(lock(&fake.actions).as_slice(), ["GetQueueAttributes"]);
    hb.tick(start + Duration::from_secs(14));
    assert_eq!(hb.counts().requests, 0);
    hb.tick(start + Duration::from_secs(15));
    assert_eq!(hb.counts().extended, 2);
}
