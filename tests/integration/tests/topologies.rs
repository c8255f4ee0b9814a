//! How login events really arrive in AWS: through an SNS topic subscribed to the queue (with and
//! without raw message delivery) and from EventBridge rules, against LocalStack's SQS and SNS.

use serde_json::Value;
use sqs_loader_it::*;
use std::time::Duration;

/// Subscribe the queue to a new topic; returns the topic ARN.
fn topic_for(c: &mut postgres::Client, url: &str, raw: bool) -> String {
    let arn: String = c
        .query_one(
            "SELECT a->>'QueueArn' FROM sqs_queue_attributes($1) a",
            &[&url],
        )
        .unwrap()
        .get(0);
    let region = arn.split(':').nth(3).unwrap().to_string();
    let topic = xml_tag(
        &sns_call(
            &region,
            &[
                ("Action", "CreateTopic"),
                ("Name", &format!("it-logins-{}", random_suffix())),
            ],
        ),
        "TopicArn",
    );
    let raw = if raw { "true" } else { "false" };
    sns_call(
        &region,
        &[
            ("Action", "Subscribe"),
            ("TopicArn", &topic),
            ("Protocol", "sqs"),
            ("Endpoint", &arn),
            ("Attributes.entry.1.key", "RawMessageDelivery"),
            ("Attributes.entry.1.value", raw),
        ],
    );
    topic
}

fn publish(topic: &str, messages: &[String]) {
    let region = topic.split(':').nth(3).unwrap();
    for m in messages {
        sns_call(
            region,
            &[("Action", "Publish"), ("TopicArn", topic), ("Message", m)],
        );
    }
}

fn wait_for_depth(c: &mut postgres::Client, url: &str, n: i64) {
    wait_until(
        Duration::from_secs(30),
        "SNS to deliver to the queue",
        || queue_depth(c, url).0 >= n,
    );
}

