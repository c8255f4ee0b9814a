//! Unit tests of the executor against an in-process fake SQS (AWS JSON 1.0 over HTTP/1.1 on
//! 127.0.0.1): windowing, draining, ordering and error aggregation, without Postgres.

use super::*;
use crate::sqs::fake::{fake_with, lock};

const Q: &str = "http://127.0.0.1/000000000000/q";

#[test]
fn receive_takes_exactly_n_and_keeps_the_window() {
    let (fake, c) = fake_with(100);
    let got = c
        .receive(Q, ReceiveArgs::new(25, None, 0).unwrap())
        .unwrap();
    assert_eq!(got.len(), 25);
    assert_eq!(lock(&fake.queue).len(), 75);
    // 25 = 10 + 10 + 5: three requests, never more than max_parallel at once.
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    let got = c
        .receive(Q, ReceiveArgs::new(75, None, 0).unwrap())
        .unwrap();
    assert_eq!(got.len(), 75);
    assert!(fake.max_in_flight.load(Ordering::SeqCst) <= 4);
    assert!(
        fake.max_in_flight.load(Ordering::SeqCst) >= 2,
        "requests overlap"
    );
}

#[test]
fn receive_stops_when_the_queue_is_drained() {
    let (fake, c) = fake_with(12);
    let got = c
        .receive(Q, ReceiveArgs::new(500, None, 0).unwrap())
        .unwrap();
    assert_eq!(got.len(), 12);
    // Once an empty reply is seen no new request starts: at most the window in flight after it.
    assert!(
        fake.requests.load(Ordering::SeqCst) <= 2 + 4,
        "{:?}",
        fake.requests
    );
    assert!(c
        .receive(Q, ReceiveArgs::new(0, None, 0).unwrap())
        .unwrap()
        .is_empty());
}

#[test]
fn a_long_poll_waits_alone_then_short_polls_fill_the_batch() {
    // An idle queue: one long poll, nothing else.
    let (fake, c) = fake_with(0);
    let got = c
        .receive(Q, ReceiveArgs::new(500, None, 5).unwrap())
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(*lock(&fake.receive_waits), vec![5]);
    // Messages waiting: the long poll brings the first ones, short polls the rest at once.
    let (fake, c) = fake_with(25);
    let got = c
        .receive(Q, ReceiveArgs::new(500, None, 5).unwrap())
        .unwrap();
    assert_eq!(got.len(), 25);
    let waits = lock(&fake.receive_waits).clone();
    assert_eq!(waits[0], 5, "{waits:?}");
    assert!(waits[1..].iter().all(|w| *w == 0), "{waits:?}");
    // A batch the long poll fills alone takes one request.
    let (fake, c) = fake_with(25);
    let got = c
        .receive(Q, ReceiveArgs::new(10, None, 5).unwrap())
        .unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(*lock(&fake.receive_waits), vec![5]);
}

#[test]
fn batches_send_everything_once_and_name_failed_entries() {
    let (fake, c) = fake_with(0);
    let bodies: Vec<String> = (0..35).map(|i| format!("b{i}")).collect();
    assert_eq!(c.send(Q, &bodies, None).unwrap().succeeded, 35);
    // Parallel requests arrive in any order; each body arrives once.
    let mut arrived = lock(&fake.queue).clone();
    arrived.sort_by_key(|b| b[1..].parse::<usize>().unwrap());
    assert_eq!(arrived, bodies);
    let mut handles: Vec<String> = (0..23).map(|i| format!("rh-{i}")).collect();
    handles[17] = "rh-bad".into();
    let out = c.delete(Q, &handles).unwrap();
    assert_eq!(out.succeeded, 22);
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].0.code, "ReceiptHandleIsInvalid");
    assert_eq!(
        out.failed[0].1, "rh-bad",
        "the failed entry is named by its handle"
    );
    assert!(c.delete(Q, &[]).unwrap().failed.is_empty());
    assert_eq!(
        c.change_visibility(Q, &handles[..3], 0).unwrap().succeeded,
        3
    );
}

#[test]
fn a_failing_request_is_an_error_with_the_aws_code() {
    let (fake, c) = fake_with(0);
    *lock(&fake.fail_action) = Some(("DeleteMessageBatch".into(), "QueueDoesNotExist".into()));
    let handles: Vec<String> = (0..5).map(|i| format!("rh-{i}")).collect();
    match c.delete(Q, &handles) {
        Err(SqsError::Aws { code, status, .. }) => {
            assert_eq!((code.as_str(), status), ("QueueDoesNotExist", 400))
        }
        other => panic!("{other:?}"),
    }
    *lock(&fake.fail_action) = Some(("ReceiveMessage".into(), "AccessDenied".into()));
    assert!(matches!(
        c.receive(Q, ReceiveArgs::new(30, None, 0).unwrap()),
        Err(SqsError::Aws { .. })
    ));
}

#[test]
fn queue_attributes_and_creation() {
    let (_fake, c) = fake_with(7);
    assert_eq!(c.attributes(Q).unwrap()["ApproximateNumberOfMessages"], "7");
    assert!(c
        .create_queue("login-queue", BTreeMap::new())
        .unwrap()
        .ends_with("/login-queue"));
    assert!(matches!(
        c.create_queue("bad name", BTreeMap::new()),
        Err(SqsError::InvalidArgument(_))
    ));
}

#[test]
fn receive_arguments_are_checked() {
    assert!(ReceiveArgs::new(10_000, Some(43_200), 20).is_ok());
    for (n, vt, w) in [
        (-1, None, 0),
        (10_001, None, 0),
        (1, Some(-1), 0),
        (1, Some(43_201), 0),
        (1, None, 21),
    ] {
        assert!(
            matches!(
                ReceiveArgs::new(n, vt, w),
                Err(SqsError::InvalidArgument(_))
            ),
            "{n} {vt:?} {w}"
        );
    }
}

#[test]
fn chunking() {
    assert!(chunk_by_count(0).is_empty());
    assert_eq!(chunk_by_count(25), vec![0..10, 10..20, 20..25]);
    assert_eq!(chunk_by_size(&[1; 12]), vec![0..10, 10..12]);
    assert_eq!(chunk_by_size(&[200_000, 200_000, 10]), vec![0..1, 1..3]);
    assert_eq!(chunk_by_size(&[300_000, 1]), vec![0..1, 1..2]);
    assert!(chunk_by_size(&[]).is_empty());
}

#[test]
fn queue_names() {
    assert!(valid_queue_name("login-queue"));
    assert!(valid_queue_name("a_b.fifo"));
    assert!(!valid_queue_name(""));
    assert!(!valid_queue_name(".fifo"));
    assert!(!valid_queue_name("a b"));
    assert!(!valid_queue_name("x'; DROP TABLE t; --"));
    assert!(!valid_queue_name(&"a".repeat(81)));
}