/// The masked rows of a table, as (user_id, masked_ip, masked_device_id, app_version), sorted.
fn rows(c: &mut postgres::Client) -> Vec<(String, String, String, i32)> {
    c.query(
        "SELECT user_id, masked_ip, masked_device_id, app_version FROM user_logins ORDER BY 1, 2, 3, 4",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[test]
fn sns_deliveries_load_like_direct_sends_in_both_delivery_modes() {
    let _g = shared();
    let events: Vec<String> = sample_messages().into_iter().take(20).collect();
    let bad_inner =
        r#"{"user_id":"u-bad","ip":"300.1.1.1","device_id":"d","app_version":"1"}"#.to_string();

    // The reference: the same events sent straight to a queue.
    let db = TestDb::new("sns_direct");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-direct");
    send(&mut c, &url, &events);
    let direct = load(&mut c, &url);
    let expected = rows(&mut c);
    // The token key is the database's: the SNS databases get the same one, so tokens compare.
    let key: Vec<u8> = c
        .query_one("SELECT secret FROM sqs_loader.token_key", &[])
        .unwrap()
        .get(0);

    for raw in [false, true] {
        let db = TestDb::new(if raw { "sns_raw" } else { "sns_wrapped" });
        let mut c = db.client();
        c.execute("SELECT set_token_key($1)", &[&key]).unwrap();
        let url = create_queue(&mut c, "it-sns");
        let topic = topic_for(&mut c, &url, raw);
        let mut all = events.clone();
        all.push(bad_inner.clone());
        publish(&topic, &all);
        wait_for_depth(&mut c, &url, all.len() as i64);
        if !raw {
            // What arrived is an SNS notification, not the event.
            let body: String = c
                .query_one("SELECT body FROM sqs_pull($1, 1, 0)", &[&url])
                .unwrap()
                .get(0);
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["Type"], "Notification", "{body}");
            assert_eq!(v["TopicArn"], topic.as_str());
        }
        let r = load(&mut c, &url);
        assert_eq!(r.loaded, direct.loaded, "raw={raw}");
        assert_eq!(r.rejected, direct.rejected + 1, "raw={raw}");
        assert_eq!(
            rows(&mut c),
            expected,
            "raw={raw}: the same rows, the same tokens"
        );
        // The bad event is rejected with its own reason; in an envelope the detail says so.
        let (reason, detail): (String, String) = {
            let r = c
                .query_one("SELECT reason, detail FROM sqs_loader.rejected_messages WHERE body LIKE '%u-bad%'", &[])
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(reason, "invalid_ip");
        assert_eq!(
            detail.starts_with("in the SNS notification's Message: "),
            !raw,
            "{detail}"
        );
        assert_eq!(queue_depth(&mut c, &url), (0, 0));
    }
}

#[test]
fn eventbridge_events_are_unwrapped_and_their_time_is_the_event_date() {
    let _g = shared();
    let db = TestDb::new("eventbridge");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-eventbridge");
    let event = |user: &str, time: &str, ip: &str| {
        format!(
            r#"{{"version":"0","id":"{user}-id","detail-type":"UserLogin","source":"com.example.auth","account":"123456789012","time":"{time}","region":"eu-west-1","resources":[],"detail":{{"user_id":"{user}","app_version":"2.3.0","device_type":"ios","ip":"{ip}","locale":"PT","device_id":"d-{user}"}}}}"#
        )
    };
    // An event from before midnight that reached the queue later: its date is the event's.
    let bodies = vec![
        event("eb-1", "2026-01-31T23:59:59Z", "198.51.100.7"),
        event("eb-2", "2026-01-31T23:59:59Z", "198.51.100.7"),
        event("eb-3", "2099-01-01T00:00:00Z", "198.51.100.8"),
        event("eb-4", "2026-01-31T23:59:59Z", "not-an-ip"),
    ];
    send(&mut c, &url, &bodies);
    let r = load(&mut c, &url);
    assert_eq!((r.loaded, r.rejected), (3, 1));
    let dates: Vec<(String, String)> = c
        .query(
            "SELECT user_id, create_date::text FROM user_logins ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let today: String = c
        .query_one("SELECT ((now() AT TIME ZONE 'UTC')::date)::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        dates,
        vec![
            ("eb-1".to_string(), "2026-01-31".to_string()),
            ("eb-2".to_string(), "2026-01-31".to_string()),
            // A time later than SQS's own (a producer's clock ahead): SQS's date counts.
            ("eb-3".to_string(), today),
        ]
    );
    // Repeats stay visible through the envelope.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT masked_ip) FROM user_logins WHERE user_id IN ('eb-1','eb-2')"
        ),
        1
    );
    let detail: String = c
        .query_one(
            "SELECT detail FROM sqs_loader.rejected_messages WHERE reason = 'invalid_ip'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        detail.starts_with("in the EventBridge event's detail: "),
        "{detail}"
    );
}

/// A trigger that refuses one user's rows with an error that is not about data (0A000): a batch
/// holding that message fails as a whole, every time.
fn poison_trigger(c: &mut postgres::Client, user: &str) {
    c.batch_execute(&format!(
        "CREATE FUNCTION it_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.user_id = '{user}' THEN
             RAISE EXCEPTION 'this user is not supported here' USING ERRCODE = '0A000';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER it_refuse BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION it_refuse();"
    ))
    .unwrap();
}

/// CALL until `done` (a failed run is an error of the CALL: ignored here), at most `max` times.
fn call_until(
    c: &mut postgres::Client,
    url: &str,
    max: usize,
    mut done: impl FnMut(&mut postgres::Client) -> bool,
) -> usize {
    for i in 1..=max {
        let _ = c.query_one("CALL load_user_logins($1)", &[&url]);
        if done(c) {
            return i;
        }
    }
    panic!("not done after {max} runs");
}

#[test]
fn a_poison_message_is_rejected_after_poison_receive_count_and_the_others_load() {
    let _g = shared();
    let db = TestDb::new("poison");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-poison");
    poison_trigger(&mut c, "poison-user");
    let mut bodies = login_events(9, "ok", 1000);
    bodies.insert(
        4,
        r#"{"user_id":"poison-user","app_version":"1.0","ip":"192.0.2.1","device_id":"p"}"#
            .to_string(),
    );
    send(&mut c, &url, &bodies);
    c.batch_execute("SET sqs_loader.poison_receive_count = 3")
        .unwrap();
    let runs = call_until(&mut c, &url, 10, |c| {
        count(
            c,
            "SELECT count(*) FROM sqs_loader.rejected_messages WHERE reason = 'load_failed'",
        ) == 1
    });
    // Received 3 times (the detail says so, below): twice in a batch that failed, the third
    // time loaded one at a time; each receive is a run.
    assert!(runs >= 3, "rejected after {runs} runs");
    let detail: String = c
        .query_one(
            "SELECT detail FROM sqs_loader.rejected_messages WHERE reason = 'load_failed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        detail.starts_with("0A000: this user is not supported here (received 3 times)"),
        "{detail}"
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 9);
    assert_eq!(
        count(&mut c, "SELECT count(DISTINCT user_id) FROM user_logins"),
        9
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages"),
        10
    );
    wait_until(Duration::from_secs(10), "the queue to be empty", || {
        queue_depth(&mut c, &url) == (0, 0)
    });
    let failed = count(
        &mut c,
        "SELECT count(*) FROM sqs_loader.load_runs WHERE status = 'failed' AND sqlstate = '0A000'",
    );
    assert_eq!(failed, 2);
}

#[test]
fn a_failure_of_every_message_is_not_poison_and_nothing_is_rejected() {
    let _g = shared();
    let db = TestDb::new("poison_all");
    let mut c = db.client();
    let url = create_queue(&mut c, "it-poison-all");
    // Every row is refused: a broken table, not a poison message.
    c.batch_execute(
        "CREATE FUNCTION it_refuse_all() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'table under maintenance' USING ERRCODE = '0A000'; END $$;
         CREATE TRIGGER it_refuse_all BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION it_refuse_all();
         SET sqs_loader.poison_receive_count = 2",
    )
    .unwrap();
    send(&mut c, &url, &login_events(5, "all", 1000));
    for _ in 0..4 {
        let _ = c.query_one("CALL load_user_logins($1)", &[&url]);
    }
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.rejected_messages"),
        0
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.processed_messages"),
        0
    );
    // The messages wait in the queue, received by the runs (up to 4 times each) and split one at
    // a time once received twice: the next receive counts at least 3.
    let max_count: Option<i32> = c
        .query_one(
            "SELECT max(receive_count) FROM sqs_pull($1, 10, 1, 5)",
            &[&url],
        )
        .unwrap()
        .get(0);
    let max_count = max_count.expect("the messages are still in the queue");
    assert!((3..=5).contains(&max_count), "{max_count}");
    // Fixed: everything loads.
    c.batch_execute("DROP TRIGGER it_refuse_all ON user_logins")
        .unwrap();
    wait_until(Duration::from_secs(40), "all five loaded", || {
        let _ = c.query_one("CALL load_user_logins($1)", &[&url]);
        count(&mut c, "SELECT count(*) FROM user_logins") == 5
    });
}

/// A queue with a redrive policy to a new dead-letter queue; returns (queue, dlq).
fn queue_with_dlq(c: &mut postgres::Client, max_receive_count: u32) -> (String, String) {
    let dlq = create_queue(c, "it-dlq");
    let dlq_arn: String = c
        .query_one(
            "SELECT a->>'QueueArn' FROM sqs_queue_attributes($1) a",
            &[&dlq],
        )
        .unwrap()
        .get(0);
    let name = format!("it-redrive-{}", random_suffix());
    c.batch_execute(&format!("SET sqs_loader.endpoint = '{}'", env().localstack))
        .unwrap();
    let policy = serde_json::json!({"RedrivePolicy": serde_json::json!({
        "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()}).to_string()});
    let url: String = c
        .query_one(
            "SELECT sqs_create_queue($1, $2::text::jsonb)",
            &[&name, &policy.to_string()],
        )
        .unwrap()
        .get(0);
    c.batch_execute("RESET sqs_loader.endpoint").unwrap();
    (url, dlq)
}

#[test]
fn with_a_redrive_policy_a_poison_message_is_rejected_before_sqs_moves_its_batch() {
    let _g = shared();
    let db = TestDb::new("dlq_poison");
    let mut c = db.client();
    // poison_receive_count 3 < maxReceiveCount 5: the loader acts first.
    let (url, dlq) = queue_with_dlq(&mut c, 5);
    poison_trigger(&mut c, "dlq-user");
    c.batch_execute("SET sqs_loader.poison_receive_count = 3")
        .unwrap();
    let mut bodies = login_events(3, "dlqp", 1000);
    bodies.push(
        r#"{"user_id":"dlq-user","app_version":"1.0","ip":"192.0.2.9","device_id":"q"}"#
            .to_string(),
    );
    send(&mut c, &url, &bodies);
    call_until(&mut c, &url, 10, |c| {
        count(c, "SELECT count(*) FROM sqs_loader.processed_messages") == 4
    });
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 3);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM sqs_loader.rejected_messages WHERE reason = 'load_failed'"
        ),
        1
    );
    wait_until(Duration::from_secs(10), "the queue to be empty", || {
        queue_depth(&mut c, &url) == (0, 0)
    });
    assert_eq!(queue_depth(&mut c, &dlq), (0, 0), "nothing reached the DLQ");
}

#[test]
fn without_poison_handling_sqs_moves_the_whole_batch_and_a_redrive_loads_it_once() {
    let _g = shared();
    let db = TestDb::new("dlq");
    let mut c = db.client();
    let (url, dlq) = queue_with_dlq(&mut c, 2);
    poison_trigger(&mut c, "dlq-user");
    // The loader never splits (0): SQS's redrive policy is what moves the messages, and it
    // moves the poison message's batch-mates with it (they were received as often).
    c.batch_execute("SET sqs_loader.poison_receive_count = 0")
        .unwrap();
    let mut bodies = login_events(3, "dlq", 1000);
    bodies.push(
        r#"{"user_id":"dlq-user","app_version":"1.0","ip":"192.0.2.9","device_id":"q"}"#
            .to_string(),
    );
    send(&mut c, &url, &bodies);
    wait_until(
        Duration::from_secs(60),
        "the batch to reach the dead-letter queue",
        || {
            let _ = c.query_one("CALL load_user_logins($1)", &[&url]);
            queue_depth(&mut c, &dlq).0 == 4
        },
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM user_logins"), 0);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM sqs_loader.rejected_messages"),
        0
    );
    assert_eq!(queue_depth(&mut c, &url), (0, 0));
    // The operator fixes the cause and re-drives: the bodies back onto the queue (new message
    // ids: they were never loaded, so each loads once), then deletes them from the DLQ.
    c.batch_execute("DROP TRIGGER it_refuse ON user_logins")
        .unwrap();
    c.batch_execute(&format!(
        "CREATE TEMP TABLE redrive AS SELECT * FROM sqs_pull('{dlq}', 10, 30);
         SELECT sqs_send('{url}', ARRAY(SELECT body FROM redrive));
         SELECT sqs_delete('{dlq}', ARRAY(SELECT receipt_handle FROM redrive));"
    ))
    .unwrap();
    let r = load(&mut c, &url);
    assert_eq!((r.loaded, r.rejected), (4, 0));
    assert_eq!(
        count(&mut c, "SELECT count(DISTINCT user_id) FROM user_logins"),
        4
    );
    assert_eq!(queue_depth(&mut c, &dlq), (0, 0));
}

#[test]
fn a_fifo_queue_loads_each_group_in_order_exactly_once_through_a_kill() {
    let _g = shared();
    let db = TestDb::new("fifo");
    let mut c = db.client();
    let name = format!("it-fifo-{}.fifo", random_suffix());
    c.batch_execute(&format!("SET sqs_loader.endpoint = '{}'", env().localstack))
        .unwrap();
    let url: String = c
        .query_one(
            "SELECT sqs_create_queue($1, '{\"FifoQueue\": \"true\", \"ContentBasedDeduplication\": \"false\"}')",
            &[&name],
        )
        .unwrap()
        .get(0);
    c.batch_execute("RESET sqs_loader.endpoint").unwrap();
    assert!(url.ends_with(".fifo"), "{url}");
    // Without a group, a FIFO queue refuses: said before any request is made.
    let err = c
        .query_one("SELECT sqs_send($1, ARRAY['{}'])", &[&url])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023", "{err:?}");
    // The order rows are committed in: each insert records its transaction.
    c.batch_execute(
        "CREATE TABLE it_order(user_id text, xid xid8 DEFAULT pg_current_xact_id());
         CREATE FUNCTION it_log() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.it_order(user_id) VALUES (NEW.user_id); RETURN NEW; END $$;
         CREATE TRIGGER it_log AFTER INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION it_log();",
    )
    .unwrap();
    let (groups, per_group) = (3, 120);
    for g in 0..groups {
        let bodies: Vec<String> = (0..per_group)
            .map(|i| {
                format!(r#"{{"user_id":"g{g}-{i:04}","app_version":"1.{g}","ip":"10.9.{g}.{}","device_id":"d{i}"}}"#, i % 50)
            })
            .collect();
        let sent: i32 = c
            .query_one(
                "SELECT sqs_send($1, $2, $3)",
                &[&url, &bodies, &format!("g{g}")],
            )
            .unwrap()
            .get(0);
        assert_eq!(sent, per_group);
    }
    c.batch_execute(&format!(
        "ALTER DATABASE {0} SET sqs_loader.batch_size = 20; ALTER DATABASE {0} SET sqs_loader.visibility_timeout = 3",
        db.name
    ))
    .unwrap();
    // A run killed once it has committed a batch or two.
    let (pid, run) = spawn_load(&db.name, &url);
    let mut admin = connect(&db.name);
    wait_until(Duration::from_secs(30), "a committed batch", || {
        count(
            &mut admin,
            "SELECT count(*) FROM sqs_loader.processed_messages",
        ) > 0
    });
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let killed = run.join().unwrap();
    let total = (groups * per_group) as i64;
    wait_until(Duration::from_secs(90), "every message loaded", || {
        let _ = admin.query_one("CALL load_user_logins($1)", &[&url]);
        count(
            &mut admin,
            "SELECT count(*) FROM sqs_loader.processed_messages",
        ) == total
    });
    assert_eq!(count(&mut admin, "SELECT count(*) FROM user_logins"), total);
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(DISTINCT user_id) FROM user_logins"
        ),
        total
    );
    // Within each group, a later message never committed in an earlier transaction.
    let out_of_order = count(
        &mut admin,
        "SELECT count(*) FROM (
           SELECT xid::text::bigint < lag(xid::text::bigint) OVER (PARTITION BY split_part(user_id, '-', 1) ORDER BY user_id) AS back
             FROM it_order) o
          WHERE back",
    );
    assert_eq!(out_of_order, 0, "rows of a group committed out of order");
    // Several transactions: the order held across batches, not within one.
    assert!(count(&mut admin, "SELECT count(DISTINCT xid) FROM it_order") >= 6);
    wait_until(Duration::from_secs(10), "the queue to be empty", || {
        queue_depth(&mut admin, &url) == (0, 0)
    });
    eprintln!("fifo: the killed run ended with {killed:?}");
}
